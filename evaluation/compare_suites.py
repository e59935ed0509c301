"""Compare two suites (e.g. ELC-BERT vs BERT seeds) at one step from a sweep's results.csv: the multibootstrap
over seeds (the table holds one value per run, so seeds are resampled and examples are not).

    python -m evaluation.compare_suites --table SWEEP/results.csv --baseline 'bert_suite/*' \
        --intervention 'elc_suite/*' --step 10000 --evaluation blimp --metric overall [--paired]

--baseline / --intervention are shell patterns over the table's `run` column. Runs are grouped by their
`seed` (runs without one are their own seed); --paired pairs the arms on the seeds common to both, as
evaluation.multibootstrap does.
"""

from fnmatch import fnmatch
from pathlib import Path

import numpy as np

from evaluation.io import write_json_atomic
from evaluation.multibootstrap import (
    add_statistics_flags,
    check_statistics_flags,
    grouped_bootstrap_samples,
    print_result,
    summarize,
)
from evaluation.sweep_report import read_table
from utils.errors import ArgumentParser, UserError, run_cli


def arm_values(rows: list[dict], pattern: str, flag: str) -> tuple[list, list[float], list[str]]:
    """(seed ids, values, runs) of the rows whose run matches the pattern (one row per run)."""
    mine = sorted((r for r in rows if fnmatch(r["run"], pattern)), key=lambda r: r["run"])
    if not mine:
        raise UserError(
            f"--{flag} {pattern!r}: no run of the table matches at this step, evaluation and metric"
        )
    seeds = [r["seed"] if r["seed"] is not None else r["run"] for r in mine]
    return seeds, [r["value"] for r in mine], [r["run"] for r in mine]


def compare(rows, baseline: str, intervention: str, step: int, evaluation: str, metric: str, args) -> dict:
    rows = [r for r in rows if r["step"] == step and r["evaluation"] == evaluation and r["metric"] == metric]
    if not rows:
        raise UserError(f"--table: no rows for step {step}, evaluation {evaluation!r}, metric {metric!r}")
    base_seeds, base_values, base_runs = arm_values(rows, baseline, "baseline")
    expt_seeds, expt_values, expt_runs = arm_values(rows, intervention, "intervention")
    if set(base_runs) & set(expt_runs):
        raise UserError(f"run {sorted(set(base_runs) & set(expt_runs))[0]!r} matches both arms")
    if args.paired and not set(base_seeds) & set(expt_seeds):
        raise UserError("--paired: the two suites share no seed")
    values = np.array(base_values + expt_values)[:, None]  # [runs, 1]: one value per run
    arm = [False] * len(base_values) + [True] * len(expt_values)
    samples = grouped_bootstrap_samples(
        values,
        np.ones(1),
        base_seeds + expt_seeds,
        arm,
        "mean",
        args.nboot,
        args.paired,
        args.seed,
        sample_examples=False,
    )
    result = summarize(
        samples, args.confidence, args.expect_negative_effect, args.abs_threshold, args.rel_threshold
    )
    result.update(step=step, evaluation=evaluation, metric=metric, paired=args.paired)
    result.update(baseline_runs=base_runs, intervention_runs=expt_runs)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(
        description="Multibootstrap over seeds of two suites at one step of a sweep table"
    )
    parser.add_argument("--table", type=Path, required=True, help="a sweep's results.csv")
    parser.add_argument(
        "--baseline", required=True, help="pattern over the `run` column, e.g. 'bert_suite/*'"
    )
    parser.add_argument("--intervention", required=True, help="pattern over the `run` column")
    parser.add_argument("--step", type=int, required=True)
    parser.add_argument("--evaluation", default="blimp")
    parser.add_argument("--metric", default="overall")
    add_statistics_flags(parser)
    args = parser.parse_args(argv)
    check_statistics_flags(args)
    if not args.table.is_file():
        raise UserError(f"--table {args.table}: no such file")
    try:
        rows = read_table(args.table)
    except (KeyError, ValueError) as err:
        raise UserError(f"--table {args.table}: not a sweep results.csv ({err})") from None
    result = compare(rows, args.baseline, args.intervention, args.step, args.evaluation, args.metric, args)
    print_result(
        result,
        f"{args.evaluation} {args.metric} at step {args.step}: {args.intervention!r} vs "
        f"{args.baseline!r} ({len(result['intervention_runs'])} vs {len(result['baseline_runs'])} runs)",
    )
    if args.output_file:
        write_json_atomic(args.output_file, result)
    return result


if __name__ == "__main__":
    run_cli(main)
