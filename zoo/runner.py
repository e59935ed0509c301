"""Execute a zoo: every run through its engine (train_pretrain.py / train_finetune.py) as a subprocess.

Resumable at two levels: a run whose states are all on disk (zoo_done.json) is skipped; a run cut short
is started again with the same command and the engine resumes from its newest checkpoint (pretraining:
automatically; fine-tuning: --resume). A failed run is recorded (zoo_failed.json) and the others go on;
its fine-tunes are skipped as blocked. With --workers N, N runs execute at once, worker i on GPU i
(CUDA_VISIBLE_DEVICES); a lock per run keeps two runners (shards, resubmitted jobs) off the same run.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from utils.errors import UserError
from utils.files import atomic_write
from utils.paths import REPO_ROOT
from zoo import runs as rf
from zoo.plan import Run, finetune_argv, pretrain_argv
from zoo.spec import ZooSpec, resolve_path

ENGINES = {"pretrain": "train_pretrain.py", "finetune": "train_finetune.py"}
# each run is one process: a runner started by torchrun / srun must not pass its ranks on
DIST_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
)
ENGINE_FILES = ("metrics.jsonl", "split.json", "run_args.json", "predictions", "checkpoints", "tensorboard")


def default_gpus() -> list[str]:
    """GPU ids to hand out: $CUDA_VISIBLE_DEVICES when set (e.g. by SLURM), else every visible GPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        return [g for g in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    # the device files, not torch.cuda: the runner itself never imports torch (it starts in a second)
    return sorted((p.name[6:] for p in Path("/dev").glob("nvidia[0-9]*")), key=int)


def _resumable_finetune(folder: Path) -> bool:
    ckpts = folder / "checkpoints"
    return ckpts.is_dir() and any((d / "training_state.pt").is_file() for d in ckpts.glob("epoch_*"))


def prepare(spec: ZooSpec, run: Run, zoo_dir: Path) -> list[str]:
    """Write zoo_run.json and return the engine command (runs only once its parent is done)."""
    from zoo.estimate import pretrain_steps_per_epoch

    folder = rf.run_dir(zoo_dir, run.run_id)
    record = {**run.to_dict(), "spec": spec.source}
    if run.stage == "pretrain":
        old = rf.read_json(folder / "zoo_run.json") or {}
        spe = old.get("steps_per_epoch") or pretrain_steps_per_epoch(spec, run, zoo_dir)
        argv = pretrain_argv(spec, run, folder, spe)
        record["steps_per_epoch"] = spe
    else:
        if run.parent is None:
            start = resolve_path(spec.base_model)
        else:
            parent = rf.run_dir(zoo_dir, run.parent)
            start = rf.state_dir(parent, rf.read_json(parent / "zoo_run.json"), run.parent_epoch)
        argv = finetune_argv(spec, run, folder, start)
        if _resumable_finetune(folder):
            # the engine compares "auto" with the resolved precision it saved: pass the saved one back
            saved = (rf.read_json(folder / "run_args.json") or {}).get("mixed_precision")
            argv += ["--resume"] + (["--mixed_precision", saved] if saved else [])
        else:  # nothing to resume: start clean (the engine refuses a folder holding a run)
            for name in ENGINE_FILES:
                path = folder / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    cmd = [sys.executable, str(REPO_ROOT / ENGINES[run.stage]), *argv]
    rf.write_json(folder / "zoo_run.json", {**record, "command": cmd[1:]})
    return cmd


def finalize(spec: ZooSpec, folder: Path) -> None:
    """Storage post-processing of a completed run (idempotent): drop rolling checkpoints and, unless
    kept, optimizer states; cast weights to bf16 when the spec asks; then mark the run finalized."""
    from safetensors.torch import load_file, save

    record = rf.read_json(folder / "zoo_run.json")
    keep = {rf.state_dir(folder, record, e).name for e in record["state_epochs"]}
    for d in (folder / "checkpoints").iterdir():
        if d.name.startswith(".") or d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)
            continue
        if not spec.storage.keep_optimizer_state:
            (d / "training_state.pt").unlink(missing_ok=True)
        if spec.storage.dtype == "bf16":
            import torch

            weights = load_file(d / "model.safetensors")
            if any(v.dtype == torch.float32 for v in weights.values()):
                cast = {k: v.bfloat16() if v.is_floating_point() else v for k, v in weights.items()}
                data = save(cast, metadata={"format": "pt"})  # bytes: save would make the file 0600
                atomic_write(d / "model.safetensors", lambda f, data=data: f.write(data))
    rf.write_json(folder / "zoo_done.json", {**rf.read_json(folder / "zoo_done.json"), "finalized": True})


def _finish(spec: ZooSpec, run: Run, folder: Path, code: int, seconds: float) -> bool:
    """Record the outcome of an engine process; True when the run is complete."""
    record = rf.read_json(folder / "zoo_run.json")
    missing = sorted(set(run.state_epochs) - set(rf.present_states(folder, record)))
    if code == 0 and not missing:
        rf.write_json(folder / "zoo_done.json", {"seconds": round(seconds, 1), "finalized": False})
        (folder / "zoo_failed.json").unlink(missing_ok=True)
        finalize(spec, folder)
        return True
    why = f"exit code {code}" if code else f"exit code 0 but states of epochs {missing} are missing"
    rf.write_json(
        folder / "zoo_failed.json", {"error": why, "log_tail": rf.log_tail(folder), "time": time.time()}
    )
    return False


def _spawn(cmd: list[str], folder: Path, gpu: str | None, workers: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in DIST_ENV}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    # N engines at once: each gets its share of the cores (torch would otherwise take them all)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    log = open(folder / "zoo.log", "a")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
    log.flush()
    try:
        return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()


def _count_states(zoo_dir: Path, runs: list[Run]) -> int:
    total = 0
    for r in runs:
        folder = rf.run_dir(zoo_dir, r.run_id)
        total += (
            len(r.state_epochs)
            if rf.is_done(folder)
            else len(rf.present_states(folder, rf.read_json(folder / "zoo_run.json")))
        )
    return total


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt  # SLURM's time limit sends SIGTERM: stop the engines, release the locks


def run_zoo(
    spec: ZooSpec,
    zoo_dir: Path,
    runs: list[Run],
    workers: int = 1,
    gpus: list[str] | None = None,
    retry_failed: bool = True,
    poll_s: float = 0.5,
) -> dict:
    """Execute `runs` (some may already be done); returns {"done": [...], "failed": [...], ...}."""
    for r in runs:  # finish the post-processing of runs completed by a runner that was stopped
        folder = rf.run_dir(zoo_dir, r.run_id)
        if rf.is_done(folder) and not rf.read_json(folder / "zoo_done.json").get("finalized"):
            finalize(spec, folder)
    todo = [r for r in runs if not rf.is_done(rf.run_dir(zoo_dir, r.run_id))]
    if not retry_failed:
        todo = [r for r in todo if not (rf.run_dir(zoo_dir, r.run_id) / "zoo_failed.json").is_file()]
    result = {"done": [], "failed": [], "blocked": [], "elsewhere": [], "skipped": len(runs) - len(todo)}
    if not todo:
        return result
    gpus = default_gpus() if gpus is None else gpus
    pending, active, failed = list(todo), {}, set()
    ids = {r.run_id for r in todo}
    bar = tqdm(
        total=sum(len(r.state_epochs) for r in runs),
        initial=_count_states(zoo_dir, runs),
        desc="zoo states",
        unit="state",
        dynamic_ncols=True,
    )
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    last_beat = time.time()
    try:
        while pending or active:
            for r in list(pending):
                if len(active) >= workers:
                    break
                parent_done = r.parent is None or rf.is_done(rf.run_dir(zoo_dir, r.parent))
                if not parent_done:
                    if r.parent in failed or r.parent not in ids or r.parent in result["elsewhere"]:
                        pending.remove(r)
                        result["blocked"].append(r.run_id)
                    continue
                folder = rf.run_dir(zoo_dir, r.run_id)
                pending.remove(r)
                if not rf.acquire(folder):
                    result["elsewhere"].append(r.run_id)
                    continue
                try:
                    cmd = prepare(spec, r, zoo_dir)
                except UserError as err:  # e.g. the corpus is too small for the batch
                    rf.write_json(folder / "zoo_failed.json", {"error": str(err), "time": time.time()})
                    rf.release(folder)
                    failed.add(r.run_id)
                    result["failed"].append(r.run_id)
                    continue
                slot = min(set(range(workers)) - {a[1] for a in active.values()})
                proc = _spawn(cmd, folder, gpus[slot % len(gpus)] if gpus else None, workers)
                rf.update_lock(folder, proc.pid)
                active[r.run_id] = (proc, slot, r, time.time())
            for rid, (proc, _, r, start) in list(active.items()):
                code = proc.poll()
                if code is None:
                    continue
                del active[rid]
                folder = rf.run_dir(zoo_dir, rid)
                ok = _finish(spec, r, folder, code, time.time() - start)
                rf.release(folder)
                result["done" if ok else "failed"].append(rid)
                if not ok:
                    failed.add(rid)
                    tqdm.write(
                        f"failed: {rid} ({rf.read_json(folder / 'zoo_failed.json')['error']}; "
                        f"log: {folder / 'zoo.log'})"
                    )
            if time.time() - last_beat > 30:  # heartbeat: other hosts see the locks are alive
                for rid, (proc, *_rest) in active.items():
                    rf.update_lock(rf.run_dir(zoo_dir, rid), proc.pid)
                last_beat = time.time()
            bar.update(_count_states(zoo_dir, runs) - bar.n)
            if active or pending:
                time.sleep(poll_s)
    finally:
        for proc, *_rest in active.values():
            proc.terminate()
        for rid, (proc, *_rest) in active.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            rf.release(rf.run_dir(zoo_dir, rid))
        signal.signal(signal.SIGTERM, previous)
        bar.close()
    return result
