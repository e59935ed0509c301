"""User files: reading JSON with one-line errors, and the one atomic-write helper every module uses.

Atomic writes go to a temporary name beside the target and are renamed in, so a crash, a full disk or
Ctrl-C never leaves a half-written file, and the old file stays until the new one is complete. Files
get the permissions the umask allows (mkstemp alone would make them 0600, unreadable to colleagues).
"""

import json
import os
import tempfile
from pathlib import Path

from utils.errors import UserError


def read_json(path, what: str = "file"):
    """Parsed JSON of `path`; a missing file or bad JSON is a UserError naming `what` and the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def strict_json(value):
    """`value` with every NaN or infinite float (a loss of a window whose steps were all skipped) made None:
    what json.dumps(..., allow_nan=False) accepts, and strict JSON readers read back as null."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    return value


def umask_mode(base: int = 0o666) -> int:
    """`base` with the process umask applied (0o666 for files, 0o777 for folders)."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def check_output_dir(path, flag: str = "--output_dir") -> Path:
    """Refuse, before anything is written, an output folder that is a file or cannot be written to (read
    only, no permission): the folder, or the nearest existing folder above it, gets a probe file."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file, not a folder" if existing == path else f"lies under the file {existing}"
        raise UserError(f"{flag} {path} {what}")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write_probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot write in {existing} ({err.strerror})") from None
    return path


def atomic_write(path: str | Path, write) -> Path:
    """Call `write(f)` on a binary file object, then rename the result to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, obj) -> Path:
    text = json.dumps(obj, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_npy_atomic(path: str | Path, array) -> Path:
    import numpy as np

    return atomic_write(path, lambda f: np.save(f, array))


def temp_dir_beside(target: str | Path) -> Path:
    """A new empty folder beside `target` (to fill, then rename to it), with the umask's mode (mkdtemp alone
    makes it 0700, unreadable to colleagues once renamed)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    os.chmod(tmp, umask_mode(0o777))
    return tmp
