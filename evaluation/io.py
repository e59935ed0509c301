"""Atomic output files: write to a temporary name beside the target, then rename (nothing half-written)."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np


def _atomic(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj) -> Path:
    return _atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def save_npy_atomic(path: str | Path, array: np.ndarray) -> Path:
    return _atomic(path, lambda f: np.save(f, array))
