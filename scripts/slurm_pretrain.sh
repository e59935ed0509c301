#!/bin/bash
# Multi-node pretraining under SLURM: one torchrun per node, torchrun starts one worker per GPU.
#
#   sbatch --nodes 4 scripts/slurm_pretrain.sh --config_file configs/recipes/multiberts.json --seed 0 \
#       --input_path PROCESSED --vocab_path tokenizer.json --output_dir runs/multiberts_seed0
#
# Resubmit the same command after a time limit or a crash: the run resumes from the newest checkpoint
# in --output_dir. --batch_size is the global batch (divisible by nodes x GPUs x --gradient_accumulation).
# Alternative without torchrun: `srun --ntasks-per-node GPUS python train_pretrain.py ...` (one task per
# GPU); train_pretrain.py then reads SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID / SLURM_NODELIST.
#SBATCH --job-name=bert-pretrain
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(nvidia-smi -L | wc -l)}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
# a dead rank makes NCCL abort the survivors' collectives instead of hanging until the timeout
export TORCH_NCCL_ASYNC_ERROR_HANDLING=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

# --kill-on-bad-exit: if one node's torchrun fails, SLURM ends the others too
srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
    --nnodes "$SLURM_NNODES" \
    --nproc_per_node "$GPUS_PER_NODE" \
    --rdzv_id "$SLURM_JOB_ID" \
    --rdzv_backend c10d \
    --rdzv_endpoint "$MASTER_ADDR:$MASTER_PORT" \
    train_pretrain.py "$@"
