"""Train / validation / test splits, saved with hashes so every model of a zoo sees the same split.

Modes:
- "glue": the published files. GLUE's test labels are hidden, so the published dev file is the
  labelled test split (the number papers report as "dev"); validation (for model selection) is
  held out of the published train file (`validation_fraction`, whole text groups, by seed).
  validation_fraction=0 trains on the full train file and uses dev as validation too.
- "resplit": train + dev pooled, de-duplicated by exact text (first copy kept), then split by
  `fractions` (default 0.8/0.1/0.1) with `seed`.
Extra evaluation files (MNLI dev_mismatched -> "test_mismatched") stay their own split in both modes.
Examples are assigned in groups (GLUE: identical text; SQuAD: an article's questions) so no text or
context crosses a split boundary.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.files import write_text_atomic


def _sha256(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def data_fingerprint(examples) -> str:
    """Hash of a split's contents (ids, texts, labels): reused splits must see the same data."""
    return _sha256([vars(ex) for ex in examples])


def assign_groups(groups: list, fractions, seed: int) -> list[int]:
    """Split index per example: groups visited in a seeded order, laid end to end, each to the split
    whose cumulative-fraction interval holds the group's midpoint."""
    first_seen = {}
    for g in groups:
        first_seen.setdefault(g, len(first_seen))
    sizes = np.bincount([first_seen[g] for g in groups], minlength=len(first_seen))
    bounds = np.cumsum(fractions) * len(groups)
    order = np.random.default_rng(seed).permutation(len(first_seen))
    split_of_group, seen = np.empty(len(first_seen), dtype=np.int64), 0
    for g in order:
        midpoint = seen + sizes[g] / 2
        split_of_group[g] = min(int(np.searchsorted(bounds, midpoint, side="right")), len(fractions) - 1)
        seen += sizes[g]
    return [int(split_of_group[first_seen[g]]) for g in groups]


def dedup(examples, seen=()) -> list:
    """Keep the first example of each exact text; drop texts already in `seen`."""
    keys, out = set(seen), []
    for ex in examples:
        if ex.texts not in keys:
            keys.add(ex.texts)
            out.append(ex)
    return out


def build_splits(
    task,
    train,
    dev,
    extra,
    mode="glue",
    fractions=(0.8, 0.1, 0.1),
    seed=0,
    validation_fraction=0.1,
    group_of=None,
):
    """({split name: examples}, record for split.json). group_of(example) -> group key."""
    group_of = group_of or (lambda ex: ex.texts)
    names = ("train", "validation", "test")
    if mode == "glue":
        if validation_fraction == 0:
            splits = {"train": list(train), "validation": list(dev), "test": list(dev)}
        else:
            fr = (1 - validation_fraction, validation_fraction)
            which = assign_groups([group_of(ex) for ex in train], fr, seed)
            splits = {n: [ex for ex, w in zip(train, which) if w == k] for k, n in enumerate(names[:2])}
            splits["test"] = list(dev)
        params = {"validation_fraction": validation_fraction}
    elif mode == "resplit":
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise UserError(
                f"--split_fractions must be three positive numbers summing to 1, got {list(fractions)}"
            )
        held_out = {ex.texts for examples in extra.values() for ex in examples}
        pool = dedup(list(train) + list(dev), seen=held_out)
        which = assign_groups([group_of(ex) for ex in pool], fractions, seed)
        splits = {n: [ex for ex, w in zip(pool, which) if w == k] for k, n in enumerate(names)}
        params = {"fractions": list(fractions)}
    else:
        raise UserError(f"--split must be 'glue' or 'resplit', got {mode!r}")
    splits.update({name: list(examples) for name, examples in extra.items()})
    return splits, make_record(task, mode, seed, params, splits)


def make_record(task, mode, seed, params, splits) -> dict:
    ids = {name: [ex.id for ex in examples] for name, examples in splits.items()}
    return {
        "task": task,
        "mode": mode,
        "seed": seed,
        **params,
        "sizes": {name: len(v) for name, v in ids.items()},
        "splits": ids,
        "sha256": _sha256(ids),
        "data_sha256": {name: data_fingerprint(examples) for name, examples in splits.items()},
    }


def save_split(record: dict, path: Path) -> None:
    write_text_atomic(path, json.dumps(record, ensure_ascii=False) + "\n")


def load_split(path: Path, task: str, available) -> tuple[dict, dict]:
    """Rebuild a saved split from the examples now on disk; refuses a split of other or changed data."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        ids = record["splits"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"--split_file {path}: not a readable split file ({err})") from None
    if record.get("task") != task:
        raise UserError(f"--split_file {path}: made for task {record.get('task')!r}, not {task!r}")
    if record.get("sha256") != _sha256(ids):
        raise UserError(f"--split_file {path}: its sha256 does not match its split ids (edited or corrupt)")
    by_id = {ex.id: ex for ex in available}
    splits = {}
    for name, split_ids in ids.items():
        missing = [i for i in split_ids if i not in by_id]
        if missing:
            raise UserError(
                f"--split_file {path}: split {name!r} has {len(missing)} ids not in the data, "
                f"e.g. {missing[0]!r}"
            )
        splits[name] = [by_id[i] for i in split_ids]
        if data_fingerprint(splits[name]) != record.get("data_sha256", {}).get(name):
            raise UserError(
                f"--split_file {path}: the data of split {name!r} differs from when the split was made"
            )
    return splits, record
