"""An sbatch job array for a zoo: array task i runs `zoo.py run SPEC --shard i/N` on one node.

SLURM is the multi-node engine (no scheduler of our own): shards are a deterministic partition of the
runs (zoo.plan.select), each array task executes its shard with one worker per GPU it was given (CPU
arrays: --workers engines sharing the task's CPUs), and resubmitting the same script resumes (completed
states are skipped, cut-short runs resume). A task whose runs did not all complete exits non-zero
(`zoo.py run` does), so SLURM shows it as FAILED; the manifest still records what finished.
"""

import shlex
import shutil
import subprocess
from pathlib import Path

from utils.errors import UserError
from utils.paths import REPO_ROOT

TEMPLATE = """#!/bin/bash
# Model zoo {name}: {shards} shard(s) of the {stage} stage, one per array task. Submit with
#   sbatch {script}
# and submit it again after a time limit or a failure: finished states are skipped, cut-short runs resume.
# Progress: python zoo.py status --zoo_dir {zoo_dir}
#SBATCH --job-name=zoo-{name}
#SBATCH --array=0-{last}
#SBATCH --nodes=1
#SBATCH --ntasks=1
{resources}#SBATCH --output={log_dir}/%x-%A_%a.out
{extra}set -euo pipefail
cd {repo}
PYTHON=${{PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}}
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{threads}}}
{gpu_lines}# exec: scancel's SIGTERM reaches the runner, which stops its engines; its exit code is the task's
exec "$PYTHON" zoo.py run {spec} --zoo_dir {zoo_dir} --stage {stage} \\
    --shard "$SLURM_ARRAY_TASK_ID/{shards}" --workers {workers}{gpus_flag}
"""


def sbatch_script(
    name: str,
    spec_path: Path,
    zoo_dir: Path,
    shards: int,
    stage: str = "all",
    gpus: int = 0,
    cpus: int = 1,
    time: str | None = None,
    partition: str | None = None,
    account: str | None = None,
    workers: int | None = None,
    mem: str | None = None,
) -> str:
    """The array script. gpus=0: a CPU array with `workers` (default 1) engines per task, the task's
    CPUs split between them; gpus>0: one worker per GPU. time/mem/partition/account None: the cluster's
    defaults (a request the partition cannot meet would pend forever)."""
    workers = workers or max(gpus, 1)
    script = Path(zoo_dir) / f"zoo_{stage}.sbatch"

    def lines(options):
        return "".join(f"#SBATCH --{key}={value}\n" for key, value in options if value)

    gpu_lines = (
        "# SLURM sets CUDA_VISIBLE_DEVICES to this task's GPUs: zoo.py gives one to each worker\n"
        if gpus
        else f"# CPU only, even on a GPU node: {workers} engine(s) at once share the task's {cpus} CPU(s)\n"
        "export CUDA_VISIBLE_DEVICES=\n"
    )
    return TEMPLATE.format(
        name=name,
        shards=shards,
        last=shards - 1,
        stage=stage,
        resources=lines(
            [("gpus-per-task", gpus or None), ("cpus-per-task", cpus), ("time", time), ("mem", mem)]
        ),
        extra=lines([("partition", partition), ("account", account)]),
        threads=max(1, cpus // workers),
        workers=workers,
        gpu_lines=gpu_lines,
        gpus_flag="" if gpus else " --gpus none",
        script=shlex.quote(str(script)),
        log_dir=Path(zoo_dir).resolve() / "slurm",
        repo=shlex.quote(str(REPO_ROOT)),
        spec=shlex.quote(str(Path(spec_path).resolve())),
        zoo_dir=shlex.quote(str(Path(zoo_dir).resolve())),
    )


def submit(script: Path) -> str:
    """sbatch the script; returns the job id."""
    if shutil.which("sbatch") is None:
        raise UserError("--submit: sbatch not found (is this a SLURM login node?)")
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise UserError(f"--submit: sbatch {script} failed: {lines[-1]}")
    return done.stdout.strip().split(";")[0]
