"""Seeds as a population (the MultiBERTs / EarlyBERTs suite): N from-scratch seeds of one recipe, one command.

    python -m zoo.suite --suite_dir SUITE --seeds 0-4 [--slurm [--submit]] -- TRAIN_PRETRAIN_FLAGS...

Seed K trains `train_pretrain.py FLAGS --seed K --output_dir SUITE/seed_K`, locally one after another
(default) or as one SLURM array task per seed (--slurm writes SUITE/suite.sbatch; --submit also runs
sbatch on it). Run the same command again to continue: finished seeds return at once, cut-short ones
resume from their newest checkpoint. Checkpoints are dense: the recipe's --checkpoint_steps, or `log`
(0, 1, 2, 4, ... and the final step) when neither the flags nor the recipe set them.
SUITE/suite.json names the runs and their seeds: hand SUITE to the sweep as it is,
    python -m evaluation.sweep --runs SUITE --evals blimp,mlm --output_dir SUITE_EVAL [--follow]
"""

import shlex
import subprocess
import sys
from pathlib import Path

from utils.errors import ArgumentParser, UserError, run_cli
from utils.files import read_json, write_json_atomic, write_text_atomic
from utils.paths import REPO_ROOT

SBATCH = """#!/bin/bash
# Seed suite {name}: seeds {seeds}, one array task each. Submit with `sbatch {script}`; submit it again
# after a time limit or a failure: every seed resumes from its newest checkpoint.
#SBATCH --job-name=suite-{name}
#SBATCH --array=0-{last}
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus-per-task={gpus}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --output={suite_dir}/slurm-%x-%A_%a.out
{extra}set -euo pipefail
cd {repo}
PYTHON=${{PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}}
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-4}}
SEEDS=({seed_list})
SEED=${{SEEDS[$SLURM_ARRAY_TASK_ID]}}
"$PYTHON" -m torch.distributed.run --standalone --nproc_per_node {gpus} train_pretrain.py \\
    {train_args} --seed "$SEED" --output_dir {suite_dir}/seed_"$SEED"
"""


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,1,7' or '0-2,9' -> sorted distinct seeds."""
    seeds = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            seeds.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected e.g. 0-4 or 0,1,7") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: need seeds >= 0")
    return sorted(seeds)


def seed_args(train_args: list[str], suite_dir: Path, seed: int) -> list[str]:
    return [*train_args, "--seed", str(seed), "--output_dir", str(suite_dir / f"seed_{seed}")]


def check_train_args(train_args: list[str], suite_dir: Path, seed: int) -> list[str]:
    """Validate the flags with train_pretrain's own parser; add dense checkpoints when none are set."""
    from train_pretrain import parse_args

    for flag in ("--seed", "--output_dir", "--init_seed", "--data_seed"):
        if any(a == flag or a.startswith(flag + "=") for a in train_args):
            raise UserError(f"{flag} is set per seed by the suite: leave it out of the training flags")
    parsed = parse_args(seed_args(train_args, suite_dir, seed))
    if parsed.checkpoint_steps in (None, "none"):
        train_args = [*train_args, "--checkpoint_steps", "log"]
    return train_args


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = ArgumentParser(description="N seeds of a pretraining recipe, locally or as a SLURM array")
    parser.add_argument("--suite_dir", type=Path, required=True, help="SUITE/seed_K/ runs and suite.json")
    parser.add_argument("--seeds", required=True, help="e.g. 0-4 (MultiBERTs: 25 seeds, 0-24)")
    parser.add_argument("--slurm", action="store_true", help="write SUITE/suite.sbatch instead of running")
    parser.add_argument("--submit", action="store_true", help="with --slurm: also sbatch it")
    parser.add_argument("--gpus", type=int, default=1, help="--slurm: GPUs per seed (torchrun workers)")
    parser.add_argument("--cpus", type=int, default=8, help="--slurm: CPUs per seed")
    parser.add_argument("--time", default="48:00:00", help="--slurm: time limit per array task")
    parser.add_argument("--partition", default=None, help="--slurm: partition")
    args = parser.parse_args(own)
    if not train_args:
        raise UserError("no training flags: put train_pretrain.py's flags after `--`")
    if args.submit and not args.slurm:
        raise UserError("--submit needs --slurm")
    seeds = parse_seeds(args.seeds)
    suite_dir = args.suite_dir.resolve()
    train_args = check_train_args(train_args, suite_dir, seeds[0])
    record = {"runs": [{"name": f"seed_{s}", "seed": s} for s in seeds], "train_args": train_args}
    previous = (
        read_json(suite_dir / "suite.json", "suite file") if (suite_dir / "suite.json").is_file() else None
    )
    if previous is not None and previous.get("train_args") != train_args:
        raise UserError(f"--suite_dir {suite_dir}: made with other training flags ({suite_dir}/suite.json)")
    if previous is not None:  # more seeds later: keep the ones listed before
        known = {r["name"]: r for r in previous.get("runs", [])}
        record["runs"] = sorted(
            {**known, **{r["name"]: r for r in record["runs"]}}.values(), key=lambda r: r["seed"]
        )
    write_json_atomic(suite_dir / "suite.json", record)
    sweep = f"python -m evaluation.sweep --runs {suite_dir} --evals blimp --output_dir {suite_dir}_eval"
    if args.slurm:
        script = suite_dir / "suite.sbatch"
        extra = f"#SBATCH --partition={args.partition}\n" if args.partition else ""
        write_text_atomic(
            script,
            SBATCH.format(
                name=suite_dir.name,
                seeds=args.seeds,
                script=script,
                last=len(seeds) - 1,
                gpus=args.gpus,
                cpus=args.cpus,
                time=args.time,
                suite_dir=shlex.quote(str(suite_dir)),
                extra=extra,
                repo=shlex.quote(str(REPO_ROOT)),
                seed_list=" ".join(map(str, seeds)),
                train_args=shlex.join(train_args),
            ),
        )
        print(f"wrote {script} ({len(seeds)} array tasks)")
        if args.submit:
            try:
                subprocess.run(["sbatch", str(script)], check=True)
            except FileNotFoundError:
                raise UserError("--submit: sbatch not found (is this a SLURM login node?)") from None
            except subprocess.CalledProcessError as err:
                raise UserError(f"--submit: sbatch {script} failed with exit code {err.returncode}") from None
        print(f"then (or meanwhile, with --follow): {sweep}")
        return record
    import train_pretrain

    for seed in seeds:
        print(f"suite {suite_dir.name}: seed {seed}", flush=True)
        train_pretrain.main(seed_args(train_args, suite_dir, seed))
    print(f"suite done: {len(seeds)} seed(s) in {suite_dir}; next: {sweep}")
    return record


if __name__ == "__main__":
    run_cli(main)
