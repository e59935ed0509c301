"""The fine-tuning tasks: GLUE sentence(-pair) classification / regression and SQuAD v1.1 extraction.

A task turns examples into features (token ids), defines the loss the shared training loop minimises
(an `Objective` of training/loop.py) and scores model outputs (metrics + per-example records).
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from finetune import metrics, squad
from finetune.glue import GLUE_TASKS, load_glue, task_file
from finetune.squad_features import decode_predictions, make_features
from utils.errors import UserError

TASK_NAMES = (*GLUE_TASKS, "squad")


def truncated_lengths(la: np.ndarray, lb: np.ndarray, budget: int):
    """Longest-first truncation of a pair to `budget` tokens (BERT's _truncate_seq_pair, closed form:
    the shorter side is kept whole if it fits in half, else both get half, the first the odd token)."""
    over = la + lb > budget
    short = np.minimum(la, lb)
    fits = short <= budget - short
    fa = np.where(fits, np.where(la <= lb, la, budget - lb), (budget + 1) // 2)
    fb = np.where(fits, np.where(la <= lb, budget - la, lb), budget // 2)
    return np.where(over, fa, la), np.where(over, fb, lb)


def model_inputs(batch: dict) -> dict:
    return {
        "input_ids": batch["input_ids"],  # [B,S]
        "attention_mask": batch["attention_mask"],  # [B,S]
        "token_type_ids": batch["token_type_ids"],  # [B,S]; backbones without token types ignore it
    }


class ClassificationTask:
    """A GLUE task: [CLS] a [SEP] (b [SEP]) -> one label (cross-entropy) or a score (STS-B, MSE)."""

    label_keys = ("label",)

    def __init__(self, name: str, tokenizer, special, max_seq_length: int, label_smoothing: float = 0.0):
        self.spec = GLUE_TASKS[name]
        self.name, self.metric_names = name, self.spec.metrics
        self.regression = self.spec.labels is None
        self.metric_terms = {} if self.regression else {"task_acc": "task"}  # see training.loop.Objective
        self.num_labels = self.spec.num_labels
        self.tokenizer, self.special, self.max_seq_length = tokenizer, special, max_seq_length
        self.label_smoothing = label_smoothing

    def group_of(self, example):  # split unit: identical texts stay together
        return example.texts

    def load(self, data_dir: Path | None, train_file=None, dev_file=None):
        return load_glue(self.spec, data_dir, train_file, dev_file)

    def featurize(self, examples) -> list[dict]:
        encode = lambda texts: self.tokenizer.encode_batch(list(texts), add_special_tokens=False)  # noqa: E731
        first = encode(ex.texts[0] for ex in examples)
        pair = len(self.spec.text_columns) == 2
        second = encode(ex.texts[1] for ex in examples) if pair else [None] * len(examples)
        la = np.array([len(e.ids) for e in first])
        lb = np.array([len(e.ids) for e in second]) if pair else np.zeros_like(la)
        la, lb = truncated_lengths(la, lb, self.max_seq_length - (3 if pair else 2))
        cls, sep, features = self.special.cls, self.special.sep, []
        for ex, a, b, na, nb in zip(examples, first, second, la, lb):
            ids = [cls, *a.ids[:na], sep] + ([*b.ids[:nb], sep] if pair else [])
            types = [0] * (na + 2) + ([1] * (nb + 1) if pair else [])
            features.append({"input_ids": ids, "token_type_ids": types, "label": ex.label})
        return features

    # ---- the Objective protocol of training/loop.py: counts + summed losses
    def counts(self, batch: dict) -> dict:
        labels = batch["label"]  # a fill kernel, not torch.tensor(): no host sync
        return {"task": torch.full((), labels.numel(), dtype=torch.long, device=labels.device)}

    def forward(self, model, batch: dict) -> torch.Tensor:
        return model(**model_inputs(batch))  # logits [B,num_labels]

    def loss_sums(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        """[B] per-example loss (fp32)."""
        if self.regression:
            return F.mse_loss(logits.float().squeeze(-1), batch["label"], reduction="none")
        return F.cross_entropy(
            logits.float(), batch["label"], reduction="none", label_smoothing=self.label_smoothing
        )

    def __call__(self, model, batch: dict):
        logits = self.forward(model, batch)
        extra = {} if self.regression else {"task_acc": (logits.argmax(-1) == batch["label"]).sum()}
        return {"task": self.loss_sums(logits, batch).sum()}, extra

    # ---- scoring a split from the collected outputs
    def score(self, examples, features, outputs: dict) -> tuple[dict, list[dict]]:
        logits = outputs["logits"]  # [N, num_labels] fp32 numpy
        labels = np.array([ex.label for ex in examples])
        if self.regression:
            preds = logits[:, 0]
            records = [
                {"id": ex.id, "label": ex.label, "prediction": float(p)} for ex, p in zip(examples, preds)
            ]
        else:
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            preds = logits.argmax(-1)
            records = [
                {
                    "id": ex.id,
                    "label": int(ex.label),
                    "prediction": int(p),
                    "probabilities": [float(x) for x in pr],
                }
                for ex, p, pr in zip(examples, preds, probs)
            ]
        return metrics.compute(self.metric_names, labels, preds), records


class SquadTask:
    """SQuAD v1.1: windows of [CLS] question [SEP] context [SEP]; start/end logits; spans decoded back
    to context text with the tokenizer's offsets; scored with the official EM / F1."""

    label_keys = ("start_position", "end_position")
    metric_names = ("exact_match", "f1")
    num_labels = 2  # the head's outputs per token: start and end logits

    def __init__(
        self, tokenizer, special, max_seq_length, doc_stride, max_query_length, max_answer_length, n_best
    ):
        self.name = "squad"
        self.metric_terms = {}  # see training.loop.Objective
        self.tokenizer, self.special = tokenizer, special
        self.max_seq_length, self.doc_stride, self.max_query_length = (
            max_seq_length,
            doc_stride,
            max_query_length,
        )
        self.max_answer_length, self.n_best = max_answer_length, n_best

    def group_of(self, example):  # split unit: an article's questions stay together (shared contexts)
        return example.title

    def load(self, data_dir: Path | None, train_file=None, dev_file=None):
        train = squad.read_squad(task_file("train-v1.1.json", data_dir, train_file, "--train_file"))
        dev = squad.read_squad(task_file("dev-v1.1.json", data_dir, dev_file, "--dev_file"))
        clash = {e.id for e in train} & {e.id for e in dev}
        if clash:
            raise UserError(f"the SQuAD train and dev files share question ids, e.g. {sorted(clash)[0]!r}")
        return train, dev, {}

    def featurize(self, examples) -> list[dict]:
        return make_features(
            examples,
            self.tokenizer,
            self.special,
            self.max_seq_length,
            self.doc_stride,
            self.max_query_length,
        )

    def counts(self, batch: dict) -> dict:
        positions = batch["start_position"]  # a fill kernel, not torch.tensor(): no host sync
        return {"task": torch.full((), positions.numel(), dtype=torch.long, device=positions.device)}

    def forward(self, model, batch: dict):
        start, end = model(**model_inputs(batch))  # [B,S] each
        start, end = start.float(), end.float()
        mask = batch["attention_mask"]  # None when the batch has no padding (the loop drops all-ones masks)
        if mask is None:
            return start, end
        pad = mask == 0  # padding can never be an answer boundary
        return start.masked_fill(pad, -1e4), end.masked_fill(pad, -1e4)

    def loss_sums(self, outputs, batch: dict) -> torch.Tensor:
        start, end = outputs
        return (
            F.cross_entropy(start, batch["start_position"], reduction="none")
            + F.cross_entropy(end, batch["end_position"], reduction="none")
        ) / 2  # [B]

    def __call__(self, model, batch: dict):
        return {"task": self.loss_sums(self.forward(model, batch), batch).sum()}, {}

    def score(self, examples, features, outputs: dict) -> tuple[dict, list[dict]]:
        predictions = decode_predictions(
            examples,
            features,
            outputs["start_logits"],
            outputs["end_logits"],
            self.n_best,
            self.max_answer_length,
        )
        records = []
        for ex in examples:
            golds = [a["text"] for a in ex.answers]
            em, f1 = squad.score_question(predictions[ex.id], golds)
            records.append(
                {"id": ex.id, "prediction": predictions[ex.id], "answers": golds, "exact_match": em, "f1": f1}
            )
        return squad.evaluate(examples, predictions), records


def build_task(name: str, tokenizer, special, args):
    if name == "squad":
        return SquadTask(
            tokenizer,
            special,
            args.max_seq_length,
            args.doc_stride,
            args.max_query_length,
            args.max_answer_length,
            args.n_best_size,
        )
    if name not in GLUE_TASKS:
        raise UserError(f"--task {name!r} is not one of {', '.join(TASK_NAMES)}")
    return ClassificationTask(name, tokenizer, special, args.max_seq_length, args.label_smoothing)
