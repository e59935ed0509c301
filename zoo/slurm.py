"""An sbatch job array for a zoo: array task i runs `zoo.py run SPEC --shard i/N` on one node.

SLURM is the multi-node engine (no scheduler of our own): shards are a deterministic partition of the
runs (zoo.plan.select), each array task executes its shard with one worker per GPU it was given, and
resubmitting the same script resumes (completed states are skipped, cut-short runs resume).
"""

import shlex
from pathlib import Path

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
#SBATCH --gpus-per-task={gpus}
#SBATCH --cpus-per-task={cpus}
#SBATCH --time={time}
#SBATCH --output={log_dir}/%x-%A_%a.out
{extra}set -euo pipefail
cd {repo}
PYTHON=${{PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}}
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-4}}
# SLURM sets CUDA_VISIBLE_DEVICES to this task's GPUs: zoo.py gives one to each worker
"$PYTHON" zoo.py run {spec} --zoo_dir {zoo_dir} --stage {stage} \\
    --shard "$SLURM_ARRAY_TASK_ID/{shards}" --workers {gpus}
"""


def sbatch_script(
    name: str,
    spec_path: Path,
    zoo_dir: Path,
    shards: int,
    stage: str = "all",
    gpus: int = 1,
    cpus: int = 8,
    time: str = "24:00:00",
    partition: str | None = None,
    account: str | None = None,
) -> str:
    script = Path(zoo_dir) / f"zoo_{stage}.sbatch"
    extra = "".join(
        f"#SBATCH --{key}={value}\n"
        for key, value in (("partition", partition), ("account", account))
        if value
    )
    return TEMPLATE.format(
        name=name,
        shards=shards,
        last=shards - 1,
        stage=stage,
        gpus=gpus,
        cpus=cpus,
        time=time,
        extra=extra,
        script=shlex.quote(str(script)),
        log_dir=Path(zoo_dir).resolve() / "slurm",
        repo=shlex.quote(str(REPO_ROOT)),
        spec=shlex.quote(str(Path(spec_path).resolve())),
        zoo_dir=shlex.quote(str(Path(zoo_dir).resolve())),
    )
