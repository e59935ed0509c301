"""A sweep's report, rebuilt from its result files: one tidy table, one figure per measure, an index page.

DIR/results.csv: one row per (run, seed, step, tokens seen, evaluation, metric, value), sorted.
DIR/figures/EVALUATION__METRIC.png: the measure against the step (log axis; step 0 on a linear stretch),
one line per suite folder (mean over its runs = seeds) with a band from the lowest to the highest run, or
one line per run (--group_by run). Metrics whose name holds a '/' are in the table only.
DIR/index.md: the figures, each under its title, and the table's location.
"""

import csv
import io
import json
from pathlib import Path

import numpy as np

from evaluation.io import write_text_atomic

COLUMNS = ["run", "seed", "step", "tokens_seen", "evaluation", "metric", "value"]


def collect_rows(output_dir: Path) -> list[dict]:
    rows = []
    for f in sorted((Path(output_dir) / "results").glob("**/step_*/*.json")):
        try:
            rec = json.loads(f.read_text())
        except (OSError, ValueError):  # only complete files exist (atomic writes); skip anything else
            continue
        for metric, value in rec["metrics"].items():
            rows.append(
                {
                    "run": rec["run"],
                    "seed": rec["seed"],
                    "step": rec["step"],
                    "tokens_seen": rec["tokens_seen"],
                    "evaluation": rec["evaluation"],
                    "metric": metric,
                    "value": value,
                }
            )
    rows.sort(key=lambda r: (r["run"], r["step"], r["evaluation"], r["metric"]))
    return rows


def write_table(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: ("" if r[k] is None else repr(r[k]) if isinstance(r[k], float) else r[k]) for k in COLUMNS}
        )
    write_text_atomic(path, buf.getvalue())


def read_table(path: Path) -> list[dict]:
    """results.csv back as rows (step, seed, tokens_seen as ints where set; value as float)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["value"] = float(r["value"])
        for k in ("step", "seed", "tokens_seen"):
            r[k] = int(r[k]) if r[k] not in ("", None) else None
    return rows


def group_of(run: str, group_by: str) -> str:
    return run.rsplit("/", 1)[0] if group_by == "suite" and "/" in run else run


def plot_measure(rows: list[dict], title: str, path: Path, group_by: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    groups = sorted({group_of(r["run"], group_by) for r in rows})
    for group in groups:
        mine = [r for r in rows if group_of(r["run"], group_by) == group]
        steps = sorted({r["step"] for r in mine})
        values = [[r["value"] for r in mine if r["step"] == s] for s in steps]
        mean = [float(np.mean(v)) for v in values]
        runs = len({r["run"] for r in mine})
        line = ax.plot(steps, mean, marker="o", ms=3, label=f"{group} ({runs} run{'s' * (runs > 1)})")[0]
        if runs > 1:
            ax.fill_between(
                steps,
                [min(v) for v in values],
                [max(v) for v in values],
                color=line.get_color(),
                alpha=0.2,
                lw=0,
            )
    all_steps = [r["step"] for r in rows]
    if min(all_steps) <= 0:
        ax.set_xscale("symlog", linthresh=1)
    else:
        ax.set_xscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(title.split(": ", 1)[-1])
    ax.set_title(f"{title} (mean; band: min-max over runs)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from utils.files import atomic_write

    atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_report(output_dir: Path, group_by: str = "suite") -> list[dict]:
    """results.csv, figures/*.png and index.md from every result file present. Returns the rows."""
    output_dir = Path(output_dir)
    rows = collect_rows(output_dir)
    write_table(rows, output_dir / "results.csv")
    measures = sorted({(r["evaluation"], r["metric"]) for r in rows if "/" not in r["metric"]})
    lines = [
        "# Sweep results",
        "",
        f"Table: [results.csv](results.csv) ({len(rows)} rows; {len({r['run'] for r in rows})} runs).",
        "",
    ]
    for evaluation, metric in measures:
        name = f"{evaluation}__{metric}.png"
        mine = [r for r in rows if r["evaluation"] == evaluation and r["metric"] == metric]
        plot_measure(mine, f"{evaluation}: {metric}", output_dir / "figures" / name, group_by)
        lines += [f"## {evaluation}: {metric}", "", f"![{evaluation} {metric}](figures/{name})", ""]
    write_text_atomic(output_dir / "index.md", "\n".join(lines))
    return rows
