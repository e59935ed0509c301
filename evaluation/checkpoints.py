"""Finding, hashing and loading the checkpoints of a run, the tokenizer they name, the device to use."""

import contextlib
import hashlib
import json
import re
from pathlib import Path

import torch

from utils.errors import UserError
from utils.paths import REPO_ROOT

STEP_DIR = re.compile(r"step_(\d+)$")


def find_checkpoints(path: str | Path) -> list[tuple[int | None, Path]]:
    """(step, dir) pairs sorted by step: one step dir, or every checkpoints/step_N/ of a run dir
    (training.checkpoint.list_checkpoints, the one discovery rule, for loadable models)."""
    from training.checkpoint import EVALUABLE, list_checkpoints

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--checkpoint_path {path}: no such directory")
    if all((path / name).is_file() for name in EVALUABLE):
        m = STEP_DIR.match(path.name)
        return [(int(m.group(1)) if m else None, path)]
    found = list_checkpoints(path, "step", need=EVALUABLE)
    if not found:
        raise UserError(
            f"--checkpoint_path {path}: no checkpoints (step_N/ with model.safetensors + config.json)"
        )
    return sorted(found)


def resolve_vocab(checkpoint_dir: Path, vocab_path: str | None) -> Path:
    """--vocab_path if given, else the `vocab_path` of the checkpoint's args.json."""
    if vocab_path is None:
        args_file = checkpoint_dir / "args.json"
        try:
            vocab_path = json.loads(args_file.read_text()).get("vocab_path") if args_file.is_file() else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise UserError(f"{args_file}: not a JSON object") from None
        if not vocab_path:
            raise UserError(f"{checkpoint_dir}: no args.json naming vocab_path; pass --vocab_path FILE.json")
    candidates = [Path(vocab_path), REPO_ROOT / vocab_path, checkpoint_dir / vocab_path]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise UserError(f"tokenizer file not found: {vocab_path} (--vocab_path or {checkpoint_dir}/args.json)")


def file_hash(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha1 of a file's bytes: the identity of weights or data in cache keys."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(checkpoint_dir: Path, device: torch.device):
    from model.io import load_model  # imported late: the data-only commands need no model package

    model = load_model(checkpoint_dir, device=str(device))
    return model.eval()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (scores are gathered and summed in float32); plain float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def run_name(checkpoint_path: str | Path) -> str:
    """A run's name for tables: the run dir's name (the parent of checkpoints/ for a step dir)."""
    p = Path(checkpoint_path).resolve()
    if STEP_DIR.match(p.name):
        p = p.parent
    if p.name == "checkpoints":
        p = p.parent
    return p.name
