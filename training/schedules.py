"""Learning-rate schedules: a factor of the base LR as a pure function of the step.

- "linear":   linear warmup from 0 over `warmup_steps`, then linear decay to 0 at `total_steps`
              (BERT, MultiBERTs).
- "cosine":   linear warmup, then cosine decay to `min_factor` x the base LR (ELC-BERT: 0.1).
- "constant": the base LR throughout (model zoos: no warmup, no decay); warmup_steps is ignored.
The factor at step s is the LR of the (s+1)-th optimizer step (step 0 is the first update; during
warmup it is 0, as in BERT).
"""

import math
from functools import partial

import torch

from utils.errors import UserError

SCHEDULES = ("linear", "cosine", "constant")


def lr_factor(name: str, step: int, total_steps: int, warmup_steps: int, min_factor: float = 0.1) -> float:
    if name == "constant":
        return 1.0
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if name == "linear":
        return 1.0 - progress
    if name == "cosine":
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UserError(f"--scheduler must be one of {', '.join(SCHEDULES)}, not {name!r}")


def build_schedule(
    name: str,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_steps: int = 0,
    min_factor: float = 0.1,
) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(name, 0, total_steps, warmup_steps, min_factor)  # validates the name
    fn = partial(lr_factor, name, total_steps=total_steps, warmup_steps=warmup_steps, min_factor=min_factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
