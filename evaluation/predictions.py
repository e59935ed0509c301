"""Per-example prediction files written by fine-tuning, and the metrics computed on them.

A run writes `RUN_DIR/predictions/epoch_{E}_{split}.jsonl`: one JSON object per line with `id`, `label`
(gold) and `prediction`; SQuAD lines have `id`, `prediction` (text) and `answers` (strings or
{"text": ...} dicts). Runs are aligned by `id`.
"""

import json
import re
from pathlib import Path

import numpy as np

from finetune.metrics import METRICS as GLUE_METRICS
from finetune.squad import score_question
from utils.errors import UserError

EPOCH_FILE = re.compile(r"epoch_(\d+)_(.+)\.jsonl$")


def prediction_file(run_dir: str | Path, split: str, epoch: int | None = None) -> Path:
    """The file for `split` at `epoch` (default: the last epoch written) under RUN_DIR/predictions/."""
    run_dir = Path(run_dir)
    pred_dir = run_dir / "predictions" if (run_dir / "predictions").is_dir() else run_dir
    if not pred_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    epochs = {}
    for f in pred_dir.iterdir():
        m = EPOCH_FILE.match(f.name)
        if m and m.group(2) == split:
            epochs[int(m.group(1))] = f
    if not epochs:
        raise UserError(f"{pred_dir}: no predictions/epoch_E_{split}.jsonl files")
    if epoch is None:
        return epochs[max(epochs)]
    if epoch not in epochs:
        raise UserError(f"{pred_dir}: no epoch_{epoch}_{split}.jsonl (epochs: {sorted(epochs)})")
    return epochs[epoch]


def read_predictions(path: str | Path) -> dict[str, dict]:
    """id -> record, checking each line is a JSON object with `id`, `prediction` and `label` or `answers`."""
    records = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{lineno}: malformed JSON line ({err.msg})") from None
            if not isinstance(rec, dict) or "id" not in rec or "prediction" not in rec:
                raise UserError(f"{path}:{lineno}: a line needs keys 'id' and 'prediction'")
            if "label" not in rec and "answers" not in rec:
                raise UserError(f"{path}:{lineno}: a line needs a gold 'label' (or SQuAD 'answers')")
            records[str(rec["id"])] = rec
    if not records:
        raise UserError(f"{path}: no predictions")
    return records


def squad_score(rec: dict, metric: str) -> float:
    """Per-question exact match or F1 (official v1.1 scoring, max over the gold answers) in [0, 1]."""
    answers = [a["text"] if isinstance(a, dict) else a for a in rec["answers"]] or [""]
    em, f1 = score_question(str(rec["prediction"]), answers)
    return em if metric == "squad_em" else f1


# Corpus-level metrics (not a mean over examples): the bootstrap scores each resampled row with them.
CORPUS_METRICS = {name: fn for name, fn in GLUE_METRICS.items() if name != "accuracy"}
METRICS = ("accuracy", "squad_em", "squad_f1", *CORPUS_METRICS)


def load_runs(run_dirs: list[str], split: str, epoch: int | None, metric: str, ids: list[str] | None = None):
    """Predictions of several runs aligned by id: (preds [runs, examples], labels [examples], ids, files).

    For squad_em/squad_f1, preds are per-example scores (and labels ones): bootstrap them with metric "mean".
    """
    files = [prediction_file(d, split, epoch) for d in run_dirs]
    runs = [read_predictions(f) for f in files]
    ids = ids if ids is not None else sorted(runs[0], key=_id_order)
    rows, labels = [], None
    for f, run in zip(files, runs):
        missing = [i for i in ids if i not in run]
        if missing or len(run) != len(ids):
            extra = len(run) - (len(ids) - len(missing))
            raise UserError(f"{f}: ids differ from the other runs ({len(missing)} missing, {extra} extra)")
        recs = [run[i] for i in ids]
        if metric in ("squad_em", "squad_f1"):
            if "answers" not in recs[0]:
                raise UserError(f"{f}: metric {metric} needs SQuAD lines with 'answers'")
            rows.append([squad_score(r, metric) for r in recs])
            labels = np.ones(len(ids))
        else:
            if any("label" not in r for r in recs):
                raise UserError(f"{f}: metric {metric} needs a 'label' on every line")
            rows.append([r["prediction"] for r in recs])
            gold = [r["label"] for r in recs]
            if labels is not None and list(labels) != gold:
                raise UserError(f"{f}: gold labels differ from the other runs' for the same ids")
            labels = np.array(gold)
    return np.array(rows), np.asarray(labels), ids, files


def _id_order(i: str):
    """Numeric ids sort as numbers, others as strings."""
    return (0, int(i), "") if i.lstrip("-").isdigit() else (1, 0, i)


def pretraining_seed(run_dir) -> int | None:
    """The pretraining seed of a fine-tuning run: its checkpoint's args.json (init seed, else seed), else a
    `seed_K` / `seed-K` / `seedK` part of the checkpoint path (MultiBERTs' and zoo.suite's names)."""
    args = _read_json(Path(run_dir) / "run_args.json")
    ckpt = args.get("checkpoint_path")
    if not ckpt:
        return None
    pre = _read_json(Path(ckpt) / "args.json")
    for key in ("init_seed", "seed"):
        if pre.get(key) is not None:
            return int(pre[key])
    m = re.search(r"seed[_-]?(\d+)", str(ckpt))
    return int(m.group(1)) if m else None


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def run_seeds(run_dirs: list[str], given: list[str] | None, flag: str) -> list[str]:
    if given is not None:
        if len(given) != len(run_dirs):
            raise UserError(f"--{flag}_seeds: {len(given)} seed ids for {len(run_dirs)} --{flag} runs")
        return [int(s) if s.lstrip("-").isdigit() else s for s in given]
    seeds = [pretraining_seed(d) for d in run_dirs]
    missing = next((d for d, s in zip(run_dirs, seeds) if s is None), None)
    if missing is not None:
        raise UserError(f"{missing}: no pretraining seed found (run_args.json); pass --{flag}_seeds")
    return seeds
