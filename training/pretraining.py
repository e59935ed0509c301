"""Pretraining-specific pieces for the generic loop: the MLM(+NSP) objective, the data and its phases."""

from dataclasses import dataclass

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

    def __init__(self, label_smoothing: float = 0.0, nsp: bool = True, token_types: bool = True):
        self.label_smoothing = label_smoothing
        self.nsp = nsp
        self.token_types = token_types  # ltg models have no token-type embedding

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
            token_type_ids=batch.get("token_type_ids") if self.token_types else None,
            masked_positions=batch["masked_positions"],  # [b,P]
            token_index=batch.get("token_index"),  # [T] real tokens (padded batches, --unpad) or None
        )
        labels = batch["masked_labels"]  # [b,P], IGNORE on padding slots
        mlm, mlm_correct = summed_cross_entropy(out.mlm_logits, labels, self.label_smoothing)  # [b,P,V]
        if not self.nsp and out.nsp_logits is not None:
            # an NSP head this run does not train: a zero term keeps its gradients defined (DDP buckets)
            mlm = mlm + 0.0 * out.nsp_logits.float().sum()
        sums, metrics = {"mlm": mlm}, {"mlm_acc": mlm_correct}
        if self.nsp:
            sums["nsp"], metrics["nsp_acc"] = summed_cross_entropy(
                out.nsp_logits, batch["nsp_labels"], self.label_smoothing
            )  # [b,2], [b]
        return sums, metrics


@dataclass(frozen=True)
class Phase:
    """A stretch of training with one sequence length and global batch (ELC-BERT's --long_after)."""

    start: int  # first step of the phase
    end: int  # steps done when it ends
    seq_length: int
    batch_size: int


def phases(max_steps: int, seq_length: int, batch_size: int, long_after: float) -> list[Phase]:
    """[short] or [short, long]: after long_after x max_steps, 4x the length and a quarter of the batch."""
    switch = int(max_steps * long_after)
    if long_after >= 1.0 or switch >= max_steps:
        return [Phase(0, max_steps, seq_length, batch_size)]
    return [
        Phase(0, switch, seq_length, batch_size),
        Phase(switch, max_steps, seq_length * 4, batch_size // 4),
    ]


def phase_at(all_phases: list[Phase], step: int) -> Phase:
    return next((p for p in all_phases if step < p.end), all_phases[-1])


def build_pretraining_data(args, seq_length: int, split: str):
    """The data.pretraining.PretrainingData that train_pretrain.py trains (split "train") or validates
    ("validation") on, from its parsed arguments; args.nsp must be resolved (True/False, not None)."""
    from data.masking import build_masking
    from data.pretraining import PretrainingData

    if args.nsp is None:
        raise ValueError("args.nsp is None: resolve it from the model config first (as train_pretrain does)")
    return PretrainingData(
        args.input_path,
        seq_length,
        args.nsp,
        build_masking(args.masking, mask_p=args.mask_p),
        args.static_masking,
        args.data_seed,
        short_p=args.short_p,
        max_predictions=args.max_predictions,
        split=split,
        vocab_path=args.vocab_path,
        layout=getattr(args, "instance_layout", None),
        dupe_factor=1 if split == "validation" else getattr(args, "dupe_factor", None),
    )
