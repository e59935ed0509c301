"""Reading a zoo: manifest rows with filters, weights of chosen layers, flat vectors and back, and a torch
Dataset over model states with a model-level train/validation/test split.

    rows = select_rows(zoo_dir, stage="finetune", epochs=[5], task="sst2")
    for row, weights in iter_states(zoo_dir, stage="finetune", layers=[10, 11, "classifier.*"]): ...
    vector, index = flatten(weights); weights == unflatten(vector, index)
    train = ZooDataset(zoo_dir, "train", layers=[11], target="metric.test.accuracy", seed=0)

layers: None (every tensor) or a list of transformer-layer numbers (int: "encoder.layers.{i}.*") and
tensor-name globs (str, fnmatch: "encoder.embeddings.*", "classifier.*").
"""

import fnmatch
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from utils.errors import UserError
from zoo.manifest import read_manifest


def select_rows(zoo_dir, stage=None, epochs=None, task=None, final=False, rows=None) -> list[dict]:
    """Manifest rows with a checkpoint, filtered: stage (str or list), epochs (list), task, final
    (only each run's last epoch, hp.epochs)."""
    rows = read_manifest(zoo_dir, rebuild=False) if rows is None else rows
    stages = [stage] if isinstance(stage, str) else stage
    out = []
    for r in rows:
        if not r.get("checkpoint"):
            continue
        if stages is not None and r["stage"] not in stages:
            continue
        if epochs is not None and r["epoch"] not in epochs:
            continue
        if task is not None and r.get("task") != task:
            continue
        if final and r["epoch"] != r.get("hp.epochs"):
            continue
        out.append(r)
    return out


def select_names(names, layers=None) -> list[str]:
    """The tensor names picked by `layers` (see the module docstring), in their original order."""
    if layers is None:
        return list(names)
    patterns = [f"encoder.layers.{x}.*" if isinstance(x, int) else x for x in layers]
    picked = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not picked:
        raise UserError(f"layers {layers!r} match no tensor (names look like {list(names)[:3]})")
    return picked


def load_weights(zoo_dir, row: dict, layers=None, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """{name: tensor} of one state's chosen tensors, read lazily from its safetensors file."""
    path = Path(zoo_dir) / row["checkpoint"] / "model.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        names = select_names(list(fh.keys()), layers)
        return {n: fh.get_tensor(n).to(dtype) for n in names}


def iter_states(zoo_dir, stage=None, epochs=None, layers=None, task=None, final=False):
    """Yield (manifest row, {name: tensor}) for every state passing the filters."""
    for row in select_rows(zoo_dir, stage, epochs, task, final):
        yield row, load_weights(zoo_dir, row, layers)


@dataclass(frozen=True)
class Slot:
    name: str
    shape: tuple
    start: int  # offset in the flat vector
    end: int


def flatten(weights: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[Slot]]:
    """(vector [D], index): the tensors concatenated in dict order; index maps spans back to names."""
    index, start = [], 0
    for name, t in weights.items():
        index.append(Slot(name, tuple(t.shape), start, start + t.numel()))
        start += t.numel()
    return torch.cat([t.reshape(-1) for t in weights.values()]), index


def unflatten(vector: torch.Tensor, index: list[Slot]) -> dict[str, torch.Tensor]:
    """The inverse of flatten: {name: tensor of its shape} (views into `vector`)."""
    if vector.numel() != index[-1].end:
        raise ValueError(f"vector has {vector.numel()} values, the index describes {index[-1].end}")
    return {s.name: vector[s.start : s.end].view(s.shape) for s in index}


def group_of(row: dict, group_by: str) -> str:
    """The unit that must stay in one split. lineage: the pretraining run and everything descended from it
    (no weights shared across splits); run: one fine-tuning run with all its epochs (and its sparse twins)."""
    if group_by == "lineage":
        return row.get("lineage") or row["run_id"]
    if group_by == "run":
        return row["parent_run"] if row["stage"] == "sparse" else row["run_id"]
    raise UserError(f"group_by {group_by!r} must be lineage or run")


def split_groups(groups, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, str]:
    """{group: "train" | "validation" | "test"}: the sorted groups shuffled with `seed` and cut by
    fractions (each split gets at least one group when there are three or more)."""
    names = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    n = len(names)
    n_val = round(fractions[1] * n)
    n_test = round(fractions[2] * n)
    if n >= 3:
        n_val, n_test = max(1, n_val), max(1, n_test)
    n_train = n - n_val - n_test
    label = ["train"] * n_train + ["validation"] * n_val + ["test"] * n_test
    return {names[i]: label[j] for j, i in enumerate(order)}


def model_split(rows, fractions=(0.8, 0.1, 0.1), seed: int = 0, group_by: str = "lineage") -> list[str]:
    """The split of every row, decided per group (see group_of): no model's states in two splits."""
    assign = split_groups([group_of(r, group_by) for r in rows], fractions, seed)
    return [assign[group_of(r, group_by)] for r in rows]


class ZooDataset(torch.utils.data.Dataset):
    """Model states of one split as (flat weights [D] float32, target) pairs; target is the manifest
    column `target` (NaN when the row has none, 0-d tensor). rows[i] is item i's manifest row and
    index maps the vector back to tensor names and shapes."""

    def __init__(
        self,
        zoo_dir,
        split: str = "train",
        layers=None,
        stage="finetune",
        epochs=None,
        task=None,
        target: str | None = None,
        fractions=(0.8, 0.1, 0.1),
        seed: int = 0,
        group_by: str = "lineage",
    ):
        if split not in ("train", "validation", "test"):
            raise UserError(f"split {split!r} must be train, validation or test")
        self.zoo_dir, self.layers, self.target = Path(zoo_dir), layers, target
        every = select_rows(zoo_dir, stage, epochs, task)
        if not every:
            raise UserError(
                f"{zoo_dir}: no model states match stage={stage!r} epochs={epochs!r} task={task!r}"
            )
        splits = model_split(every, fractions, seed, group_by)
        self.rows = [r for r, s in zip(every, splits) if s == split]
        self.index = flatten(load_weights(zoo_dir, every[0], layers))[1]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        row = self.rows[i]
        vector, index = flatten(load_weights(self.zoo_dir, row, self.layers))
        if [s.shape for s in index] != [s.shape for s in self.index]:
            raise UserError(f"{row['checkpoint']}: tensor shapes differ from the dataset's first state")
        value = row.get(self.target) if self.target else None
        return vector, torch.tensor(float("nan") if value is None else float(value))
