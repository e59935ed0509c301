"""The pretraining objective of the generic loop (training/loop.py): MLM on the masked positions (+ NSP)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100  # masked_labels on padding slots


def summed_cross_entropy(
    logits: Tensor, labels: Tensor, label_smoothing: float = 0.0
) -> tuple[Tensor, Tensor]:
    """(cross-entropy summed in fp32, correct argmaxes) over the labels that are not IGNORE.
    logits [..., C], labels [...]: masked LM [b,P,V] / [b,P] or NSP [b,2] / [b]."""
    loss = F.cross_entropy(
        logits.flatten(0, -2).float(),
        labels.flatten(),
        ignore_index=IGNORE,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return loss, ((logits.argmax(-1) == labels) & (labels != IGNORE)).sum()


class PretrainingObjective:
    """MLM on the masked positions, plus NSP when the batch has nsp_labels (see training.loop.Objective).

    counts: {"mlm": masked tokens, "nsp": sentence pairs}; sums: summed cross-entropies (label smoothing
    applied); metrics: {"mlm_acc": correct masked tokens, "nsp_acc": correct pairs}.
    """

    def __init__(self, label_smoothing: float = 0.0, nsp: bool = True):
        # metric -> the loss term whose count it is averaged over (mlm_dropped: span masking's surplus)
        self.metric_terms = {"mlm_acc": "mlm", "mlm_dropped": "mlm"}
        if nsp:
            self.metric_terms["nsp_acc"] = "nsp"
        self.label_smoothing = label_smoothing
        self.nsp = nsp

    def untrained_parameters(self, model: nn.Module) -> list[str]:
        """MLM only on a model with an NSP head (e.g. MultiBERTs continued with --no_nsp): the NSP head and
        the pooler get no gradient, so the Trainer (training/loop.py) freezes them."""
        return [] if self.nsp else model.nsp_parameter_names()

    def counts(self, batch: dict) -> dict[str, Tensor]:
        counts = {"mlm": (batch["masked_labels"] != IGNORE).sum()}
        if self.nsp:
            labels = batch["nsp_labels"]  # a fill kernel, not torch.tensor(): no host-to-device copy, no sync
            counts["nsp"] = torch.full((), labels.numel(), dtype=torch.long, device=labels.device)
        return counts

    def __call__(self, model: nn.Module, batch: dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        out = model(
            input_ids=batch["input_ids"],  # [b,S]
            attention_mask=batch.get("attention_mask"),  # [b,S]
            token_type_ids=batch.get("token_type_ids"),  # [b,S]; ignored by backbones without token types
            masked_positions=batch["masked_positions"],  # [b,P]
            nsp=self.nsp,  # MLM only: the NSP head is not run (its parameters are frozen, see above)
        )
        labels = batch["masked_labels"]  # [b,P], IGNORE on padding slots
        mlm, mlm_correct = summed_cross_entropy(out.mlm_logits, labels, self.label_smoothing)  # [b,P,V]
        sums, metrics = {"mlm": mlm}, {"mlm_acc": mlm_correct}
        if "masked_dropped" in batch:  # span masking: logged as dropped / predicted masked tokens
            metrics["mlm_dropped"] = batch["masked_dropped"].sum()
        if self.nsp:
            sums["nsp"], metrics["nsp_acc"] = summed_cross_entropy(
                out.nsp_logits, batch["nsp_labels"], self.label_smoothing
            )  # [b,2], [b]
        return sums, metrics
