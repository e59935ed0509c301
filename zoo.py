"""Model zoos: a population of BERTs from a grid spec (configs/zoo/*.json), with a manifest and analyses.

    python zoo.py plan configs/zoo/bert_zoo.json                 runs, states, disk, compute estimate
    python zoo.py run SPEC --zoo_dir DIR [--workers N] [--shard i/N] [--stage all|pretrain|finetune]
    python zoo.py slurm SPEC --zoo_dir DIR --shards N [--gpus_per_task G] [--submit]   an sbatch job array
    python zoo.py status --zoo_dir DIR                          done / running / failed / pending
    python zoo.py manifest --zoo_dir DIR                        rebuild manifest.jsonl + manifest.csv
    python zoo.py analyze --zoo_dir DIR                         agreement, weight statistics, ridge, sparsity

`run` is resumable: run it again (or resubmit the SLURM array) to finish a zoo. See zoo/ for the code.
"""

import argparse
import json
from pathlib import Path

from utils.errors import UserError, run_cli
from utils.files import check_output_dir, read_json, write_text_atomic


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 via run_cli
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="zoo.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    fmt = argparse.ArgumentDefaultsHelpFormatter

    def selection(q):
        q.add_argument(
            "--stage", default="all", choices=("all", "pretrain", "finetune"), help="runs of this stage"
        )
        q.add_argument(
            "--shard", default=None, help="i/N: this shard of a deterministic partition of the runs"
        )

    q = sub.add_parser("plan", help="print runs, states, disk and compute", formatter_class=fmt)
    q.add_argument("spec")
    q.add_argument("--zoo_dir", default=None, help="where the zoo would live (default runs/zoo/NAME)")
    selection(q)
    q = sub.add_parser("run", help="execute the zoo (resumable)", formatter_class=fmt)
    q.add_argument("spec")
    q.add_argument("--zoo_dir", required=True, help="the zoo folder: runs/, manifest.jsonl, manifest.csv")
    q.add_argument("--workers", type=int, default=1, help="runs at once, one GPU each (CUDA_VISIBLE_DEVICES)")
    q.add_argument(
        "--gpus",
        default=None,
        help="comma-separated GPU ids for the workers, or none (default: $CUDA_VISIBLE_DEVICES, else all)",
    )
    q.add_argument("--skip_failed", action="store_true", help="do not retry runs that failed before")
    selection(q)
    q = sub.add_parser(
        "slurm", help="write an sbatch job array, one shard per array task", formatter_class=fmt
    )
    q.add_argument("spec")
    q.add_argument("--zoo_dir", required=True)
    q.add_argument("--shards", type=int, required=True, help="array tasks")
    q.add_argument("--stage", default="all", choices=("all", "pretrain", "finetune"))
    q.add_argument("--gpus_per_task", type=int, default=0, help="GPUs per array task = workers; 0: CPU")
    q.add_argument("--cpus_per_task", type=int, default=1, help="CPUs per array task")
    q.add_argument("--workers", type=int, default=None, help="runs at once per task (default: GPUs, or 1)")
    q.add_argument("--time", default=None, help="time limit per task (default: the partition's; resubmit)")
    q.add_argument("--mem", default=None, help="memory per task, e.g. 16G (default: the partition's)")
    q.add_argument("--partition", default=None)
    q.add_argument("--account", default=None)
    q.add_argument("--submit", action="store_true", help="also submit the array with sbatch")
    q = sub.add_parser("status", help="summarise done, running, failed", formatter_class=fmt)
    q.add_argument("--zoo_dir", required=True)
    q = sub.add_parser("manifest", help="rebuild the manifest from the run folders", formatter_class=fmt)
    q.add_argument("--zoo_dir", required=True)
    q = sub.add_parser("analyze", help="weight-space analyses of a zoo", formatter_class=fmt)
    q.add_argument("--zoo_dir", required=True)
    q.add_argument("--output_dir", default=None, help="default ZOO_DIR/analysis")
    q.add_argument("--split", default="test", help="split of the agreement and the sparse twins' evaluation")
    q.add_argument("--levels", default="0.5,0.8,0.9", help="sparsity levels ('' = no sparsification)")
    q.add_argument("--scopes", default="global,layer", help="sparsification scopes: global, layer")
    q.add_argument("--save_sparse", action="store_true", help="also store the sparse twins' weights")
    q.add_argument("--layers", default=None, help="comma-separated tensor-name globs for the statistics")
    q.add_argument("--target", default=None, help="manifest column to predict (default metric.test.<first>)")
    q.add_argument("--seed", type=int, default=0, help="seed of the model-level split of the ridge")
    q.add_argument("--device", default="cpu", help="device of the sparse twins' evaluation")
    return p


def _spec_and_runs(args):
    from utils.shard import parse_shard
    from zoo.plan import expand, select
    from zoo.spec import load_spec

    spec = load_spec(args.spec)
    return spec, select(expand(spec), args.stage, parse_shard(args.shard))


def cmd_plan(args) -> None:
    from zoo.estimate import plan_report
    from zoo.plan import check_engines
    from zoo.spec import missing_inputs

    spec, runs = _spec_and_runs(args)
    check_engines(spec)
    zoo_dir = Path(args.zoo_dir or f"runs/zoo/{spec.name}")
    print(plan_report(spec, runs, zoo_dir, missing_inputs(spec)))


def check_same_spec(zoo_dir: Path, spec_path: Path) -> None:
    """A zoo folder holds one spec: another one (a changed grid, base model, split...) is refused, so
    zoo_spec.json and the manifest keep describing the models in the folder."""
    saved_path = zoo_dir / "zoo_spec.json"
    if not saved_path.is_file():
        return
    saved, new = read_json(saved_path), read_json(spec_path, "spec")
    if saved != new:
        keys = sorted(set(saved) | set(new)) if isinstance(saved, dict) and isinstance(new, dict) else []
        diff = next((k for k in keys if saved.get(k) != new.get(k)), None)
        raise UserError(
            f"--zoo_dir {zoo_dir} holds a zoo of another spec ({saved_path}"
            + (f" differs from {spec_path} in {diff!r}" if diff else f" differs from {spec_path}")
            + "): use another --zoo_dir, or the spec it was started with"
        )


def cmd_run(args) -> None:
    from zoo.manifest import write_manifest
    from zoo.plan import check_engines
    from zoo.runner import run_zoo
    from zoo.spec import missing_inputs

    check_same_spec(Path(args.zoo_dir), Path(args.spec))  # before anything else is read or written
    spec, runs = _spec_and_runs(args)
    problems = missing_inputs(spec)
    if problems:
        raise UserError(problems[0])
    check_engines(spec)
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    zoo_dir = Path(args.zoo_dir)
    check_output_dir(zoo_dir, "--zoo_dir")
    (zoo_dir / "runs").mkdir(parents=True, exist_ok=True)
    write_text_atomic(zoo_dir / "zoo_spec.json", Path(args.spec).read_text())  # status reads it
    gpus = [] if args.gpus == "none" else [g.strip() for g in args.gpus.split(",")] if args.gpus else None
    try:
        result = run_zoo(spec, zoo_dir, runs, args.workers, gpus, retry_failed=not args.skip_failed)
    except KeyboardInterrupt:  # scancel, a time limit, ctrl-c: the manifest still records what finished
        write_manifest(zoo_dir)
        raise
    rows = write_manifest(zoo_dir)
    print(
        f"{len(runs)} runs in this selection: {result['skipped']} already complete, {len(result['done'])} "
        f"completed now, {len(result['failed'])} failed, {len(result['blocked'])} blocked by a failed or "
        f"missing parent, {len(result['elsewhere'])} running elsewhere; manifest: {len(rows)} states in "
        f"{zoo_dir / 'manifest.csv'}"
    )
    for rid in result["failed"]:
        print(f"failed: {rid}: see {zoo_dir / 'runs' / rid / 'zoo.log'}")
    if result["failed"] or result["blocked"]:  # e.g. a SLURM array task then shows as FAILED
        raise SystemExit(1)


def cmd_slurm(args) -> None:
    from zoo.plan import expand, select
    from zoo.slurm import sbatch_script, submit
    from zoo.spec import load_spec

    spec = load_spec(args.spec)
    if args.shards < 1 or args.cpus_per_task < 1:
        raise UserError("--shards and --cpus_per_task must be >= 1")
    if args.gpus_per_task < 0 or (args.workers is not None and args.workers < 1):
        raise UserError("--gpus_per_task must be >= 0 (0: a CPU array) and --workers >= 1")
    runs = expand(spec)
    empty = sum(not select(runs, args.stage, (i, args.shards)) for i in range(args.shards))
    zoo_dir = Path(args.zoo_dir)
    (zoo_dir / "slurm").mkdir(parents=True, exist_ok=True)
    text = sbatch_script(
        spec.name,
        Path(args.spec),
        zoo_dir,
        args.shards,
        args.stage,
        args.gpus_per_task,
        args.cpus_per_task,
        args.time,
        args.partition,
        args.account,
        args.workers,
        args.mem,
    )
    path = zoo_dir / f"zoo_{args.stage}.sbatch"
    write_text_atomic(path, text)
    print(
        f"wrote {path}: {args.shards} array tasks"
        + (f" ({empty} with no runs: fewer shards would do)" * bool(empty))
    )
    if args.submit:
        print(f"submitted job array {submit(path)} (progress: python zoo.py status --zoo_dir {zoo_dir})")
    else:
        print(f"submit: sbatch {path}")


def cmd_status(args) -> None:
    from zoo import runs as rf
    from zoo.plan import expand
    from zoo.spec import load_spec

    zoo_dir = Path(args.zoo_dir)
    if not (zoo_dir / "zoo_spec.json").is_file():
        raise UserError(f"--zoo_dir {zoo_dir}: not a zoo (no zoo_spec.json; start it with zoo.py run)")
    runs = expand(load_spec(zoo_dir / "zoo_spec.json"))
    by_status, states, total = {}, 0, 0
    for r in runs:
        folder = rf.run_dir(zoo_dir, r.run_id)
        s = rf.status_of(folder)
        by_status.setdefault(s, []).append(r.run_id)
        total += len(r.state_epochs)
        states += (
            len(r.state_epochs)
            if s == "done"
            else len(rf.present_states(folder, rf.read_json(folder / "zoo_run.json")))
        )
    order = ("done", "running", "partial", "failed", "pending")
    print(
        f"{zoo_dir}: {len(runs)} runs ("
        + ", ".join(f"{len(by_status.get(k, []))} {k}" for k in order)
        + f"); {states}/{total} model states on disk"
    )
    for rid in by_status.get("running", []):
        lock = rf.read_json(rf.run_dir(zoo_dir, rid) / "zoo.lock") or {}
        print(f"running: {rid} on {lock.get('host')} (runner pid {lock.get('pid')})")
    for rid in by_status.get("failed", []):
        info = rf.read_json(rf.run_dir(zoo_dir, rid) / "zoo_failed.json") or {}
        last = (info.get("log_tail") or [""])[-1]
        print(f"failed: {rid}: {info.get('error')}" + (f": {last}" if last else ""))


def cmd_manifest(args) -> None:
    from zoo.manifest import write_manifest

    rows = write_manifest(Path(args.zoo_dir))
    stages = {}
    for r in rows:
        stages[r["stage"]] = stages.get(r["stage"], 0) + 1
    print(f"{len(rows)} states ({json.dumps(stages)}): {Path(args.zoo_dir) / 'manifest.csv'}")


def cmd_analyze(args) -> None:
    from zoo.analyses import analyze

    analyze(args)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    {
        "plan": cmd_plan,
        "run": cmd_run,
        "slurm": cmd_slurm,
        "status": cmd_status,
        "manifest": cmd_manifest,
        "analyze": cmd_analyze,
    }[args.command](args)


if __name__ == "__main__":
    run_cli(main)
