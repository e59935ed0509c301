"""Evaluation of a split: one inference pass (length-sorted batches) -> loss, metrics, per-example records."""

import math

import numpy as np
import torch

from finetune.batching import collate, eval_batches
from training.precision import autocast


@torch.no_grad()
def predict(model, task, features, batch_size: int, device, precision: str, pad_id: int):
    """(mean loss over features, outputs in feature order): {"logits": [N,C]} or, for SQuAD,
    {"start_logits": [per-feature arrays], "end_logits": [...]} trimmed to each feature's length."""
    was_training = model.training
    model.eval()
    loss_sum, outputs = 0.0, {}
    for idx in eval_batches([len(f["input_ids"]) for f in features], batch_size):
        batch = collate([features[i] for i in idx], pad_id, task.label_keys)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(precision, device):
            out = task.forward(model, batch)
            loss_sum += float(task.loss_sums(out, batch).sum())
        if isinstance(out, tuple):  # SQuAD: (start [B,S], end [B,S])
            start, end = (o.float().cpu().numpy() for o in out)
            for row, i in enumerate(idx):
                n = len(features[i]["input_ids"])
                outputs.setdefault("start_logits", {})[i] = start[row, :n]
                outputs.setdefault("end_logits", {})[i] = end[row, :n]
        else:
            logits = out.float().cpu().numpy()  # [B,C]
            for row, i in enumerate(idx):
                outputs.setdefault("logits", {})[i] = logits[row]
    model.train(was_training)
    ordered = {k: [v[i] for i in range(len(features))] for k, v in outputs.items()}
    if "logits" in ordered:
        ordered["logits"] = np.stack(ordered["logits"])
    return loss_sum / max(len(features), 1), ordered


def evaluate_split(model, task, examples, features, batch_size, device, precision, pad_id):
    """({"loss", metrics...}, per-example records)."""
    loss, outputs = predict(model, task, features, batch_size, device, precision, pad_id)
    scores, records = task.score(examples, features, outputs)
    return {"loss": loss, **scores}, records


def json_safe(value):
    """NaN (e.g. the Pearson correlation of a constant prediction) -> null in JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
