"""Mixed precision: autocast contexts and the fp16 GradScaler.

- "bf16": autocast to bfloat16 (CUDA or CPU); no loss scaling needed (bf16 has fp32's exponent range).
- "fp16": autocast to float16 plus a GradScaler (its scale is part of the checkpointed training state).
  On CPU this works too (torch's CPU autocast supports float16), slowly; it exists for tests.
- "no": plain fp32.
Master weights and optimizer state stay fp32 in every mode.
"""

import contextlib

import torch

from utils.errors import UserError

MODES = ("no", "bf16", "fp16")


def check_mode(mode: str, device: torch.device) -> str:
    if mode not in MODES:
        raise UserError(f"--mixed_precision must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("--mixed_precision bf16: this GPU has no bfloat16 support; use fp16")
    return mode


def resolve(mode: str, device: torch.device) -> str:
    """The --mixed_precision flag's "auto" made concrete (bf16 on a GPU that has it, else no); runs save
    and compare the resolved value."""
    if mode != "auto":
        return mode
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def autocast(mode: str, device: torch.device):
    """Context manager for the forward pass (and loss) in the chosen precision."""
    if mode == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_scaler(mode: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A GradScaler for fp16, None otherwise."""
    if mode != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
