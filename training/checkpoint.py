"""Checkpoints: `OUTPUT_DIR/checkpoints/step_{N}/`, written atomically in a background thread.

Each folder holds
  model.safetensors, config.json   the weights and model config (model.io.save_model; loadable with
                                   model.io.load_model(step_dir))
  args.json                        the run's arguments
  code_version.json                utils.repro.code_version(): git commit and dirty flag
  tokenizer.json                   the run's tokenizer (when the run names one)
  training_state.pt                optimizer, scheduler, GradScaler, step, tokens seen, skipped steps,
                                   RNG states, sequence-length phase (torch.load(weights_only=True));
                                   only in resumable checkpoints
  checkpoint.json                  {"step", "kept", "tokens_seen", ...}: a small summary
Written under checkpoints/.tmp_step_{N}/ and renamed into place, so a crash mid-save (or a full disk)
never leaves a broken step_{N}. Kept checkpoints (from --checkpoint_steps) stay forever; rolling ones
(every --save_every steps, for resuming) are pruned to the newest --keep_last. With dense="weights" a
kept checkpoint holds no training_state.pt (weights only), unless it is also one of the newest
--keep_last resumable ones; resuming reads the rolling checkpoints only (latest_checkpoint).
"""

import errno
import json
import os
import random
import shutil
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.io import load_model, save_model
from utils.errors import UserError
from utils.files import atomic_write, write_text_atomic
from utils.repro import code_version


def _to_cpu(obj):
    """Deep copy with every tensor on the CPU (the live ones keep changing while the thread writes)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy(), *np_state[2:]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_dir_files(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())


class _RecordingFile:
    """A file object that keeps the OSError its write raised: torch.save turns it into an opaque
    RuntimeError (`inline_container.cc ... unexpected pos`), which says nothing of a full disk."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        return self.f.flush()


def save_torch_atomic(obj, path: Path) -> None:
    """torch.save to `path` atomically; a failed write raises its OSError (ENOSPC: a full disk)."""

    def write(f):
        recording = _RecordingFile(f)
        try:
            torch.save(obj, recording)
        except RuntimeError:
            if recording.error is not None:
                raise recording.error from None
            raise

    atomic_write(path, write)


def step_dir(output_dir: Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step_{step}"


class CheckpointWriter:
    """Rank 0's checkpoint writer: state is copied to the CPU at once, written by one background thread.

    save() waits for the previous write first (so at most one is in flight); call wait() before exit.
    """

    def __init__(
        self,
        output_dir: Path,
        keep_last: int = 2,
        prefix: str = "step",
        build=None,
        dense: str = "full",
        tokenizer_json: str | None = None,
    ):
        self.root = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last
        self.dense = dense  # "weights": kept checkpoints lose training_state.pt outside the rolling window
        self.tokenizer_json = tokenizer_json  # text of the run's tokenizer.json, copied into every checkpoint
        self.code_version = code_version()  # once per run: `git status` can take seconds
        self.prefix = prefix  # folder names {prefix}_{N}; fine-tuning writes epoch_{E}
        self.build = build  # makes the CPU twin (default type(model)(model.config); fine-tuning heads differ)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._shadow: nn.Module | None = None  # CPU copy of the model that the thread saves
        self._writing: Path | None = None  # the folder being written
        self._clear_interrupted_saves()

    def _clear_interrupted_saves(self) -> None:
        """A run killed mid-save leaves .tmp_{prefix}_N (never a state: drop it) or, between the two
        renames of a re-save, .old_{prefix}_N without {prefix}_N (the complete previous one: put it back)."""
        if not self.root.is_dir():
            return
        for d in self.root.glob(f".tmp_{self.prefix}_*"):
            shutil.rmtree(d, ignore_errors=True)
        for d in self.root.glob(f".old_{self.prefix}_*"):
            final = self.root / d.name[len(".old_") :]
            if final.exists():
                shutil.rmtree(d, ignore_errors=True)
            else:
                d.rename(final)

    def save(
        self,
        step: int,
        model: nn.Module,
        state: dict | None,
        args: dict,
        kept: bool,
        info: dict,
    ) -> None:
        """Write checkpoint `step`; state None: weights only (not resumable)."""
        self.wait()
        if self._shadow is None:
            with torch.random.fork_rng(devices=[]):  # building it must not move the training RNG
                self._shadow = (self.build() if self.build else type(model)(model.config)).to("cpu")
        self._shadow.load_state_dict(model.state_dict())  # device -> host copy, the only stall
        state = None if state is None else _to_cpu(state)
        summary = {"step": step, "kept": kept, **info}
        self._writing = self.root / f"{self.prefix}_{step}"
        tmp = self.root / f".tmp_{self.prefix}_{step}"

        def write():
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                save_model(self._shadow, tmp)
                if state is not None:
                    save_torch_atomic(state, tmp / "training_state.pt")
                if self.tokenizer_json is not None:
                    write_text_atomic(tmp / "tokenizer.json", self.tokenizer_json)
                write_text_atomic(tmp / "args.json", json.dumps(args, indent=2, sort_keys=True))
                write_text_atomic(tmp / "code_version.json", json.dumps(self.code_version, indent=2))
                write_text_atomic(tmp / "checkpoint.json", json.dumps(summary, indent=2))
                _fsync_dir_files(tmp)
                final = self._writing
                if final.exists():  # re-saving a step (after a resume): swap, never leave it missing
                    old = self.root / f".old_{self.prefix}_{step}"
                    shutil.rmtree(old, ignore_errors=True)
                    final.rename(old)
                    tmp.rename(final)
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    tmp.rename(final)
                self._prune()
            except BaseException as err:  # reported by the next wait()
                shutil.rmtree(tmp, ignore_errors=True)  # a full disk: free what the failed write took
                self._error = err

        self._thread = threading.Thread(target=write, name=f"checkpoint-{step}", daemon=False)
        self._thread.start()

    def _prune(self) -> None:
        """Keep the newest --keep_last resumable checkpoints: older rolling ones go; older kept ones stay
        whole (dense "full") or lose their training state (dense "weights")."""
        resumable = []
        for d in self.root.glob(f"{self.prefix}_*"):
            summary = d / "checkpoint.json"
            if summary.is_file() and (d / "training_state.pt").is_file():
                kept = json.loads(summary.read_text()).get("kept", True)
                if not kept or self.dense == "weights":
                    resumable.append((int(d.name[len(self.prefix) + 1 :]), d, kept))
        for _, d, kept in sorted(resumable)[: max(0, len(resumable) - self.keep_last)]:
            if kept:
                (d / "training_state.pt").unlink(missing_ok=True)
            else:
                shutil.rmtree(d, ignore_errors=True)

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, OSError):  # a full disk, a folder made read-only, a quota: the user's to fix
                what = "no space left on device" if err.errno == errno.ENOSPC else (err.strerror or str(err))
                last = latest_checkpoint(self.root.parent, self.prefix)
                raise UserError(
                    f"writing checkpoint {self._writing} failed: {what}"
                    + (f" ({err.filename})" if err.filename else "")
                    + f"; the last good checkpoint is {last or 'none'}, intact"
                ) from None
            raise RuntimeError(f"writing a checkpoint failed: {err}") from err


RESUMABLE = ("model.safetensors", "config.json", "training_state.pt")  # what resuming reads
EVALUABLE = ("model.safetensors", "config.json")  # what model.io.load_model reads


def list_checkpoints(path: Path, prefix: str = "step", need=RESUMABLE) -> list[tuple[int, Path]]:
    """The one checkpoint discovery: (N, folder) of every {prefix}_N folder in path/checkpoints (or in
    path itself when it has no checkpoints/ folder) holding all the files of `need`, ascending by N."""
    path = Path(path)
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    found = []
    for d in root.glob(f"{prefix}_*") if root.is_dir() else []:
        n = d.name[len(prefix) + 1 :]
        if n.isdigit() and d.is_dir() and all((d / name).is_file() for name in need):
            found.append((int(n), d))
    return sorted(found)


def latest_checkpoint(output_dir: Path, prefix: str = "step") -> Path | None:
    """The newest resumable checkpoint of a run folder, or None."""
    found = list_checkpoints(output_dir, prefix)
    return found[-1][1] if found else None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def load_checkpoint(path: Path, load=None) -> tuple[nn.Module, dict, dict]:
    """(model on CPU, training state, saved args) from a step folder; UserError if anything is unreadable.
    load(path) rebuilds the model (default model.io.load_model; fine-tuning passes its own)."""
    load = load or load_model
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"--checkpoint_path {path}: no such checkpoint folder")
    if (path / "model.safetensors").is_file() and not (path / "training_state.pt").is_file():
        raise UserError(
            f"checkpoint {path} holds weights only (no training_state.pt): resume from a rolling "
            "checkpoint (--save_every), or start from these weights with --init_from"
        )
    for name in ("model.safetensors", "config.json", "training_state.pt", "args.json"):
        if not (path / name).is_file():
            raise UserError(f"checkpoint {path} is incomplete: {name} is missing")
    try:
        state = torch.load(path / "training_state.pt", map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"cannot read {path / 'training_state.pt'}: {_one_line(err)}") from None
    try:
        model = load(path)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"cannot read the model in {path}: {_one_line(err)}") from None
    try:
        args = json.loads((path / "args.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {path / 'args.json'}: {_one_line(err)}") from None
    return model, state, args


def fit_legacy_pooler(trainer_state: dict, model: nn.Module, optimizer, weight_decay: float) -> None:
    """In place: the optimizer state of a BERT run without an NSP head saved before 2026-12-01 listed the
    pooler its model then had (never trained, so without optimizer state); today's model has none. Drop
    its entries so that the run resumes exactly. Other states pass unchanged."""
    from training.optim import param_groups

    saved = trainer_state["optimizer"]
    encoder = getattr(model, "encoder", None)
    n_saved = sum(len(g["params"]) for g in saved["param_groups"])
    n_now = sum(len(g["params"]) for g in optimizer.param_groups)
    if encoder is None or getattr(encoder, "pooler", 1) is not None or n_saved != n_now + 2:
        return
    with torch.random.fork_rng(devices=[]):  # the model of that day: today's plus the pooler, in place
        legacy = type(model)(model.config)
        h = model.config.hidden_size
        legacy.encoder.pooler = nn.Linear(h, h)
    name_of = {id(p): n for n, p in legacy.named_parameters()}
    legacy_names = [name_of[id(p)] for g in param_groups(legacy, weight_decay) for p in g["params"]]
    index = {n: i for i, n in enumerate(legacy_names)}  # the saved optimizer's parameter indices
    name_of = {id(p): n for n, p in model.named_parameters()}
    state, groups, k = {}, [], 0
    for group, now in zip(saved["param_groups"], optimizer.param_groups):
        ids = []
        for p in now["params"]:
            old = index[name_of[id(p)]]
            if old in saved["state"]:
                state[k] = saved["state"][old]
            ids.append(k)
            k += 1
        groups.append({**group, "params": ids})
    if any(index[n] in saved["state"] for n in ("encoder.pooler.weight", "encoder.pooler.bias")):
        raise UserError(
            "checkpoint: its optimizer state holds a trained pooler; it cannot resume without one"
        )
    trainer_state["optimizer"] = {"state": state, "param_groups": groups}
