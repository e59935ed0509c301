#!/bin/bash
# Sharded preprocessing under SLURM: a job array of N tasks (task i runs
# `data/preprocess.py ARGS --shard i/N`), then a merge job (`data/preprocess.py --merge --output_dir OUT`)
# that starts once every task succeeded and is cancelled if one failed.
#
#   bash scripts/slurm_preprocess.sh --shards 8 [SBATCH OPTIONS] -- \
#       --input_path IN --vocab_path TOK --output_dir OUT [more data/preprocess.py flags]
#
# Run it with bash on a login node: it submits both jobs and prints their ids. SBATCH OPTIONS (e.g.
# --partition cpu --time 2:00:00 --cpus-per-task 1) apply to the tasks and to the merge job; without
# them the cluster's defaults apply. Relative paths are relative to where you run it. $PYTHON names the
# interpreter (default: the repository's .venv, else python3). Logs: slurm-bert-preprocess*-JOBID.out.
#SBATCH --job-name=bert-preprocess
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# ---- inside a job: the submitter set BERT_SLURM_ROLE, BERT_REPO (sbatch runs a copy of this file) ----
if [ "${BERT_SLURM_ROLE:-}" = shard ]; then
  exec "$PYTHON" "$BERT_REPO/data/preprocess.py" "$@" --shard "$SLURM_ARRAY_TASK_ID/$BERT_SLURM_SHARDS"
elif [ "${BERT_SLURM_ROLE:-}" = merge ]; then
  exec "$PYTHON" "$BERT_REPO/data/preprocess.py" --merge --output_dir "$1"
fi

# ---- on the login node: submit the array and the merge job ----
fail() { echo "slurm_preprocess.sh: $1" >&2; exit 2; }
[ -z "${SLURM_JOB_ID:-}" ] || fail "run it with bash (it submits the jobs itself), not with sbatch"
[ "${1:-}" = --shards ] && [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || fail "usage: $0 --shards N [SBATCH OPTIONS] -- PREPROCESS FLAGS"
shards=$2
shift 2
sbatch_options=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sbatch_options+=("$1"); shift; done
[ "${1:-}" = -- ] || fail "no '--' before the data/preprocess.py flags"
shift
output_dir=
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --output_dir) j=$((i + 1)); output_dir=${!j:-} ;;
    --output_dir=*) output_dir=${!i#--output_dir=} ;;
  esac
done
[ -n "$output_dir" ] || fail "--output_dir is required (the merge job needs it)"
command -v sbatch >/dev/null || fail "sbatch not found (is this a SLURM login node?)"
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$( [ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3 )}

export BERT_REPO=$repo BERT_SLURM_SHARDS=$shards PYTHON=$python
array=$(BERT_SLURM_ROLE=shard sbatch --parsable --array "0-$((shards - 1))" "${sbatch_options[@]}" "$0" "$@")
array=${array%%;*}
merge=$(BERT_SLURM_ROLE=merge sbatch --parsable --job-name bert-preprocess-merge \
  --dependency "afterok:$array" --kill-on-invalid-dep=yes "${sbatch_options[@]}" "$0" "$output_dir")
echo "submitted preprocessing array $array ($shards tasks) and merge job ${merge%%;*} (runs after all succeeded)"
