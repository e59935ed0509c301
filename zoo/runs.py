"""A run's folder on disk: its record (zoo_run.json), states, completion and failure markers, and lock.

ZOO_DIR/runs/RUN_ID/ is the engine's --output_dir; the zoo adds
  zoo_run.json      the run (zoo.plan.Run) plus steps_per_epoch (pretraining) and its command line
  zoo_done.json     written once every state is on disk ({"finalized": true} after storage post-processing)
  zoo_failed.json   the last failure: exit code and the last lines of zoo.log
  zoo.lock          held while a runner executes it: host, runner pid, engine pid; refreshed every 30 s
  zoo.log           the engine's stdout and stderr (appended)
"""

import json
import os
import socket
import time
from pathlib import Path

from zoo.plan import Run

LOCK_STALE_S = 600  # a lock from another host untouched this long belongs to a dead runner


def write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_dir(zoo_dir: Path, run_id: str) -> Path:
    return Path(zoo_dir) / "runs" / run_id


def state_dir(folder: Path, record: dict, epoch: int) -> Path:
    """The checkpoint folder of a state: step_{epoch x steps_per_epoch} (pretraining) or epoch_{E}."""
    if record["stage"] == "pretrain":
        return folder / "checkpoints" / f"step_{epoch * record['steps_per_epoch']}"
    return folder / "checkpoints" / f"epoch_{epoch}"


def present_states(folder: Path, record: dict | None) -> list[int]:
    """Epochs whose state is complete on disk (weights and config written: the engines rename atomically)."""
    if record is None or (record["stage"] == "pretrain" and not record.get("steps_per_epoch")):
        return []
    return [
        e
        for e in record["state_epochs"]
        if (state_dir(folder, record, e) / "model.safetensors").is_file()
        and (state_dir(folder, record, e) / "config.json").is_file()
    ]


def is_done(folder: Path) -> bool:
    return (folder / "zoo_done.json").is_file()


def status_of(folder: Path, run: Run | None = None) -> str:
    """done | running | failed | partial | pending."""
    if is_done(folder):
        return "done"
    if lock_holder(folder) is not None:
        return "running"
    if (folder / "zoo_failed.json").is_file():
        return "failed"
    record = read_json(folder / "zoo_run.json")
    return "partial" if present_states(folder, record) else "pending"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    try:  # a killed engine whose runner died stays a zombie where no init reaps it (containers)
        return Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def lock_holder(folder: Path) -> dict | None:
    """The live lock's content, or None when there is no lock or it is stale."""
    lock = read_json(folder / "zoo.lock")
    if lock is None:
        return None
    if lock.get("host") == socket.gethostname():
        alive = _alive(lock.get("pid")) or _alive(lock.get("engine_pid"))
        return lock if alive else None
    try:
        age = time.time() - (folder / "zoo.lock").stat().st_mtime
    except OSError:
        return None
    return lock if age < LOCK_STALE_S else None


def acquire(folder: Path) -> bool:
    """Take the run's lock (False when a live runner holds it); a stale lock is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "zoo.lock"
    if path.exists():
        if lock_holder(folder) is not None:
            return False
        path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # another runner won the race
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, fh)
    return True


def update_lock(folder: Path, engine_pid: int | None) -> None:
    """Record the engine's pid and refresh the lock's heartbeat (its mtime)."""
    write_json(
        folder / "zoo.lock",
        {"host": socket.gethostname(), "pid": os.getpid(), "engine_pid": engine_pid, "since": time.time()},
    )


def release(folder: Path) -> None:
    (folder / "zoo.lock").unlink(missing_ok=True)


def log_tail(folder: Path, n: int = 5) -> list[str]:
    try:
        lines = (folder / "zoo.log").read_text(errors="replace").splitlines()
    except OSError:
        return []
    # tqdm redraws with carriage returns: keep the last frame of each line
    return [line.split("\r")[-1] for line in lines if line.strip()][-n:]
