"""Magnitude sparsification of model states, at an exact level, and the sparse twins of a zoo.

prune_masks zeroes exactly round(level x n) of the n prunable weights (ties at the threshold broken by
position), either over all prunable tensors together ("global") or in every tensor separately ("layer").
Prunable: the weight matrices of the encoder's layers, the pooler and the task head (not embeddings,
LayerNorms or biases), as in BERT pruning studies (Chen et al. 2020, "The Lottery Ticket Hypothesis for
Pre-trained BERT Networks").

A sparse twin lives in ZOO_DIR/sparse/TWIN_ID/: zoo_run.json (stage "sparse", parent = the fine-tuning
run, hyper-parameters + hp.sparsity, hp.sparsity_scope), metrics.json (the twin re-evaluated with the
fine-tuning evaluation code) and, with save=True, a loadable checkpoint (model.safetensors, config.json,
checkpoint.json). The manifest picks them up as rows.
"""

import re
import shutil
from pathlib import Path

import torch

from zoo import runs as rf

PRUNABLE = r"^encoder\.(layers\.\d+\.|pooler\.).*weight$|^(classifier|qa_outputs)\..*weight$"
SCOPES = ("global", "layer")


def prunable_names(state: dict, pattern: str = PRUNABLE) -> list[str]:
    """Names of the prunable tensors (matching `pattern`, at least 2-D), in state order."""
    rx = re.compile(pattern)
    return [k for k, v in state.items() if rx.search(k) and v.dim() >= 2]


def _k_smallest_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """[n] bool, True on exactly k of the smallest values (ties at the k-th value: the first ones)."""
    prune = torch.zeros_like(values, dtype=torch.bool)
    if k <= 0:
        return prune
    threshold = values.kthvalue(k).values
    prune = values < threshold
    ties = (values == threshold).nonzero().flatten()[: k - int(prune.sum())]
    prune[ties] = True
    return prune


def prune_masks(state: dict, level: float, scope: str, names: list[str]) -> dict[str, torch.Tensor]:
    """{name: bool mask, True = pruned} for the tensors `names` of `state`."""
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"sparsity level {level} must lie in [0, 1]")
    if scope == "layer":
        return {
            n: _k_smallest_mask(
                state[n].detach().abs().flatten().float(), round(level * state[n].numel())
            ).view(state[n].shape)
            for n in names
        }
    if scope != "global":
        raise ValueError(f"sparsity scope {scope!r} must be one of {SCOPES}")
    flat = torch.cat([state[n].detach().abs().flatten().float() for n in names])  # [total]
    pruned = _k_smallest_mask(flat, round(level * flat.numel()))
    masks, start = {}, 0
    for n in names:
        masks[n] = pruned[start : start + state[n].numel()].view(state[n].shape)
        start += state[n].numel()
    return masks


def sparsify_(model: torch.nn.Module, level: float, scope: str, pattern: str = PRUNABLE) -> float:
    """Zero the smallest-magnitude prunable weights of `model` in place; returns the achieved sparsity
    (zeros among the prunable weights)."""
    params = dict(model.named_parameters())
    names = prunable_names(params, pattern)
    masks = prune_masks(params, level, scope, names)
    with torch.no_grad():
        for n in names:
            params[n].masked_fill_(masks[n], 0.0)
    total = sum(params[n].numel() for n in names)
    return sum(int((params[n] == 0).sum()) for n in names) / total


def twin_id(run_id: str, epoch: int, scope: str, level: float) -> str:
    return f"sp_{scope}{level * 100:g}_ep{epoch}_{run_id}"


def make_twin(
    zoo_dir, row: dict, level: float, scope: str, split: str = "test", save: bool = False, device: str = "cpu"
) -> dict:
    """Sparsify one fine-tuned state, evaluate it on `split`, write its twin folder; returns metrics.json."""
    from model.io import save_model
    from zoo.evaluate import evaluate_finetuned, load_state_model

    zoo_dir = Path(zoo_dir)
    folder = zoo_dir / "sparse" / twin_id(row["run_id"], row["epoch"], scope, level)
    done = rf.read_json(folder / "metrics.json")
    if done is not None:
        return done
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    parent = rf.read_json(zoo_dir / "runs" / row["run_id"] / "zoo_run.json")
    model = load_state_model(zoo_dir, row, device)
    achieved = sparsify_(model, level, scope)
    scores, _ = evaluate_finetuned(zoo_dir / "runs" / row["run_id"], model, split, device)
    record = {
        "run_id": folder.name,
        "stage": "sparse",
        "task": row["task"],
        "parent": row["run_id"],
        "parent_epoch": row["epoch"],
        "pretrain_epoch": parent.get("parent_epoch"),
        "lineage": parent["lineage"],
        "hparams": {**parent["hparams"], "sparsity": level, "sparsity_scope": scope},
    }
    rf.write_json(folder / "zoo_run.json", record)
    if save:
        model.to("cpu")
        save_model(model, folder)  # config.json = the encoder's config, as the fine-tuning checkpoints
        shutil.copyfile(zoo_dir / row["checkpoint"] / "checkpoint.json", folder / "checkpoint.json")
    metrics = {"metrics": {split: scores, "sparsity": {"achieved": achieved}}}
    rf.write_json(folder / "metrics.json", metrics)  # last: its presence marks the twin complete
    return metrics
