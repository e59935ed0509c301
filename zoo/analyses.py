"""Weight-space analyses of a zoo (zoo.py analyze): outputs in ZOO_DIR/analysis/ (CSV / JSON).

agreement_TASK.csv      pairwise prediction agreement of the final fine-tuned models on a split
                        (fraction of examples with the same prediction; symmetric, ones on the diagonal),
                        from the engine's predictions/epoch_E_SPLIT.jsonl
agreement_summary.csv   per task and hyper-parameter: mean agreement of pairs sharing its value vs not
weight_stats.csv        per state and tensor: mean, variance, 1st/25th/50th/75th/99th percentiles
ridge.json              test accuracy (or --target) predicted from those statistics by ridge regression
                        (closed form), alpha chosen on validation, under a model-level split; R² per split
sparsity.csv            every final state sparsified (global / per layer, each level) and re-evaluated;
                        the twins also become manifest rows (stage "sparse")
"""

import csv
import json
from pathlib import Path

import numpy as np
import torch

from zoo import runs as rf
from zoo.loader import load_weights, model_split, select_rows
from zoo.manifest import read_manifest, write_manifest

STATS = ("mean", "var", "p1", "p25", "p50", "p75", "p99")
ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3)


def read_predictions(path: Path) -> dict:
    """{example id: prediction} of one predictions/epoch_E_SPLIT.jsonl file."""
    out = {}
    for line in Path(path).read_text().splitlines():
        record = json.loads(line)
        out[record["id"]] = record["prediction"]
    return out


def agreement_matrix(predictions: list[dict]) -> np.ndarray:
    """[M,M] fraction of the shared example ids on which two models predict the same."""
    m = len(predictions)
    out = np.ones((m, m))
    for i in range(m):
        for j in range(i + 1, m):
            shared = predictions[i].keys() & predictions[j].keys()
            same = sum(predictions[i][k] == predictions[j][k] for k in shared)
            out[i, j] = out[j, i] = same / len(shared) if shared else float("nan")
    return out


def agreement_by_hparam(rows: list[dict], matrix: np.ndarray) -> list[dict]:
    """Per hyper-parameter that varies: mean agreement of pairs with equal vs different values."""
    out = []
    keys = sorted({k for r in rows for k in r if k.startswith("hp.")})
    iu = np.triu_indices(len(rows), 1)
    for key in keys:
        values = [json.dumps(r.get(key)) for r in rows]
        if len(set(values)) < 2:
            continue
        same = np.array([values[i] == values[j] for i, j in zip(*iu)])
        pairs = matrix[iu]
        out.append(
            {
                "hparam": key,
                "same_mean": float(pairs[same].mean()) if same.any() else None,
                "same_pairs": int(same.sum()),
                "different_mean": float(pairs[~same].mean()),
                "different_pairs": int((~same).sum()),
            }
        )
    return out


def tensor_stats(t: torch.Tensor) -> dict:
    x = t.detach().float().flatten().numpy()
    p = np.percentile(x, [1, 25, 50, 75, 99])
    return dict(zip(STATS, [float(x.mean()), float(x.var()), *map(float, p)]))


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """(w, b) minimising |x w + b - y|² + alpha |w|², closed form (dual form when features outnumber rows)."""
    mx, my = x.mean(0), y.mean()
    xc, yc = x - mx, y - my
    n, d = xc.shape
    if d > n:
        w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(n), yc)
    else:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
    return w, float(my - mx @ w)


def r2(y: np.ndarray, pred: np.ndarray) -> float | None:
    total = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / total if len(y) > 1 and total > 0 else None


def ridge_predict(features: np.ndarray, y: np.ndarray, splits: list[str], alphas=ALPHAS) -> dict:
    """Standardise on train, pick alpha by validation R² (train R² without validation); R² per split."""
    splits = np.array(splits)
    tr = splits == "train"
    mu, sd = features[tr].mean(0), features[tr].std(0)
    sd[sd == 0] = 1.0
    z = (features - mu) / sd
    best = None
    for alpha in alphas:
        w, b = ridge_fit(z[tr], y[tr], alpha)
        pick = "validation" if (splits == "validation").sum() > 1 else "train"
        score = r2(y[splits == pick], z[splits == pick] @ w + b)
        if best is None or (score is not None and (best[0] is None or score > best[0])):
            best = (score, alpha, w, b)
    _, alpha, w, b = best
    out = {"alpha": alpha, "n_features": int(features.shape[1])}
    for name in ("train", "validation", "test"):
        m = splits == name
        out[f"n_{name}"] = int(m.sum())
        out[f"r2_{name}"] = r2(y[m], z[m] @ w + b) if m.any() else None
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, cols)
        writer.writeheader()
        writer.writerows(rows)


def analyze(args) -> dict:
    """Run every analysis on a zoo; print a summary; return it."""
    from zoo.sparsify import SCOPES, make_twin

    zoo_dir = Path(args.zoo_dir)
    out = Path(args.output_dir or zoo_dir / "analysis")
    out.mkdir(parents=True, exist_ok=True)
    rows = read_manifest(zoo_dir)
    finals = select_rows(zoo_dir, "finetune", final=True, rows=rows)
    tasks = sorted({r["task"] for r in finals})
    summary = {"states": len(rows), "final_finetuned": len(finals)}
    if not finals:
        print(f"{zoo_dir}: no completed fine-tuning runs yet: nothing to analyze")
        return summary

    # 1. prediction agreement on a split
    agreement_rows = []
    for task in tasks:
        group = [r for r in finals if r["task"] == task]
        preds = [
            read_predictions(
                zoo_dir / "runs" / r["run_id"] / "predictions" / f"epoch_{r['epoch']}_{args.split}.jsonl"
            )
            for r in group
        ]
        matrix = agreement_matrix(preds)
        _write_csv(
            out / f"agreement_{task}.csv",
            [
                {"run_id": r["run_id"], **{g["run_id"]: v for g, v in zip(group, row)}}
                for r, row in zip(group, matrix)
            ],
        )
        agreement_rows += [{"task": task, **s} for s in agreement_by_hparam(group, matrix)]
        off = matrix[np.triu_indices(len(group), 1)]
        summary[f"agreement_{task}"] = float(off.mean()) if off.size else None
    if agreement_rows:
        _write_csv(out / "agreement_summary.csv", agreement_rows)

    # 2. per-tensor weight statistics of every stored state
    layers = args.layers.split(",") if args.layers else None
    stat_rows, features = [], {}
    for r in select_rows(zoo_dir, ["pretrain", "finetune"], rows=rows):
        weights = load_weights(zoo_dir, r, layers)
        for name, t in weights.items():
            s = tensor_stats(t)
            stat_rows.append(
                {
                    "run_id": r["run_id"],
                    "stage": r["stage"],
                    "epoch": r["epoch"],
                    "layer": name,
                    "numel": t.numel(),
                    **s,
                }
            )
            features.setdefault((r["run_id"], r["epoch"]), []).extend(s.values())
    _write_csv(out / "weight_stats.csv", stat_rows)

    # 3. ridge: test metric of the final fine-tuned states from their weight statistics
    ridge = {}
    for task in tasks:
        group = [r for r in finals if r["task"] == task]
        target = args.target or next(
            (k for k in group[0] if k.startswith("metric.test.") and k != "metric.test.loss"), None
        )
        usable = [r for r in group if r.get(target) is not None]
        if len(usable) < 3:
            ridge[task] = {"target": target, "note": f"{len(usable)} models: too few for a split"}
            continue
        x = np.array([features[(r["run_id"], r["epoch"])] for r in usable])
        y = np.array([float(r[target]) for r in usable])
        ridge[task] = {
            "target": target,
            "group_by": "run",
            **ridge_predict(x, y, model_split(usable, seed=args.seed, group_by="run")),
        }
    rf.write_json(out / "ridge.json", ridge)

    # 4. sparse twins of every final fine-tuned state
    levels = [float(x) for x in args.levels.split(",") if x.strip()]
    scopes = [s for s in args.scopes.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        from utils.errors import UserError

        raise UserError(f"--scopes: {bad[0]!r} is not one of {', '.join(SCOPES)}")
    sparse_rows = []
    for r in finals:
        for scope in scopes:
            for level in levels:
                m = make_twin(zoo_dir, r, level, scope, args.split, args.save_sparse, args.device)["metrics"]
                sparse_rows.append(
                    {
                        "run_id": r["run_id"],
                        "task": r["task"],
                        "scope": scope,
                        "level": level,
                        "achieved": m["sparsity"]["achieved"],
                        **{f"dense.{k}": r.get(f"metric.{args.split}.{k}") for k in m[args.split]},
                        **{f"sparse.{k}": v for k, v in m[args.split].items()},
                    }
                )
    if sparse_rows:
        _write_csv(out / "sparsity.csv", sparse_rows)
        write_manifest(zoo_dir)
    summary.update(sparse_twins=len(sparse_rows), ridge={t: v.get("r2_test") for t, v in ridge.items()})
    print(f"analysis of {zoo_dir} ({len(rows)} states, {len(finals)} final fine-tuned) in {out}:")
    for task in tasks:
        print(
            f"  {task}: mean pairwise agreement on {args.split} {summary[f'agreement_{task}']:.3f}; "
            f"ridge R² (test) of {ridge[task].get('target')}: {ridge[task].get('r2_test')}"
        )
    for s in agreement_rows:
        print(
            f"  agreement {s['task']} by {s['hparam']}: same value {s['same_mean']}, "
            f"different {s['different_mean']:.3f}"
        )
    for s in sparse_rows:
        keys = [k for k in s if k.startswith("sparse.")]
        print(
            f"  {s['run_id']} {s['scope']} {s['level']:.0%}: "
            + ", ".join(
                f"{k[7:]} {s['dense.' + k[7:]]} -> {s[k]:.4f}"
                for k in keys
                if s.get("dense." + k[7:]) is not None
            )
        )
    return summary
