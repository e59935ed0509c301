"""The manifest: one row per model state, rebuilt from the run folders (never edited by hand), so it always
matches what is on disk. ZOO_DIR/manifest.jsonl and ZOO_DIR/manifest.csv hold the same flat rows:

  run_id, stage (pretrain | finetune | sparse), task, parent_run, parent_epoch, lineage, epoch, step,
  hp.*            the run's hyper-parameters (hp.learning_rate, hp.weight_decay, hp.seed, ...);
  hp.pretrain.*   for fine-tuned states, the hyper-parameters of the pretraining run they started from;
  metric.SPLIT.*  metrics per split at that state (metric.validation.accuracy, metric.train.loss, ...);
  checkpoint      the state's folder, relative to ZOO_DIR (loadable: model.io.load_model for pretraining,
                  finetune.modeling.load_finetuned for fine-tuning); empty for unsaved sparse twins
  sha256, n_parameters, dtype, bytes   of checkpoint/model.safetensors
  run_complete    whether the run has finished (its remaining states may still come)

pandas.read_csv(ZOO_DIR / "manifest.csv") or pandas.read_json(..., lines=True) read it directly.
sha256 values are cached per run in zoo_hashes.json (keyed by size and mtime) so a rebuild is cheap.
"""

import csv
import hashlib
import io
import json
import os
import struct
from pathlib import Path

from utils.files import strict_json
from zoo import runs as rf

FIRST = ["run_id", "stage", "task", "parent_run", "parent_epoch", "lineage", "epoch", "step"]
LAST = ["checkpoint", "sha256", "n_parameters", "dtype", "bytes", "run_complete"]
SCORE_WORDS = ("loss", "acc", "accuracy", "f1", "exact_match", "mcc", "pearson", "spearman", "matthews")


def safetensors_info(path: Path) -> dict:
    """{name: (dtype, shape)} from a safetensors header, without reading the weights."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return {k: (v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _file_facts(path: Path, cache: dict, key: str) -> dict:
    st = path.stat()
    hit = cache.get(key)
    if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
        return hit
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    info = safetensors_info(path)
    n = sum(_numel(shape) for _, shape in info.values())
    dtypes = sorted({d for d, _ in info.values()})
    facts = {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": h.hexdigest(),
        "n_parameters": n,
        "dtype": "/".join(dtypes),
    }
    cache[key] = facts
    return facts


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
    return out


def _flat(prefix: str, d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(f"{prefix}{k}.", v))
        else:
            out[f"{prefix}{k}"] = v
    return out


def pretrain_metrics(lines: list[dict], step: int) -> dict:
    """metric.train.* (the training log at that step) and metric.validation.* (val_* at that step)."""
    out = {}
    for line in lines:
        if line.get("step") != step:
            continue
        for k, v in line.items():
            if k.startswith("val_"):
                out[f"metric.validation.{k[4:]}"] = v
            elif k != "step" and any(w in k for w in SCORE_WORDS):
                out[f"metric.train.{k}"] = v
    return out


def finetune_metrics(lines: list[dict]) -> dict[int, dict]:
    """{epoch: {metric.SPLIT.name: value, "step": s}} (the last line per epoch wins)."""
    out = {}
    for line in lines:
        if "epoch" not in line:
            continue
        row = {"step": line.get("step")}
        for split, scores in line.items():
            if isinstance(scores, dict):
                row.update(_flat(f"metric.{split}.", scores))
        out[int(line["epoch"])] = row
    return out


def _state_row(
    zoo_dir: Path, record: dict, epoch: int, ckpt: Path | None, cache: dict, parents: dict
) -> dict:
    row = {
        "run_id": record["run_id"],
        "stage": record["stage"],
        "task": record.get("task"),
        "parent_run": record.get("parent"),
        "parent_epoch": record.get("parent_epoch"),
        "lineage": record.get("lineage"),
        "epoch": epoch,
        **{f"hp.{k}": v for k, v in record["hparams"].items()},
    }
    parent = parents.get(record.get("lineage"))
    if parent is not None and record["stage"] != "pretrain":
        row.update({f"hp.pretrain.{k}": v for k, v in parent["hparams"].items()})
        row["hp.pretrain.epoch"] = record.get("pretrain_epoch", record.get("parent_epoch"))
    if ckpt is not None and (ckpt / "model.safetensors").is_file():
        facts = _file_facts(ckpt / "model.safetensors", cache, str(ckpt.relative_to(zoo_dir)))
        row.update(
            checkpoint=str(ckpt.relative_to(zoo_dir)),
            sha256=facts["sha256"],
            n_parameters=facts["n_parameters"],
            dtype=facts["dtype"],
            bytes=facts["size"],
        )
    return row


def build_rows(zoo_dir) -> list[dict]:
    """Every state on disk: runs/*/ (pretraining and fine-tuning) and sparse/*/ (sparse twins)."""
    zoo_dir = Path(zoo_dir)
    records = {}
    for path in sorted((zoo_dir / "runs").glob("*/zoo_run.json")):
        rec = rf.read_json(path)
        if rec is not None:
            records[rec["run_id"]] = (path.parent, rec)
    parents = {rid: rec for rid, (_, rec) in records.items() if rec["stage"] == "pretrain"}
    rows = []
    for _, (folder, rec) in sorted(records.items(), key=lambda kv: (kv[1][1]["stage"] != "pretrain", kv[0])):
        cache = rf.read_json(folder / "zoo_hashes.json") or {}
        done = rf.is_done(folder)
        lines = _read_jsonl(folder / "metrics.jsonl")
        per_epoch = finetune_metrics(lines) if rec["stage"] == "finetune" else {}
        for epoch in rf.present_states(folder, rec):
            ckpt = rf.state_dir(folder, rec, epoch)
            row = _state_row(zoo_dir, rec, epoch, ckpt, cache, parents)
            if rec["stage"] == "pretrain":
                row["hp.steps_per_epoch"] = rec[
                    "steps_per_epoch"
                ]  # the spec's, or the corpus's when it said null
                row["step"] = epoch * rec["steps_per_epoch"]
                row.update(pretrain_metrics(lines, row["step"]))
            else:
                row.update(per_epoch.get(epoch, {}))
            row["run_complete"] = done
            rows.append(row)
        if cache:
            rf.write_json(folder / "zoo_hashes.json", cache)
    for path in sorted((zoo_dir / "sparse").glob("*/zoo_run.json")):
        rec, folder = rf.read_json(path), path.parent
        metrics = rf.read_json(folder / "metrics.json")
        if rec is None or metrics is None:  # written last: a twin without it is unfinished
            continue
        cache = {}
        ckpt = folder if (folder / "model.safetensors").is_file() else None
        row = _state_row(zoo_dir, rec, rec["parent_epoch"], ckpt, cache, parents)
        row.update(_flat("metric.", metrics["metrics"]))
        row["run_complete"] = True
        rows.append(row)
    return rows


def columns(rows: list[dict]) -> list[str]:
    keys = {k for r in rows for k in r}
    middle = sorted(k for k in keys if k.startswith("hp.")) + sorted(
        k for k in keys if k.startswith("metric.")
    )
    rest = sorted(keys - set(FIRST) - set(LAST) - set(middle))
    return FIRST + middle + rest + LAST


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def write_manifest(zoo_dir) -> list[dict]:
    """Rebuild ZOO_DIR/manifest.jsonl and manifest.csv from the folders; returns the rows."""
    zoo_dir = Path(zoo_dir)
    rows = build_rows(zoo_dir)
    cols = columns(rows)
    # strict JSON: a NaN that an older metrics.jsonl holds becomes null
    jsonl = "".join(
        json.dumps(strict_json({c: r.get(c) for c in cols}), allow_nan=False) + "\n" for r in rows
    )
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    writer.writerows([[_cell(r.get(c)) for c in cols] for r in rows])
    for name, text in (("manifest.jsonl", jsonl), ("manifest.csv", buf.getvalue())):
        tmp = zoo_dir / f".{name}.tmp.{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, zoo_dir / name)
    return rows


def read_manifest(zoo_dir, rebuild: bool = True) -> list[dict]:
    """The manifest's rows (rebuilt first unless rebuild=False and one exists)."""
    path = Path(zoo_dir) / "manifest.jsonl"
    if rebuild or not path.is_file():
        return write_manifest(zoo_dir)
    return _read_jsonl(path)
