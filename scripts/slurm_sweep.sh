#!/bin/bash
# The evaluation sweep under SLURM: a job array of N tasks, task i runs
# `python -m evaluation.sweep ARGS --shard i/N` (its share of the runs x evaluations).
#
#   bash scripts/slurm_sweep.sh --shards 8 [SBATCH OPTIONS] -- --runs RUN... --evals EVAL... --output_dir DIR
#
# Run it with bash on a login node: it submits the array and prints its id. SBATCH OPTIONS (e.g.
# --partition gpu --gpus-per-task 1 --time 4:00:00) apply to every task; without them the cluster's
# defaults apply (CPU). Resubmit the same command to redo what is missing. Relative paths are relative
# to where you run it. $PYTHON names the interpreter (default: the repository's .venv, else python3).
# Logs: slurm-bert-sweep-JOBID.out.
#SBATCH --job-name=bert-sweep
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# ---- inside a task: the submitter set BERT_SLURM_ROLE, BERT_REPO (sbatch runs a copy of this file) ----
if [ "${BERT_SLURM_ROLE:-}" = shard ]; then
  export PYTHONPATH=$BERT_REPO${PYTHONPATH:+:$PYTHONPATH}  # -m evaluation.sweep from any folder
  exec "$PYTHON" -m evaluation.sweep "$@" --shard "$SLURM_ARRAY_TASK_ID/$BERT_SLURM_SHARDS"
fi

# ---- on the login node: submit the array ----
fail() { echo "slurm_sweep.sh: $1" >&2; exit 2; }
[ -z "${SLURM_JOB_ID:-}" ] || fail "run it with bash (it submits the array itself), not with sbatch"
[ "${1:-}" = --shards ] && [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || fail "usage: $0 --shards N [SBATCH OPTIONS] -- SWEEP FLAGS"
shards=$2
shift 2
sbatch_options=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sbatch_options+=("$1"); shift; done
[ "${1:-}" = -- ] || fail "no '--' before the evaluation.sweep flags"
shift
command -v sbatch >/dev/null || fail "sbatch not found (is this a SLURM login node?)"
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}

export BERT_REPO=$repo BERT_SLURM_SHARDS=$shards PYTHON=$python
array=$(BERT_SLURM_ROLE=shard sbatch --parsable --array "0-$((shards - 1))" "${sbatch_options[@]}" "$0" "$@")
echo "submitted evaluation sweep array ${array%%;*} ($shards tasks)"
