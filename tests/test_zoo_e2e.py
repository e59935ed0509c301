"""An end-to-end tiny zoo on CPU with the real engines: the shared tiny pretrained BERT, continued-pretrained
over 2 learning rates x 2 seeds (2 short epochs on the fixture books), each final state fine-tuned on a
real SST-2 subset for 2 epochs. The first `zoo.py run` is killed part-way; the second completes only
the missing states; the third does nothing. Then the manifest, the checkpoints, the loader and the
analyses are checked on it."""

import argparse
import csv
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from utils.paths import REPO_ROOT
from zoo import runs as rf
from zoo.evaluate import reproduce
from zoo.loader import ZooDataset, flatten, group_of, iter_states, load_weights, unflatten
from zoo.manifest import read_manifest

N_STATES = 4 * 2 + 4 * 3  # pretraining epochs 1-2; fine-tuning epochs 0-2


def _zoo(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "zoo.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        **kw,
    )


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _launches(folder) -> list[str]:
    return [
        line
        for line in (folder / "zoo.log").read_text(errors="replace").splitlines()
        if line.startswith("=== ")
    ]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, pretrained_tiny, tokenizer_path, processed_corpus, data_root):
    root = tmp_path_factory.mktemp("zoo_e2e")
    (root / "sst2").mkdir()
    for name, n in (("train.tsv", 300), ("dev.tsv", 100)):  # real SST-2 rows, a subset
        lines = (data_root / "sst2" / name).read_text().splitlines(keepends=True)
        (root / "sst2" / name).write_text("".join(lines[: n + 1]))
    spec = {
        "name": "e2e",
        "base_model": str(pretrained_tiny),
        "vocab_path": str(tokenizer_path),
        "pretrain": {
            "corpus": str(processed_corpus),
            "learning_rates": [1e-4, 1e-3],
            "weight_decays": [0.01],
            "seeds": [0, 1],
            "epochs": 2,
            "steps_per_epoch": 3,
            "batch_size": 8,
            "seq_length": 64,
            "validation_batches": 2,
            "save_every": 0,
        },
        "finetune": {
            "sst2": {
                "data_dir": str(root / "sst2"),
                "learning_rates": [1e-3],
                "weight_decays": [0.01],
                "epochs": 2,
                "batch_size": 16,
                "max_seq_length": 64,
                "head": {"hidden_sizes": [32]},
                "extra_args": {"no-tensorboard": True},
            }
        },
    }
    spec_path = root / "spec.json"
    spec_path.write_text(json.dumps(spec))
    zoo_dir = root / "zoo"

    # 1. a run killed part-way: once a fine-tuning run has two of its three states (epochs 0, 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(root / "first.log", "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(REPO_ROOT / "zoo.py"),
                "run",
                str(spec_path),
                "--zoo_dir",
                str(zoo_dir),
                "--workers",
                "2",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline, partial = time.time() + 300, None
    while partial is None and proc.poll() is None and time.time() < deadline:
        for folder in sorted((zoo_dir / "runs").glob("ft_*")):
            record = rf.read_json(folder / "zoo_run.json")
            if record and len(rf.present_states(folder, record)) >= 2 and not rf.is_done(folder):
                partial = folder
                break
        time.sleep(0.1)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the runner and the engines it started
    proc.wait()
    assert partial is not None, (root / "first.log").read_text()[-2000:]
    before = {  # the kill may have caught a checkpoint half-written under its temporary name: not a state
        p: (p.stat().st_mtime_ns, _sha(p))
        for p in zoo_dir.glob("runs/*/checkpoints/*/model.safetensors")
        if not p.parent.name.startswith(".tmp")
    }
    done_before = sorted(f.name for f in (zoo_dir / "runs").iterdir() if rf.is_done(f))
    launches_before = {
        f.name: len(_launches(f)) for f in (zoo_dir / "runs").iterdir() if (f / "zoo.log").exists()
    }

    second = _zoo("run", spec_path, "--zoo_dir", zoo_dir, "--workers", 2)
    launches_second = {f.name: len(_launches(f)) for f in (zoo_dir / "runs").iterdir()}
    third = _zoo("run", spec_path, "--zoo_dir", zoo_dir)
    launches_third = {f.name: len(_launches(f)) for f in (zoo_dir / "runs").iterdir()}
    return argparse.Namespace(
        dir=zoo_dir,
        spec=spec_path,
        partial=partial,
        before=before,
        done_before=done_before,
        launches_before=launches_before,
        second=second,
        third=third,
        launches_second=launches_second,
        launches_third=launches_third,
    )


def test_killed_zoo_completes_only_the_missing_states(zoo):
    assert zoo.second.returncode == 0, zoo.second.stderr[-2000:]
    k = len(zoo.done_before)
    assert (
        f"8 runs in this selection: {k} already complete, {8 - k} completed now, 0 failed"
        in zoo.second.stdout
    )
    for path, (mtime, sha) in zoo.before.items():  # states written before the kill were not redone
        assert _sha(path) == sha, path
        if path.parents[2].name in zoo.done_before:  # finished runs: not even rewritten
            assert path.stat().st_mtime_ns == mtime, path
        # (train_finetune.py re-records epoch 0, identically, when it resumes from epoch 0)
    leftovers = sorted(p for p in zoo.dir.glob("runs/*/checkpoints/.tmp*"))
    assert not leftovers, leftovers  # a checkpoint the kill cut short was cleared, never kept as a state
    for name in zoo.done_before:  # finished runs were not started again
        assert len(_launches(zoo.dir / "runs" / name)) == zoo.launches_before[name]
    relaunch = _launches(zoo.partial)[-1]
    assert relaunch.endswith("--resume") or " --resume" in relaunch  # the cut-short run resumed
    assert zoo.third.returncode == 0 and "8 already complete, 0 completed now" in zoo.third.stdout
    assert zoo.launches_third == zoo.launches_second  # nothing started
    status = _zoo("status", "--zoo_dir", zoo.dir)
    assert (
        f"8 runs (8 done, 0 running, 0 partial, 0 failed, 0 pending); {N_STATES}/{N_STATES}" in status.stdout
    )


def test_manifest_and_checkpoints_reproduce_their_metrics(zoo):
    rows = [r for r in read_manifest(zoo.dir) if r["stage"] != "sparse"]  # (the analyses add sparse twins)
    assert len(rows) == N_STATES and all(r["run_complete"] for r in rows)
    assert sorted((r["run_id"], r["epoch"]) for r in rows if r["stage"] == "pretrain") == sorted(
        (f"pt_lr{lr}_wd0.01_s{s}", e) for lr in ("0.0001", "0.001") for s in (0, 1) for e in (1, 2)
    )
    with open(zoo.dir / "manifest.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len([t for t in table if t["stage"] != "sparse"]) == N_STATES
    assert {
        "metric.validation.accuracy",
        "metric.test.loss",
        "metric.validation.mlm_acc",
        "hp.learning_rate",
        "hp.pretrain.learning_rate",
        "checkpoint",
        "sha256",
        "n_parameters",
    } <= set(table[0])
    torch.set_num_threads(1)
    for row in rows:
        path = zoo.dir / row["checkpoint"] / "model.safetensors"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row["sha256"]
        got = reproduce(zoo.dir, row)
        assert got["loss"] == pytest.approx(row["metric.validation.loss"], rel=1e-5, abs=1e-6), row[
            "checkpoint"
        ]
        key = "accuracy" if row["stage"] == "finetune" else "mlm_acc"
        assert got[key] == row[f"metric.validation.{key}"]
        if row["stage"] == "finetune":
            assert (
                row["hp.pretrain.learning_rate"]
                == rf.read_json(zoo.dir / "runs" / row["parent_run"] / "zoo_run.json")["hparams"][
                    "learning_rate"
                ]
            )
    pt = next(r for r in rows if r["stage"] == "pretrain")
    assert pt["n_parameters"] == sum(t.numel() for t in load_weights(zoo.dir, pt).values())


def test_loader_on_the_zoo(zoo):
    seen = 0
    for _, weights in iter_states(zoo.dir, stage="finetune", epochs=[2], layers=[1, "classifier.*"]):
        assert all(n.startswith(("encoder.layers.1.", "classifier.")) for n in weights)
        vector, index = flatten(weights)
        back = unflatten(vector, index)
        assert all(torch.equal(back[n], weights[n]) for n in weights)
        seen += 1
    assert seen == 4
    parts = {
        s: ZooDataset(zoo.dir, s, layers=[0], target="metric.test.accuracy", seed=0)
        for s in ("train", "validation", "test")
    }
    assert sum(len(d) for d in parts.values()) == 12 and all(len(d) for d in parts.values())
    lineages = {s: {group_of(r, "lineage") for r in d.rows} for s, d in parts.items()}
    assert not (
        lineages["train"] & lineages["validation"]
        or lineages["train"] & lineages["test"]
        or lineages["validation"] & lineages["test"]
    )
    x, y = parts["test"][0]
    assert x.shape == (parts["test"].index[-1].end,) and y == parts["test"].rows[0]["metric.test.accuracy"]


def test_analyses_on_the_zoo(zoo, capsys):
    from zoo.analyses import read_predictions

    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("zoo_cli", REPO_ROOT / "zoo.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    cli.main(["analyze", "--zoo_dir", str(zoo.dir), "--levels", "0.5,0.9", "--save_sparse"])
    assert "mean pairwise agreement" in capsys.readouterr().out
    out = zoo.dir / "analysis"
    with open(out / "agreement_sst2.csv") as fh:
        table = list(csv.reader(fh))
    ids, m = table[0][1:], np.array([[float(v) for v in r[1:]] for r in table[1:]])
    assert len(ids) == 4 and np.array_equal(m, m.T) and np.all(np.diag(m) == 1.0)
    a, b = (read_predictions(zoo.dir / "runs" / i / "predictions" / "epoch_2_test.jsonl") for i in ids[:2])
    assert m[0, 1] == np.mean([a[k] == b[k] for k in a])

    rows = read_manifest(zoo.dir, rebuild=False)
    sparse = [r for r in rows if r["stage"] == "sparse"]
    assert len(sparse) == 4 * 2 * 2 and len(rows) == N_STATES + 16
    for r in sparse:
        w = load_weights(zoo.dir, r)
        pruned = [
            n
            for n in w
            if n.startswith(("encoder.layers.", "encoder.pooler.", "classifier."))
            and n.endswith("weight")
            and w[n].dim() == 2
        ]
        total = sum(w[n].numel() for n in pruned)
        zeros = sum(int((w[n] == 0).sum()) for n in pruned)
        want = (
            round(r["hp.sparsity"] * total)
            if r["hp.sparsity_scope"] == "global"
            else sum(round(r["hp.sparsity"] * w[n].numel()) for n in pruned)
        )
        assert zeros == want and r["metric.sparsity.achieved"] == want / total
        assert r["metric.test.accuracy"] is not None and r["hp.learning_rate"] == 1e-3
    with open(out / "weight_stats.csv") as fh:
        stats = list(csv.DictReader(fh))
    assert len({(s["run_id"], s["epoch"]) for s in stats}) == N_STATES
    one = next(s for s in stats if s["layer"] == "encoder.layers.0.ffn_in.weight")
    row = next(r for r in rows if r["run_id"] == one["run_id"] and str(r["epoch"]) == one["epoch"])
    x = load_weights(zoo.dir, row)["encoder.layers.0.ffn_in.weight"].numpy().ravel()
    assert float(one["p25"]) == pytest.approx(float(np.percentile(x, 25)))
    assert float(one["var"]) == pytest.approx(float(x.var()), rel=1e-6)
    ridge = json.loads((out / "ridge.json").read_text())["sst2"]
    assert ridge["target"] == "metric.test.accuracy"
