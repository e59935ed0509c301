"""The multi-bootstrap of MultiBERTs (Sellam et al. 2022, appendix): resample seeds and examples together.

One bootstrap sample draws seeds with replacement (the same draw for both arms when paired, independent
draws otherwise) and one shared draw of examples with replacement; an arm's score is the mean over its
drawn seeds of metric(labels[jj], preds[seed, jj]). The effect is the intervention score minus the
baseline score; its mean and percentile interval come from the samples, and the p-value is the share of
samples with no effect in the expected direction (P(delta <= 0)), floored at 1/nboot as in the paper's code.
Draw order per sample (fixed, so results are reproducible): seeds (one draw if paired, else baseline then
intervention), then examples.
"""

from collections.abc import Callable

import numpy as np

from evaluation.io import write_json_atomic
from evaluation.predictions import CORPUS_METRICS, METRICS, load_runs, prediction_file, read_predictions
from utils.errors import ArgumentParser, UserError, run_cli

# Metrics that are means of a per-example score: scored by a weighted sum instead of re-indexing rows.
PER_EXAMPLE_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": lambda labels, preds: (preds == labels[None, :]).astype(np.float64),
    "mean": lambda labels, preds: np.asarray(preds, dtype=np.float64),  # preds already per-example scores
}


def bootstrap_samples(
    baseline_preds: np.ndarray,
    intervention_preds: np.ndarray,
    labels: np.ndarray,
    metric_fn: str | Callable = "accuracy",
    nboot: int = 1000,
    paired: bool = True,
    rng: int | np.random.Generator = 0,
    sample_seeds: bool = True,
    sample_examples: bool = True,
) -> np.ndarray:
    """[nboot, 2] samples of (baseline score, intervention score).

    baseline_preds [seeds_b, examples], intervention_preds [seeds_i, examples] (rows = seeds; when paired,
    row k of both arms is the same seed), labels [examples]. metric_fn: a name in PER_EXAMPLE_METRICS or a
    callable (labels [n], preds [n]) -> float.
    """
    base, expt, labels = np.asarray(baseline_preds), np.asarray(intervention_preds), np.asarray(labels)
    if base.ndim != 2 or expt.ndim != 2:
        raise ValueError("predictions must be [seeds, examples] arrays")
    if base.shape[1] != expt.shape[1] or labels.shape != (base.shape[1],):
        raise ValueError(
            f"examples differ: baseline {base.shape}, intervention {expt.shape}, labels {labels.shape}"
        )
    if paired and base.shape[0] != expt.shape[0]:
        raise ValueError(
            f"paired needs the same seeds in both arms: {base.shape[0]} vs {expt.shape[0]} seeds"
        )
    rng = np.random.default_rng(rng) if isinstance(rng, (int, np.integer)) else rng
    n, s_b, s_i = base.shape[1], base.shape[0], expt.shape[0]

    if isinstance(metric_fn, str):
        per_example_b = PER_EXAMPLE_METRICS[metric_fn](labels, base)  # [s_b, n]
        per_example_i = PER_EXAMPLE_METRICS[metric_fn](labels, expt)  # [s_i, n]

        def row_scores(jj):  # score of every seed row on the drawn examples: a weighted mean
            w = np.bincount(jj, minlength=n) / n if jj is not None else np.full(n, 1.0 / n)
            return per_example_b @ w, per_example_i @ w
    else:

        def row_scores(jj):
            y = labels if jj is None else labels[jj]
            pick = (lambda row: row) if jj is None else (lambda row: row[jj])
            return (
                np.array([metric_fn(y, pick(row)) for row in base], dtype=np.float64),
                np.array([metric_fn(y, pick(row)) for row in expt], dtype=np.float64),
            )

    out = np.empty((nboot, 2))
    for b in range(nboot):
        seeds_b, seeds_i = np.arange(s_b), np.arange(s_i)
        if sample_seeds:
            seeds_b = rng.integers(s_b, size=s_b)
            seeds_i = seeds_b if paired else rng.integers(s_i, size=s_i)
        jj = rng.integers(n, size=n) if sample_examples else None
        scores_b, scores_i = row_scores(jj)
        out[b] = scores_b[seeds_b].mean(), scores_i[seeds_i].mean()
    return out


def summarize(samples: np.ndarray, confidence: float = 0.95, expect_negative_effect: bool = False) -> dict:
    """Mean and percentile interval of each arm and of delta = intervention - baseline; the p-value."""
    samples = np.asarray(samples, dtype=np.float64)
    q = [(1 - confidence) / 2, 1 - (1 - confidence) / 2]

    def stats(x):
        low, high = np.quantile(x, q)
        return {"mean": float(x.mean()), "low": float(low), "high": float(high)}

    delta = samples[:, 1] - samples[:, 0]
    p = np.mean(delta >= 0) if expect_negative_effect else np.mean(delta <= 0)
    return {
        "baseline": stats(samples[:, 0]),
        "intervention": stats(samples[:, 1]),
        "delta": {**stats(delta), "p": float(max(p, 1.0 / len(samples)))},
        "confidence": confidence,
        "nboot": len(samples),
    }


def multibootstrap(
    baseline_preds: np.ndarray,
    intervention_preds: np.ndarray,
    labels: np.ndarray,
    metric_fn: str | Callable = "accuracy",
    nboot: int = 1000,
    paired: bool = True,
    rng: int | np.random.Generator = 0,
    confidence: float = 0.95,
    expect_negative_effect: bool = False,
) -> dict:
    """Effect of the intervention on the metric: summarize() of bootstrap_samples(), plus the samples."""
    samples = bootstrap_samples(baseline_preds, intervention_preds, labels, metric_fn, nboot, paired, rng)
    return {**summarize(samples, confidence, expect_negative_effect), "paired": paired, "samples": samples}


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", nargs="+", required=True, help="baseline run dirs, one per seed")
    parser.add_argument(
        "--intervention", nargs="+", required=True, help="intervention run dirs, one per seed"
    )
    parser.add_argument("--split", default="test", help="split name in predictions/epoch_{E}_{split}.jsonl")
    parser.add_argument("--epoch", type=int, default=None, help="epoch to read (default: each run's last)")
    parser.add_argument(
        "--metric", default="auto", choices=("auto", *METRICS), help="auto: squad_f1 or accuracy"
    )
    parser.add_argument(
        "--paired", action="store_true", help="same seeds in both arms, given in the same order"
    )
    parser.add_argument("--nboot", type=int, default=1000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--expect_negative_effect", action="store_true", help="p-value for delta < 0 instead")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    parser.add_argument("--output_file", default=None, help="write the statistics as JSON here")
    args = parser.parse_args(argv)
    if args.nboot < 1:
        raise UserError(f"--nboot must be >= 1, got {args.nboot}")
    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence must lie in (0, 1), got {args.confidence}")
    if args.paired and len(args.baseline) != len(args.intervention):
        raise UserError(
            f"--paired needs as many --baseline as --intervention runs ({len(args.baseline)} vs "
            f"{len(args.intervention)}), in the same seed order"
        )

    metric = args.metric
    if metric == "auto":
        first = read_predictions(prediction_file(args.baseline[0], args.split, args.epoch))
        metric = "squad_f1" if "answers" in next(iter(first.values())) else "accuracy"
    base, labels, ids, base_files = load_runs(args.baseline, args.split, args.epoch, metric)
    expt, expt_labels, _, expt_files = load_runs(args.intervention, args.split, args.epoch, metric, ids)
    if list(labels) != list(expt_labels):
        raise UserError(f"{expt_files[0]}: gold labels differ from the baseline's for the same ids")
    metric_fn = "mean" if metric.startswith("squad") else CORPUS_METRICS.get(metric, metric)
    result = multibootstrap(
        base, expt, labels, metric_fn, args.nboot, args.paired, args.seed, args.confidence,
        args.expect_negative_effect,
    )  # fmt: skip
    result.pop("samples")
    result["metric"], result["split"], result["num_examples"] = metric, args.split, len(ids)
    result["baseline_files"] = [str(f) for f in base_files]
    result["intervention_files"] = [str(f) for f in expt_files]

    kind = "paired" if args.paired else "unpaired"
    print(f"Multibootstrap ({kind}) of {metric} on {len(ids)} {args.split} examples, "
          f"{base.shape[0]} baseline / {expt.shape[0]} intervention seeds, {args.nboot} samples")  # fmt: skip
    c = f"{args.confidence:.0%} CI"
    for name, key in (("baseline", "baseline"), ("intervention", "intervention"), ("delta", "delta")):
        s = result[key]
        extra = f"  p = {s['p']:.3g}" if key == "delta" else ""
        print(f"  {name:<13} {s['mean']:.4f}  {c} [{s['low']:.4f}, {s['high']:.4f}]{extra}")
    if args.output_file:
        write_json_atomic(args.output_file, result)
    return result


if __name__ == "__main__":
    run_cli(main)
