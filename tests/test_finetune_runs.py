"""train_finetune.py end to end on real SST-2 with a model pretrained in the test session: it learns,
its records are complete and reloadable, and equal seeds give identical runs (also across a resume)."""

import json
import shutil
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import train_finetune
from data.tokenization import load_tokenizer, special_ids
from finetune.evaluate import evaluate_split
from finetune.modeling import load_finetuned
from finetune.splits import load_split
from finetune.tasks import build_task
from utils.errors import UserError

SPLITS = ("train", "validation", "test")
CHECKPOINT_FILES = {"model.safetensors", "config.json", "args.json", "code_version.json", "training_state.pt"}


def finetune(out, checkpoint, vocab, data_dir, **over):
    args = {
        "task": "sst2", "data_dir": data_dir, "checkpoint_path": checkpoint, "vocab_path": vocab,
        "output_dir": out, "epochs": 2, "batch_size": 32, "learning_rate": 2e-3, "head_learning_rate": 4e-3,
        "max_seq_length": 64, "eval_train_subset": 200, "device": "cpu", "mixed_precision": "no", "seed": 1,
        "no_tensorboard": True,
    }  # fmt: skip
    args.update(over)
    argv = []
    for k, v in args.items():
        argv += [f"--{k}"] if v is True else [f"--{k}", str(v)] if v is not None else []
    train_finetune.main(argv)
    return Path(out)


def lines(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def head_rows(path, n, tmp):
    """The first n rows of a real GLUE file (a subset keeps the ids of the full file)."""
    rows = Path(path).read_text(encoding="utf-8").splitlines(keepends=True)
    out = tmp / f"{Path(path).stem}_{n}.tsv"
    out.write_text("".join(rows[: n + 1]), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def sst2_run(pretrained_tiny, tokenizer_path, data_root, tmp_path_factory):
    """2 epochs on the first 3000 SST-2 train rows (300 held out as validation); test = the GLUE dev set."""
    tmp = tmp_path_factory.mktemp("sst2")
    train = head_rows(data_root / "sst2" / "train.tsv", 3000, tmp)
    return finetune(tmp / "run", pretrained_tiny, tokenizer_path, data_root / "sst2", train_file=train)


def test_sst2_beats_the_majority_class(sst2_run, data_root):
    records = lines(sst2_run)
    dev_labels = [
        int(r.split("\t")[1]) for r in (data_root / "sst2" / "dev.tsv").read_text().splitlines()[1:]
    ]
    majority = max(np.mean(dev_labels), 1 - np.mean(dev_labels))  # 444 / 872 = 0.509
    assert records[-1]["test"]["accuracy"] >= majority + 0.10
    assert records[-1]["train"]["loss"] < records[0]["train"]["loss"] - 0.2


def test_records_are_complete_and_reload_reproduces_them(sst2_run, pretrained_tiny, tokenizer_path):
    records = lines(sst2_run)
    split = json.loads((sst2_run / "split.json").read_text())
    assert not (sst2_run / "tensorboard").exists()  # --no_tensorboard
    assert split["sizes"] == {"train": 2700, "validation": 300, "test": 872}
    steps = (2700 // 32) * np.arange(3)
    assert [r["epoch"] for r in records] == [0, 1, 2] and [r["step"] for r in records] == steps.tolist()
    for r in records:
        for name in SPLITS:
            assert set(r[name]) == {"loss", "accuracy"} and np.isfinite(list(r[name].values())).all()
    for epoch, r in enumerate(records):
        ckpt = sst2_run / "checkpoints" / f"epoch_{epoch}"
        assert CHECKPOINT_FILES <= {f.name for f in ckpt.iterdir()}
        assert json.loads((ckpt / "args.json").read_text())["task"] == "sst2"
        for name in ("validation", "test"):
            preds = [json.loads(x) for x in (sst2_run / "predictions" / f"epoch_{epoch}_{name}.jsonl").open()]
            assert [p["id"] for p in preds] == split["splits"][name]
            assert np.mean([p["prediction"] == p["label"] for p in preds]) == pytest.approx(
                r[name]["accuracy"]
            )
            assert all(p["prediction"] == int(np.argmax(p["probabilities"])) for p in preds)
    # the head starts from its seed and the encoder from the pretrained weights
    first, pretrained = (
        load_file(sst2_run / "checkpoints/epoch_0/model.safetensors"),
        load_file(pretrained_tiny / "model.safetensors"),
    )
    assert torch.equal(first["encoder.layers.1.ffn_in.weight"], pretrained["encoder.layers.1.ffn_in.weight"])
    assert not torch.equal(
        first["encoder.layers.1.ffn_in.weight"],
        load_file(sst2_run / "checkpoints/epoch_2/model.safetensors")["encoder.layers.1.ffn_in.weight"],
    )

    # separate learning rates: the head's two tensors (weight, bias) in the 4e-3 groups, the encoder at 2e-3
    state = torch.load(sst2_run / "checkpoints/epoch_2/training_state.pt", weights_only=True)
    groups = state["trainer"]["optimizer"]["param_groups"]
    sizes = {lr: sum(len(g["params"]) for g in groups if g["initial_lr"] == lr) for lr in (2e-3, 4e-3)}
    assert sizes[4e-3] == 2 and sizes[2e-3] > 10 and len(first) - 2 >= sizes[2e-3]

    # reloading epoch 1 reproduces its recorded validation loss and accuracy
    model = load_finetuned(sst2_run / "checkpoints" / "epoch_1")
    tokenizer = load_tokenizer(tokenizer_path)
    task = build_task(
        "sst2", tokenizer, special_ids(tokenizer), Namespace(max_seq_length=64, label_smoothing=0.0)
    )
    train_args = json.loads((sst2_run / "run_args.json").read_text())
    train, dev, extra = task.load(train_args["data_dir"], train_args["train_file"])
    splits, _ = load_split(sst2_run / "split.json", "sst2", train + dev)
    valid = splits["validation"]
    scores, _ = evaluate_split(model, task, valid, task.featurize(valid), 64, torch.device("cpu"), "no", 0)
    assert scores["accuracy"] == records[1]["validation"]["accuracy"]
    assert scores["loss"] == pytest.approx(records[1]["validation"]["loss"], rel=1e-5)


def test_same_seeds_identical_runs_across_a_resume_and_resplit(
    pretrained_tiny, tokenizer_path, data_root, tmp_path
):
    """--split resplit on 1500 train + 300 dev rows, given as files without --data_dir: runs with equal
    seeds, the others reusing the first's split.json, stopped (after epoch 0, then 1) and resumed, or
    crashed between an epoch's records and its checkpoint, give the same split, metrics (every epoch
    once), predictions and weights."""
    kw = dict(
        train_file=head_rows(data_root / "sst2" / "train.tsv", 1500, tmp_path),
        dev_file=head_rows(data_root / "sst2" / "dev.tsv", 300, tmp_path),
        split="resplit", max_train_examples=320, epochs=2, data_dir=None,
    )  # fmt: skip
    a = finetune(tmp_path / "a", pretrained_tiny, tokenizer_path, **kw)
    kw["split_file"] = a / "split.json"
    kw["mixed_precision"] = "auto"  # "no" on the CPU: a resume compares it with the resolved value saved
    b = finetune(tmp_path / "b", pretrained_tiny, tokenizer_path, stop_at_epoch=0, **kw)
    epoch_0 = (b / "checkpoints/epoch_0/model.safetensors").stat().st_mtime_ns
    finetune(b, pretrained_tiny, tokenizer_path, resume=True, stop_at_epoch=1, **kw)
    assert [r["epoch"] for r in lines(b)] == [0, 1] and not (b / "checkpoints" / "epoch_2").exists()
    assert (b / "checkpoints/epoch_0/model.safetensors").stat().st_mtime_ns == epoch_0  # not redone
    finetune(b, pretrained_tiny, tokenizer_path, resume=True, **kw)
    # a crash after epoch 2's metrics line and predictions, before its checkpoint was in place
    shutil.rmtree(b / "checkpoints" / "epoch_2")
    finetune(b, pretrained_tiny, tokenizer_path, resume=True, **kw)
    # a crash before the first checkpoint: --resume starts over, dropping the records written so far
    c = finetune(tmp_path / "c", pretrained_tiny, tokenizer_path, stop_at_epoch=0, **kw)
    shutil.rmtree(c / "checkpoints" / "epoch_0")
    with pytest.raises(UserError, match="--checkpoint_path is required"):  # nothing to start over from
        finetune(c, None, tokenizer_path, resume=True, **kw)
    finetune(c, pretrained_tiny, tokenizer_path, resume=True, **kw)
    for run in (b, c):
        assert lines(a) == lines(run) and len(lines(a)) == 3  # every epoch exactly once
        assert (a / "split.json").read_text() == (run / "split.json").read_text()
        for name in ("validation", "test"):
            assert (a / f"predictions/epoch_2_{name}.jsonl").read_text() == (
                run / f"predictions/epoch_2_{name}.jsonl"
            ).read_text()
        wa, wb = (load_file(d / "checkpoints/epoch_2/model.safetensors") for d in (a, run))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # the split: pooled, de-duplicated by text, disjoint, 0.8 / 0.1 / 0.1
    split = json.loads((a / "split.json").read_text())
    texts = {}
    for f in (kw["train_file"], kw["dev_file"]):
        role = "train" if f == kw["train_file"] else "dev"
        for i, row in enumerate(Path(f).read_text().splitlines()[1:]):
            texts[f"{role}-{i}"] = row.split("\t")[0].strip()
    by_split = {n: {texts[i] for i in split["splits"][n]} for n in SPLITS}
    assert all(len(by_split[n]) == len(split["splits"][n]) for n in SPLITS)
    assert sum(len(v) for v in by_split.values()) == len(
        set(by_split["train"] | by_split["validation"] | by_split["test"])
    )
    assert len(set(texts.values())) == sum(split["sizes"].values())
    assert split["sizes"]["test"] == pytest.approx(0.1 * len(set(texts.values())), abs=1)
