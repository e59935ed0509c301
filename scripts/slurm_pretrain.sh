#!/bin/bash
# Pretraining under SLURM, GPU or CPU partitions: one torchrun per node (srun), torchrun starts the ranks.
#
#   GPU:  sbatch --nodes 4 --gpus-per-node 8 --cpus-per-task 32 --time 48:00:00 \
#             scripts/slurm_pretrain.sh --config_file configs/recipes/multiberts.json --seed 0 \
#             --input_path PROCESSED --vocab_path tokenizer.json --output_dir runs/multiberts_seed0
#   CPU:  sbatch --nodes 1 --cpus-per-task 2 scripts/slurm_pretrain.sh ARGS...    (2 ranks, gloo)
#
# Ranks per node: $NPROC_PER_NODE if set, else the GPUs SLURM gave the node (SLURM_GPUS_ON_NODE or
# CUDA_VISIBLE_DEVICES), else the CPUs of the task (one single-threaded rank per CPU). The node count is
# sbatch's --nodes. Flags after the script name go to train_pretrain.py; --batch_size is the global batch
# (divisible by ranks x --gradient_accumulation). Resubmit the same command after a time limit, a crash
# or scancel: the run resumes from the newest checkpoint in --output_dir.
# Relative paths are relative to where you submit (sbatch's working folder). The repository is found
# from this file even when submitted from elsewhere ($BERT_REPO overrides), the
# interpreter is $PYTHON or the repository's .venv, the rendezvous port is derived from the job id (any
# number of jobs share a node; $MASTER_PORT overrides), and the processes run under srun, so scancel
# and time limits end them.
#SBATCH --job-name=bert-pretrain
#SBATCH --ntasks-per-node=1
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# sbatch runs a copy of this file from its spool folder: look where it was submitted from
find_repo() {
  local submitted candidate
  submitted=$(scontrol show job -o "${SLURM_JOB_ID:-0}" 2>/dev/null | grep -o ' Command=[^ ]*' | cut -d= -f2-) || true
  for candidate in "${BERT_REPO:-}" "$(dirname "$0")/.." "${submitted:+$(dirname "$submitted")/..}" \
      "${SLURM_SUBMIT_DIR:-}"; do
    if [ -n "$candidate" ] && [ -f "$candidate/train_pretrain.py" ]; then (cd "$candidate" && pwd); return; fi
  done
  echo "slurm_pretrain.sh: cannot find the repository (train_pretrain.py); set BERT_REPO" >&2
  exit 1
}
REPO=$(find_repo)
PYTHON=${PYTHON:-$( [ -x "$REPO/.venv/bin/python" ] && echo "$REPO/.venv/bin/python" || echo python3 )}

cpus=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-1}}
gpus=${SLURM_GPUS_ON_NODE:-0}
if [ "$gpus" = 0 ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  gpus=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .)
fi
if [ -n "${NPROC_PER_NODE:-}" ]; then
  nproc=$NPROC_PER_NODE
elif [ "$gpus" -gt 0 ]; then
  nproc=$gpus
else
  nproc=$cpus
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( cpus / nproc > 0 ? cpus / nproc : 1 ))}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)  # sed, not head: no SIGPIPE
MASTER_PORT=${MASTER_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
# a dead rank makes NCCL abort the survivors' collectives instead of hanging until the timeout
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
echo "slurm_pretrain.sh: job $SLURM_JOB_ID, $SLURM_NNODES node(s) x $nproc rank(s), GPUs per node $gpus," \
  "rendezvous $MASTER_ADDR:$MASTER_PORT, repository $REPO"

# torchrun starts each rank in a session of its own, out of reach of proctrack/pgid: a rank also ends
# when its torchrun dies, even by SIGKILL (PR_SET_PDEATHSIG, kept across exec)
rank='import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM)
if os.getppid() == 1:
    sys.exit("torchrun is gone")
os.execv(sys.executable, [sys.executable, "-u", *sys.argv[1:]])'
# exec: scancel's signal reaches srun, which ends its steps; --kill-on-bad-exit: a failed node ends the rest;
# --cpus-per-task: srun no longer inherits it from sbatch (SLURM >= 22.05): without it all ranks share 1 CPU
exec srun --kill-on-bad-exit=1 --nodes "$SLURM_NNODES" --ntasks-per-node 1 --cpus-per-task "$cpus" \
  "$PYTHON" -m torch.distributed.run \
  --nnodes "$SLURM_NNODES" \
  --nproc_per_node "$nproc" \
  --rdzv_id "$SLURM_JOB_ID" \
  --rdzv_backend c10d \
  --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" \
  --no-python "$PYTHON" -c "$rank" "$REPO/train_pretrain.py" "$@"
