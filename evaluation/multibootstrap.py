"""The multi-bootstrap of MultiBERTs (Sellam et al. 2022, appendix): resample seeds and examples together.

One bootstrap sample draws seeds with replacement (the same draw for both arms when paired, independent
draws otherwise) and one shared draw of examples with replacement; an arm's score is the mean over its
drawn seeds of metric(labels[jj], preds[seed, jj]). The effect is the intervention score minus the
baseline score; its mean and percentile interval come from the samples, and the p-value is the share of
samples with no effect in the expected direction (P(delta <= 0)), floored at 1/nboot as in the paper's code.
Draw order per sample (fixed, so results are reproducible): seeds (one draw if paired, else baseline then
intervention), then examples.

The command follows the reference (google-research/language multiberts/multibootstrap.py) by default:
runs are grouped by their pretraining seed id (several fine-tunings of one seed are averaged first),
--paired pairs the arms by seed id over the seeds common to both, and --seed starts numpy's RandomState,
the reference's stream, so the same seed gives the reference's samples, interval and p-value
(grouped_bootstrap_samples). --rows_as_seeds keeps our earlier reading (each run its own seed, paired by
order, bootstrap_samples with a numpy Generator).
"""

from collections.abc import Callable

import numpy as np

from evaluation.io import write_json_atomic
from evaluation.predictions import (
    CORPUS_METRICS,
    METRICS,
    load_runs,
    prediction_file,
    read_predictions,
    run_seeds,
)
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


def seed_groups(seeds) -> dict:
    """seed id -> row indices (in row order), keys sorted, like the reference's groupby('seed').groups."""
    groups: dict = {}
    for row, seed in enumerate(seeds):
        groups.setdefault(seed, []).append(row)
    return dict(sorted(groups.items()))


def grouped_bootstrap_samples(
    preds: np.ndarray,
    labels: np.ndarray,
    seeds,
    intervention,
    metric_fn: str | Callable = "accuracy",
    nboot: int = 500,
    paired: bool = False,
    rng: int | np.random.RandomState | np.random.Generator = 0,
    sample_seeds: bool = True,
    sample_examples: bool = True,
) -> np.ndarray:
    """[nboot, 2] (baseline, intervention) samples as the MultiBERTs reference computes them.

    preds [runs, examples]; seeds [runs] (any sortable ids) and intervention [runs] (bools) say which
    pretraining seed and arm each row is. Rows sharing (seed, arm), e.g. several fine-tunings of one
    pretraining seed, are averaged first, so each seed weighs the same; an arm's score is the mean over the
    drawn seeds. Paired: one draw from the seeds common to both arms (the others are left out, as the
    reference does); unpaired: a draw per arm from its sorted seeds. Then one shared draw of examples.
    An int rng seeds np.random.RandomState, the reference's stream: the same int gives its exact samples.
    """
    preds, labels = np.asarray(preds), np.asarray(labels)
    arm = np.asarray(intervention, dtype=bool)
    if preds.ndim != 2 or len(seeds) != len(preds) or len(arm) != len(preds):
        raise ValueError(f"preds must be [runs, examples] with one seed and arm per run: {preds.shape}")
    if labels.shape != (preds.shape[1],):
        raise ValueError(f"labels {labels.shape} do not match {preds.shape[1]} examples")
    seeds = list(seeds)
    base_groups = seed_groups([s for s, a in zip(seeds, arm) if not a])
    expt_groups = seed_groups([s for s, a in zip(seeds, arm) if a])
    base_rows, expt_rows = np.flatnonzero(~arm), np.flatnonzero(arm)  # arm-local index -> row of preds
    base_groups = {s: base_rows[ii] for s, ii in base_groups.items()}
    expt_groups = {s: expt_rows[ii] for s, ii in expt_groups.items()}
    if not base_groups or not expt_groups:
        raise ValueError("both arms need at least one run")
    if paired:
        # the reference's order of the common seeds (a set's iteration order) decides what each draw picks
        base_keys = expt_keys = list(set(base_groups).intersection(expt_groups))
        if not base_keys:
            raise ValueError("paired: the arms share no seed")
    else:
        base_keys, expt_keys = sorted(base_groups), sorted(expt_groups)
    rng = np.random.RandomState(rng) if isinstance(rng, (int, np.integer)) else rng
    n = preds.shape[1]
    per_example = PER_EXAMPLE_METRICS[metric_fn](labels, preds) if isinstance(metric_fn, str) else None

    def row_score(i, jj):
        if per_example is not None:
            return np.mean(per_example[i] if jj is None else per_example[i, jj])
        return metric_fn(labels if jj is None else labels[jj], preds[i] if jj is None else preds[i, jj])

    def arm_score(groups, drawn, jj):
        return np.mean([np.mean([row_score(i, jj) for i in groups[s]]) for s in drawn])

    def draw(keys):
        return [keys[k] for k in rng.choice(len(keys), size=len(keys), replace=True)]

    out = np.empty((nboot, 2))
    for b in range(nboot):
        base_drawn, expt_drawn = base_keys, expt_keys
        if sample_seeds:
            base_drawn = draw(base_keys)
            expt_drawn = base_drawn if paired else draw(expt_keys)
        jj = rng.choice(n, size=n, replace=True) if sample_examples else None
        out[b] = arm_score(base_groups, base_drawn, jj), arm_score(expt_groups, expt_drawn, jj)
    return out


def summarize(
    samples: np.ndarray,
    confidence: float = 0.95,
    expect_negative_effect: bool = False,
    abs_threshold: float | None = None,
    rel_threshold: float | None = None,
) -> dict:
    """Mean and percentile interval of each arm and of delta = intervention - baseline; the p-value; as the
    reference's report_ci, the share of samples with an effect of at least abs_threshold (delta) or
    rel_threshold (delta / baseline), negated thresholds when a negative effect is expected."""
    samples = np.asarray(samples, dtype=np.float64)
    q = [(1 - confidence) / 2, 1 - (1 - confidence) / 2]

    def stats(x):
        low, high = np.quantile(x, q)
        return {"mean": float(x.mean()), "low": float(low), "high": float(high)}

    delta = samples[:, 1] - samples[:, 0]
    p = np.mean(delta >= 0) if expect_negative_effect else np.mean(delta <= 0)
    out = {
        "baseline": stats(samples[:, 0]),
        "intervention": stats(samples[:, 1]),
        "delta": {**stats(delta), "p": float(max(p, 1.0 / len(samples)))},
        "confidence": confidence,
        "nboot": len(samples),
    }
    sign = -1.0 if expect_negative_effect else 1.0
    if abs_threshold is not None:
        out["p_abs_threshold"] = float(np.mean(sign * delta >= abs_threshold))
    if rel_threshold:
        out["p_rel_threshold"] = float(np.mean(sign * delta / samples[:, 0] >= rel_threshold))
    return out


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


def print_result(result: dict, title: str) -> None:
    print(title)
    c = f"{result['confidence']:.0%} CI"
    for name in ("baseline", "intervention", "delta"):
        s = result[name]
        extra = f"  p = {s['p']:.3g}" if name == "delta" else ""
        print(f"  {name:<13} {s['mean']:.4f}  {c} [{s['low']:.4f}, {s['high']:.4f}]{extra}")
    for key in ("p_abs_threshold", "p_rel_threshold"):
        if key in result:
            print(f"  {key:<13} {result[key]:.3f}")


def add_statistics_flags(parser) -> None:
    """Flags shared with evaluation.compare_suites."""
    parser.add_argument("--paired", action="store_true", help="pair the arms by seed id (the common seeds)")
    parser.add_argument("--nboot", type=int, default=1000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--expect_negative_effect", action="store_true", help="p-value for delta < 0 instead")
    parser.add_argument("--abs_threshold", type=float, default=None, help="also P(delta >= this)")
    parser.add_argument("--rel_threshold", type=float, default=None, help="also P(delta / baseline >= this)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    parser.add_argument("--output_file", default=None, help="write the statistics as JSON here")


def check_statistics_flags(args) -> None:
    if args.nboot < 1:
        raise UserError(f"--nboot must be >= 1, got {args.nboot}")
    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence must lie in (0, 1), got {args.confidence}")


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", nargs="+", required=True, help="baseline run dirs (fine-tunings)")
    parser.add_argument("--intervention", nargs="+", required=True, help="intervention run dirs")
    parser.add_argument(
        "--baseline_seeds",
        nargs="+",
        default=None,
        help="pretraining seed id of each --baseline run (default: from its run_args.json)",
    )
    parser.add_argument("--intervention_seeds", nargs="+", default=None, help="the same for --intervention")
    parser.add_argument(
        "--rows_as_seeds",
        action="store_true",
        help="each run its own seed, paired by order, numpy Generator draws (ours, not the "
        "reference's grouping)",
    )
    parser.add_argument("--split", default="test", help="split name in predictions/epoch_{E}_{split}.jsonl")
    parser.add_argument("--epoch", type=int, default=None, help="epoch to read (default: each run's last)")
    parser.add_argument(
        "--metric", default="auto", choices=("auto", *METRICS), help="auto: squad_f1 or accuracy"
    )
    add_statistics_flags(parser)
    args = parser.parse_args(argv)
    check_statistics_flags(args)
    if args.rows_as_seeds and args.paired and len(args.baseline) != len(args.intervention):
        raise UserError(
            f"--paired --rows_as_seeds needs as many --baseline as --intervention runs "
            f"({len(args.baseline)} vs {len(args.intervention)}), in the same seed order"
        )
    if not args.rows_as_seeds:  # seed ids first: a missing one is named before any file is read
        seeds = run_seeds(args.baseline, args.baseline_seeds, "baseline")
        seeds += run_seeds(args.intervention, args.intervention_seeds, "intervention")
        if args.paired and not set(seeds[: len(args.baseline)]) & set(seeds[len(args.baseline) :]):
            raise UserError("--paired: the baseline and intervention runs share no pretraining seed")

    metric = args.metric
    if metric == "auto":
        first = read_predictions(prediction_file(args.baseline[0], args.split, args.epoch))
        metric = "squad_f1" if "answers" in next(iter(first.values())) else "accuracy"
    base, labels, ids, base_files = load_runs(args.baseline, args.split, args.epoch, metric)
    expt, expt_labels, _, expt_files = load_runs(args.intervention, args.split, args.epoch, metric, ids)
    if list(labels) != list(expt_labels):
        raise UserError(f"{expt_files[0]}: gold labels differ from the baseline's for the same ids")
    metric_fn = "mean" if metric.startswith("squad") else CORPUS_METRICS.get(metric, metric)
    if args.rows_as_seeds:
        samples = bootstrap_samples(base, expt, labels, metric_fn, args.nboot, args.paired, args.seed)
    else:
        arm = [False] * len(base) + [True] * len(expt)
        samples = grouped_bootstrap_samples(
            np.concatenate([base, expt]), labels, seeds, arm, metric_fn, args.nboot, args.paired, args.seed
        )
    result = summarize(
        samples, args.confidence, args.expect_negative_effect, args.abs_threshold, args.rel_threshold
    )
    result.update(paired=args.paired, grouping="rows" if args.rows_as_seeds else "seed")
    result["metric"], result["split"], result["num_examples"] = metric, args.split, len(ids)
    if not args.rows_as_seeds:
        result["baseline_seeds"], result["intervention_seeds"] = seeds[: len(base)], seeds[len(base) :]
    result["baseline_files"] = [str(f) for f in base_files]
    result["intervention_files"] = [str(f) for f in expt_files]
    kind = "paired" if args.paired else "unpaired"
    print_result(
        result,
        f"Multibootstrap ({kind}) of {metric} on {len(ids)} {args.split} examples, "
        f"{base.shape[0]} baseline / {expt.shape[0]} intervention runs, {args.nboot} samples",
    )
    if args.output_file:
        write_json_atomic(args.output_file, result)
    return result


if __name__ == "__main__":
    run_cli(main)
