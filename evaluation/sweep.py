"""Evaluate every checkpoint of every run (or of a suite or zoo folder) and gather one table and figures.

    python -m evaluation.sweep --runs RUN_OR_SUITE_DIR ... --evals blimp,mlm,probing,finetune \
        --output_dir DIR [--shard I/N] [--follow]

A run is a folder with checkpoints/step_N/ (or run_args.json: still starting); a suite (zoo.suite) or zoo
folder is searched for runs (3 levels deep; suite.json also names runs not started yet). Each evaluation
of each checkpoint is one result file, DIR/results/RUN/step_N/EVAL.json, written atomically after it is
computed: a rerun skips what exists, so a sweep killed at any moment (kill -9 included) continues where it
stopped. --shard I/N evaluates the checkpoints whose crc32("RUN:STEP") % N == I (a SLURM array: one shard
per task; the checkpoints, not the evaluations, are split so each model is loaded once). --follow keeps
polling for new checkpoints until every run has its final step (run_args.json's max_steps). The settings
of each evaluation are fixed per DIR (DIR/sweep.json): a rerun with other settings is refused.
After the work, DIR/results.csv, DIR/figures/*.png and DIR/index.md are rebuilt from all result files
(every shard's): see evaluation.sweep_report.
"""

import json
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from evaluation.checkpoints import find_checkpoints, load_checkpoint, pick_device, resolve_vocab
from evaluation.io import write_json_atomic
from evaluation.sweep_evals import EVALUATORS, add_eval_flags, eval_settings, make_evaluator
from evaluation.sweep_report import write_report
from utils.errors import ArgumentParser, UserError, run_cli
from utils.shard import parse_shard

MAX_DEPTH = 3  # how deep a suite or zoo folder is searched for runs


@dataclass
class Run:
    name: str  # the table's `run`: the folder's name, or SUITE/relative/path for runs found inside a folder
    path: Path
    seed: int | None = None
    checkpoints: list = field(default_factory=list)  # [(step, dir)] sorted
    finished: bool = False


def _read(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def _is_run(d: Path) -> bool:
    return (d / "checkpoints").is_dir() or (d / "run_args.json").is_file()


def load_run(path: Path, name: str, seed: int | None = None) -> Run:
    """A run's checkpoints (none yet is fine), its seed (init seed) and whether it reached max_steps."""
    args = _read(path / "run_args.json")
    if seed is None:
        seed = args.get("init_seed") if args.get("init_seed") is not None else args.get("seed")
        seed = seed if seed is not None else _read(path / "zoo_run.json").get("seed")
    checkpoints = []
    if (path / "checkpoints").is_dir():
        try:
            checkpoints = find_checkpoints(path)
        except UserError:  # no complete checkpoint yet
            checkpoints = []
    max_steps = args.get("max_steps")
    finished = (path / "zoo_done.json").is_file() or (
        max_steps is not None and any(s == max_steps for s, _ in checkpoints)
    )
    return Run(name, path, seed, checkpoints, finished)


def discover(paths: list[str]) -> list[Run]:
    """The runs named by --runs: run folders themselves, or every run inside a suite or zoo folder."""
    runs = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise UserError(f"--runs {p}: no such directory")
        if _is_run(p):
            runs.append(load_run(p, p.resolve().name))
            continue
        suite = _read(p / "suite.json")
        listed = {
            r["name"]: r.get("seed") for r in suite.get("runs", []) if isinstance(r, dict) and "name" in r
        }
        found = set()
        for root, dirs, _ in os.walk(p):
            depth = len(Path(root).relative_to(p).parts)
            if Path(root) != p and _is_run(Path(root)):
                found.add(Path(root).relative_to(p).as_posix())
                dirs.clear()  # a run's own folders hold no runs
            elif depth >= MAX_DEPTH:
                dirs.clear()
            dirs.sort()
        if not found and not listed:
            raise UserError(f"--runs {p}: neither a run (checkpoints/step_N/) nor a folder of runs")
        for rel in sorted(found | set(listed)):
            runs.append(load_run(p / rel, f"{p.resolve().name}/{rel}", listed.get(rel)))
    names = [r.name for r in runs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"--runs: two runs are both named {dup!r} in the table; give distinct folders")
    return runs


def in_shard(run: str, step: int, shard: tuple[int, int]) -> bool:
    return zlib.crc32(f"{run}:{step}".encode()) % shard[1] == shard[0]


def result_path(output_dir: Path, run: str, step: int, evaluation: str) -> Path:
    return output_dir / "results" / run / f"step_{step}" / f"{evaluation}.json"


def check_settings(output_dir: Path, settings: dict) -> None:
    """Record each evaluation's settings in DIR/sweep.json; refuse a rerun that changes them."""
    path = output_dir / "sweep.json"
    known = _read(path).get("evals", {}) if path.is_file() else {}
    for name, s in settings.items():
        old = known.get(name)
        if old is not None and old != s:
            key = next(k for k in sorted(set(old) | set(s)) if old.get(k) != s.get(k))
            raise UserError(
                f"--output_dir {output_dir}: its {name} results were made with {key}={old.get(key)!r}, "
                f"not {s.get(key)!r}; use another --output_dir (or the same settings)"
            )
    if any(name not in known for name in settings):
        write_json_atomic(path, {"evals": {**known, **settings}})


def pending_tasks(runs: list[Run], evals: list[str], output_dir: Path, shard, steps) -> list[tuple]:
    """(run, step, checkpoint dir, evaluations still missing) of this shard, in run then step order."""
    tasks = []
    for run in runs:
        for step, ckpt in run.checkpoints:
            if steps is not None and step not in steps:
                continue
            if step is None or not in_shard(run.name, step, shard):
                continue
            todo = [e for e in evals if not result_path(output_dir, run.name, step, e).is_file()]
            if todo:
                tasks.append((run, step, ckpt, todo))
    return tasks


def evaluate_checkpoint(run: Run, step: int, ckpt: Path, todo: list[str], evaluators: dict, args, device):
    """Load the checkpoint once, run each missing evaluation, write each result as soon as it is done."""
    from data.tokenization import load_tokenizer

    vocab = resolve_vocab(ckpt, args.vocab_path)
    model = load_checkpoint(ckpt, device)
    tokenizer = load_tokenizer(vocab)
    tokens_seen = _read(ckpt / "checkpoint.json").get("tokens_seen")
    for name in todo:
        start = time.perf_counter()
        folder = result_path(args.output_dir, run.name, step, name).parent
        metrics = evaluators[name].evaluate(model, tokenizer, vocab, ckpt, device, folder)
        seconds = time.perf_counter() - start
        record = {
            "run": run.name,
            "seed": run.seed,
            "step": step,
            "tokens_seen": tokens_seen,
            "evaluation": name,
            "metrics": metrics,
            "checkpoint": str(ckpt.resolve()),
            "seconds": round(seconds, 3),
        }
        write_json_atomic(result_path(args.output_dir, run.name, step, name), record)
        print(f"{run.name} step {step}: {name} in {seconds:.1f}s", flush=True)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Evaluate every checkpoint of runs/suites: one table, figures, index")
    parser.add_argument("--runs", nargs="+", required=True, help="run folders, suite folders or zoo folders")
    parser.add_argument("--evals", default="blimp", help=f"comma-separated, of: {', '.join(EVALUATORS)}")
    parser.add_argument(
        "--output_dir", type=Path, required=True, help="results/, results.csv, figures/, index.md"
    )
    parser.add_argument(
        "--shard", default=None, help="I/N: this job's share of the checkpoints (SLURM array)"
    )
    parser.add_argument("--follow", action="store_true", help="keep evaluating new checkpoints as they land")
    parser.add_argument("--poll_seconds", type=float, default=60.0, help="--follow: wait between looks")
    parser.add_argument(
        "--follow_timeout",
        type=float,
        default=None,
        help="--follow: stop after this many seconds without a new checkpoint",
    )
    parser.add_argument("--steps", default=None, help="only these steps (comma-separated)")
    parser.add_argument(
        "--group_by",
        default="suite",
        choices=("suite", "run"),
        help="figures: one line (mean, band) per suite folder, or per run",
    )
    parser.add_argument("--vocab_path", default=None, help="tokenizer JSON (default: each checkpoint's)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--no_report", action="store_true", help="write result files only (shards)")
    add_eval_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    evals = [e.strip() for e in args.evals.split(",") if e.strip()]
    unknown = [e for e in evals if e not in EVALUATORS]
    if not evals or unknown:
        raise UserError(
            f"--evals {args.evals!r}: unknown {unknown[0]!r}" if unknown else "--evals: none given"
        )
    shard = parse_shard(args.shard)
    try:
        steps = None if args.steps is None else {int(s) for s in args.steps.split(",")}
    except ValueError:
        raise UserError(f"--steps {args.steps!r}: expected comma-separated integers") from None
    if args.poll_seconds <= 0:
        raise UserError(f"--poll_seconds must be > 0, got {args.poll_seconds}")
    # everything is checked before the first (slow) model runs: runs, settings, data files
    runs = discover(args.runs)
    settings = {e: eval_settings(e, args) for e in evals}
    evaluators = {e: make_evaluator(e, args) for e in evals}
    check_settings(args.output_dir, settings)
    device = pick_device(args.device)
    evaluated, last_new = 0, time.monotonic()
    while True:
        tasks = pending_tasks(runs, evals, args.output_dir, shard, steps)
        for run, step, ckpt, todo in tasks:
            evaluate_checkpoint(run, step, ckpt, todo, evaluators, args, device)
            evaluated += len(todo)
        if tasks:
            last_new = time.monotonic()
            if args.follow and not args.no_report:  # the table and figures grow while following
                write_report(args.output_dir, args.group_by)
        if not args.follow or all(r.finished for r in runs):  # a finished run had all its checkpoints
            break
        if args.follow_timeout is not None and time.monotonic() - last_new > args.follow_timeout:
            print(f"--follow: no new checkpoint for {args.follow_timeout:.0f}s; stopping", flush=True)
            break
        time.sleep(args.poll_seconds)
        runs = discover(args.runs)
    rows = [] if args.no_report else write_report(args.output_dir, args.group_by)
    print(
        f"evaluated {evaluated} (run, step, evaluation) result(s); table: {len(rows)} rows in "
        f"{args.output_dir / 'results.csv'}"
    )
    return {"evaluated": evaluated, "rows": rows}


if __name__ == "__main__":
    run_cli(main)
