"""One training step of each contender, behind the same interface: `Runner.step(i)` trains on batch i.

- OursRunner: our model through the real training loop (training.loop.Trainer + PretrainingObjective):
  masked-only MLM head, fused QKV, no mask for batches without padding, fused AdamW (or foreach LAMB),
  global gradient clipping, the non-finite-step guard. Swapping the model, objective or optimizer gives the
  plain-path variants (benchmarks/reference.py).
- HFRunner: transformers.BertForPreTraining (sdpa) with full-length labels, the same AdamW, clipping,
  constant schedule and autocast: what a Hugging Face training step does.
"""

import ctypes
import os
import threading
import time

import torch
from torch import nn

from benchmarks.batches import hf_batch
from benchmarks.reference import LoopLamb
from training.distributed import DistInfo
from training.loop import Trainer, TrainerConfig
from training.optim import build_optimizer, param_groups
from training.precision import autocast
from training.pretraining_objective import PretrainingObjective
from training.schedules import build_schedule

LR, WEIGHT_DECAY, BETAS, EPS = 1e-4, 0.01, (0.9, 0.999), 1e-6


def make_optimizer(model: nn.Module, kind: str) -> torch.optim.Optimizer:
    """adamw (fused) | adamw_foreach | adamw_loop | lamb (training.optim, foreach) | lamb_loop (reference)."""
    if kind == "lamb_loop":
        return LoopLamb(param_groups(model, WEIGHT_DECAY), lr=LR, betas=BETAS, eps=EPS)
    if kind == "lamb":
        return build_optimizer(model, "lamb", LR, WEIGHT_DECAY, betas=BETAS, eps=EPS)
    if kind == "adamw":
        return build_optimizer(model, "adamw", LR, WEIGHT_DECAY, betas=BETAS, eps=EPS, fused=True)
    groups = param_groups(model, WEIGHT_DECAY)
    for g in groups:
        g.pop("trust_ratio")
    foreach = {"adamw_foreach": True, "adamw_loop": False}[kind]
    return torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=foreach, fused=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )


class OursRunner:
    def __init__(self, name, model, batches, device, precision, compile, optimizer="adamw", objective=None):
        self.name, self.device = name, device
        self.batches = batches  # as PretrainingLoader hands them over; the loop drops all-ones masks itself
        model = model.to(device)
        self.optimizer = make_optimizer(model, optimizer)
        schedule = build_schedule("constant", self.optimizer, 1)
        objective = objective or PretrainingObjective(nsp=True)
        config = TrainerConfig(precision=precision, max_gradient=1.0, compile=compile)
        self.trainer = Trainer(
            model, self.optimizer, schedule, objective, dist=DistInfo(device=device), config=config
        )
        self.model = self.trainer.model

    def step(self, i: int) -> None:
        self.trainer.train_step([self.batches[i % len(self.batches)]])


class HFRunner:
    def __init__(self, name, model, batches, device, precision, compile, optimizer="adamw"):
        self.name, self.device, self.precision = name, device, precision
        self.model = model.to(device).train()
        self.forward_model = torch.compile(self.model) if compile else self.model
        self.batches = [hf_batch(b) for b in batches]
        if device.type == "cuda":  # as our batches (pinned by the benchmark, as the loader does)
            self.batches = [{k: v.pin_memory() for k, v in b.items()} for b in self.batches]
        self.optimizer = make_optimizer(self.model, optimizer)
        self.schedule = build_schedule("constant", self.optimizer, 1)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def step(self, i: int) -> None:
        batch = {
            k: v.to(self.device, non_blocking=True) for k, v in self.batches[i % len(self.batches)].items()
        }
        with autocast(self.precision, self.device):
            loss = self.forward_model(**batch).loss  # MLM mean over masked tokens + NSP mean
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def step_memory(runner, i: int) -> int:
    """Peak memory of one training step above what was allocated before it (activations, gradients,
    temporaries), in bytes. CUDA: max_memory_allocated; CPU: resident-set size sampled every 0.5 ms."""
    device = runner.device
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.step(i)
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:  # hand freed heap memory back first, so the growth is this step's and not the allocator's cache
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    base, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    runner.step(i)
    done.set()
    thread.join()
    return max(peak[0], _rss_bytes()) - base


def static_bytes(runner) -> int:
    """Parameters + optimizer state of the runner's model."""
    params = sum(p.numel() * p.element_size() for p in runner.model.parameters())
    return params + optimizer_bytes(runner.optimizer)
