"""The zoo runner's bookkeeping with stand-in engines (tiny scripts that write checkpoint folders the way
train_pretrain.py / train_finetune.py do, in milliseconds): failures recorded while the rest goes on,
blocked children, retries, resumption, workers on separate GPUs, storage post-processing, locks."""

import importlib.util
import json
import os
import textwrap

import pytest

from utils.paths import REPO_ROOT
from zoo import runs as rf
from zoo.manifest import read_manifest

FAKE_ENGINE = textwrap.dedent(
    """
    import json, os, struct, sys, time
    from pathlib import Path
    argv = sys.argv[1:]
    flag = lambda name: argv[argv.index(name) + 1]
    out = Path(flag("--output_dir"))
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def weights(path, value):  # a valid safetensors file: two float32 numbers
        header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        path.write_bytes(struct.pack("<Q", len(header)) + header + struct.pack("<2f", value, -value))

    def state(name, value, kept=True):
        d = out / "checkpoints" / name
        if (d / "model.safetensors").is_file():
            return False  # resumed: already there
        d.mkdir(parents=True, exist_ok=True)
        weights(d / "model.safetensors", value)
        (d / "config.json").write_text("{}")
        (d / "training_state.pt").write_text("optimizer")
        (d / "checkpoint.json").write_text(json.dumps({"kept": kept}))
        time.sleep(0.15)
        return True

    lr = float(flag("--learning_rate"))
    made = 0
    try:
        with open(out / "metrics.jsonl", "a") as log:
            if "--max_steps" in argv:  # pretraining: a state every checkpoint step
                first, total, every = (int(x) for x in flag("--checkpoint_steps").split(":"))
                state("step_1", lr, kept=False)  # a rolling checkpoint: dropped when the run completes
                for s in range(first, total + 1, every):
                    if state(f"step_{s}", lr + s):
                        made += 1
                        log.write(json.dumps({"step": s, "loss": 10.0 - s, "mlm_acc": s / 10}) + "\\n")
                        log.write(json.dumps({"step": s, "val_loss": 9.0 - s}) + "\\n")
                    if str(lr) == os.environ.get("FAKE_FAIL_LR"):
                        sys.exit(3)
            else:  # fine-tuning: epochs 0..E
                for e in range(int(flag("--epochs")) + 1):
                    if state(f"epoch_{e}", lr * 1000 + e):
                        made += 1
                        scores = {"validation": {"accuracy": 0.5 + e / 10}, "test": {"accuracy": 0.4 + e/10}}
                        log.write(json.dumps({"step": 5 * e, "epoch": e, **scores}) + "\\n")
    finally:
        with open(out / "launches.jsonl", "a") as fh:
            fh.write(json.dumps({"argv": argv, "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start,
                                 "end": time.time(), "made": made}) + "\\n")
    """
)


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """(zoo.py main, spec path, zoo dir) with stand-in engines and stand-in inputs."""
    import zoo.runner

    engine = tmp_path / "fake_engine.py"
    engine.write_text(FAKE_ENGINE)
    monkeypatch.setattr(zoo.runner, "ENGINES", {"pretrain": str(engine), "finetune": str(engine)})
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "tok.json").write_text("{}")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "meta.json").write_text("{}")
    (tmp_path / "sst2").mkdir()
    spec = {
        "name": "fake",
        "base_model": str(tmp_path / "base"),
        "vocab_path": str(tmp_path / "tok.json"),
        "pretrain": {
            "corpus": str(tmp_path / "corpus"),
            "learning_rates": [0.001, 0.666],
            "weight_decays": [0.01],
            "epochs": 2,
            "steps_per_epoch": 2,
        },
        "finetune": {
            "sst2": {
                "data_dir": str(tmp_path / "sst2"),
                "learning_rates": [1e-5, 2e-5],
                "weight_decays": [0.0],
                "epochs": 2,
            }
        },
        "storage": {"dtype": "bf16"},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    cli_spec = importlib.util.spec_from_file_location("zoo_cli", REPO_ROOT / "zoo.py")
    cli = importlib.util.module_from_spec(cli_spec)
    cli_spec.loader.exec_module(cli)
    return cli.main, path, tmp_path / "zoo"


def _launches(zoo_dir) -> list[dict]:
    return [
        json.loads(line)
        for p in sorted((zoo_dir / "runs").glob("*/launches.jsonl"))
        for line in p.read_text().splitlines()
    ]


def test_failures_blocking_retries_and_resume(fake_zoo, monkeypatch, capsys):
    main, spec, zoo_dir = fake_zoo
    bad = "pt_lr0.666_wd0.01_s0"
    monkeypatch.setenv("FAKE_FAIL_LR", "0.666")
    with pytest.raises(SystemExit) as exited:  # a failed run fails the command (and a SLURM array task)
        main(["run", str(spec), "--zoo_dir", str(zoo_dir), "--workers", "2", "--gpus", "3,5"])
    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert "6 runs in this selection: 0 already complete, 3 completed now, 1 failed, 2 blocked" in out
    failed = rf.read_json(zoo_dir / "runs" / bad / "zoo_failed.json")
    assert failed["error"] == "exit code 3"
    assert rf.present_states(
        zoo_dir / "runs" / bad, rf.read_json(zoo_dir / "runs" / bad / "zoo_run.json")
    ) == [1]

    launches = _launches(zoo_dir)
    assert len(launches) == 4 and {x["gpu"] for x in launches} <= {"3", "5"}
    overlapping = [
        (a, b)
        for a in launches
        for b in launches
        if a is not b and a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping and all(a["gpu"] != b["gpu"] for a, b in overlapping)  # two workers, one GPU each

    main(["status", "--zoo_dir", str(zoo_dir)])
    out = capsys.readouterr().out
    assert "6 runs (3 done, 0 running, 0 partial, 1 failed, 2 pending); 9/16 model states on disk" in out
    assert f"failed: {bad}: exit code 3" in out

    with pytest.raises(SystemExit):  # nothing may start; the runs blocked by the failure still fail it
        main(["run", str(spec), "--zoo_dir", str(zoo_dir), "--skip_failed"])
    assert len(_launches(zoo_dir)) == 4
    monkeypatch.delenv("FAKE_FAIL_LR")
    main(["run", str(spec), "--zoo_dir", str(zoo_dir)])  # the failed run resumes, its children follow
    out = capsys.readouterr().out
    assert "3 already complete, 3 completed now, 0 failed, 0 blocked" in out
    launches = _launches(zoo_dir)
    assert len(launches) == 7
    retry = [x for x in launches if "0.666" in x["argv"]][-1]
    assert retry["made"] == 1  # only the missing epoch-2 state was made: epoch 1 was kept
    main(["run", str(spec), "--zoo_dir", str(zoo_dir)])
    assert "6 already complete, 0 completed now" in capsys.readouterr().out and len(_launches(zoo_dir)) == 7

    rows = read_manifest(zoo_dir)
    assert len(rows) == 2 * 2 + 4 * 3 and all(r["run_complete"] for r in rows)
    assert {r["dtype"] for r in rows} == {"BF16"}  # storage.dtype bf16: cast when each run completed
    pt_row = next(r for r in rows if r["run_id"] == bad and r["epoch"] == 2)
    assert (
        pt_row["step"] == 4 and pt_row["metric.train.loss"] == 6.0 and pt_row["metric.validation.loss"] == 5.0
    )
    ft_row = next(r for r in rows if r["stage"] == "finetune" and r["parent_run"] == bad and r["epoch"] == 1)
    assert ft_row["metric.validation.accuracy"] == 0.6 and ft_row["hp.pretrain.learning_rate"] == 0.666
    assert ft_row["hp.pretrain.epoch"] == 2 and ft_row["lineage"] == bad
    ckpts = sorted(p.name for p in (zoo_dir / "runs" / bad / "checkpoints").iterdir())
    assert ckpts == ["step_2", "step_4"]  # the rolling step_1 dropped
    assert not list((zoo_dir / "runs").glob("*/checkpoints/*/training_state.pt"))  # optimizer states dropped


def test_lock_keeps_a_second_runner_out(tmp_path):
    folder = tmp_path / "run"
    assert rf.acquire(folder)
    assert not rf.acquire(folder)  # held by a live process (this one)
    assert rf.status_of(folder) == "running"
    lock = json.loads((folder / "zoo.lock").read_text())
    lock["pid"] = 2**22 + 12345  # a process that does not exist: the lock is stale
    (folder / "zoo.lock").write_text(json.dumps(lock))
    assert rf.lock_holder(folder) is None and rf.acquire(folder)
    rf.release(folder)
    assert not (folder / "zoo.lock").exists() and os.listdir(folder) == []
