"""Process-group setup for torchrun, SLURM srun, or a single process; rank helpers.

Who started us decides the ranks:
- torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT;
- `srun python train_pretrain.py ...` (one task per GPU) sets SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID;
  the master is the first host of SLURM_NODELIST (or $MASTER_ADDR), port $MASTER_PORT or 29500;
- neither: one process, no process group.
NCCL on CUDA, gloo on CPU.

A rank that dies must not leave the others hanging in a collective forever:
- the process group has a timeout (`--dist_timeout_minutes`, default 30): a collective that waits longer
  raises on every surviving rank;
- TORCH_NCCL_ASYNC_ERROR_HANDLING=1 (set here unless already set) makes NCCL tear the process down on
  that timeout or on a peer's communicator error instead of blocking inside a CUDA kernel;
- torchrun itself notices a worker exiting non-zero and sends SIGTERM to the remaining workers of the
  job (then SIGKILL after a grace period), so in practice the job ends within seconds.
"""

import datetime
import os
import re
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from utils.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list: 'gpu-[01-04,07],cpu1' -> 'gpu-01'."""
    m = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise UserError(f"cannot parse SLURM_NODELIST={nodelist!r}")
    prefix, _, ranges = m.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _env_ranks() -> tuple[int, int, int] | None:
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
        env.setdefault("MASTER_ADDR", first_slurm_host(env.get("SLURM_NODELIST", "localhost")))
        env.setdefault("MASTER_PORT", "29500")
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return None


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> the local GPU when there is one, else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name != "cpu":
        raise UserError(f"--device must be auto, cuda or cpu, not {name!r}")
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Join the process group when launched by torchrun / srun; otherwise a single process."""
    ranks = _env_ranks()
    if ranks is None:
        return DistInfo(device=pick_device(device))
    rank, world_size, local_rank = ranks
    dev = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """In-place sum over ranks (no host sync on NCCL)."""
    if info.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj, info: DistInfo):
    """Rank 0's Python object on every rank (used for decisions only rank 0 can make, e.g. resume paths)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def hostname() -> str:
    return socket.gethostname()
