"""train_finetune.py --task squad on real SQuAD v1.1 subsets with a model pretrained in the test session:
a valid official predictions file, consistent with the recorded metrics, that beats a trivial baseline."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_finetune
from data.tokenization import load_tokenizer, special_ids
from finetune.args import FinetuneConfig
from finetune.evaluate import evaluate_split
from finetune.modeling import load_finetuned, read_finetune_record
from finetune.squad import evaluate, read_squad
from finetune.tasks import build_task
from training.run_config import from_record


def short_paragraph_subset(src: Path, dst: Path, min_questions: int, max_chars: int = 450) -> Path:
    """The first articles' paragraphs of at most max_chars characters, until min_questions questions:
    short contexts fit in one or two 128-token windows, which keeps training cheap."""
    data = json.loads(src.read_text(encoding="utf-8"))
    articles, n = [], 0
    for article in data["data"]:
        paragraphs = [p for p in article["paragraphs"] if len(p["context"]) <= max_chars]
        if paragraphs and n < min_questions:
            articles.append({**article, "paragraphs": paragraphs})
            n += sum(len(p["qas"]) for p in paragraphs)
    dst.write_text(json.dumps({"version": data["version"], "data": articles}), encoding="utf-8")
    return dst


def run_squad(out, pretrained, tokenizer_path, train, dev, **over) -> list[dict]:
    """train_finetune.py --task squad on the given files; the metrics.jsonl records."""
    args = {
        "task": "squad", "train_file": train, "dev_file": dev, "checkpoint_path": pretrained,
        "vocab_path": tokenizer_path, "output_dir": out, "epochs": 1, "batch_size": 32,
        "learning_rate": 3e-3, "head_learning_rate": 5e-3, "max_seq_length": 128, "doc_stride": 64,
        "max_query_length": 32, "validation_fraction": 0.1, "eval_train_subset": 100, "device": "cpu",
        "mixed_precision": "no", "seed": 1, **over,
    }  # fmt: skip
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_finetune.main([x for k, v in args.items() for x in (f"--{k}", str(v))] + ["--no-tensorboard"])
    finally:
        torch.set_num_threads(n)
    assert not (out / "tensorboard").exists()
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def squad_run(pretrained_tiny, tokenizer_path, data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("squad")
    train = short_paragraph_subset(
        data_root / "squad" / "train-v1.1.subset-44articles.json", tmp / "t.json", 1200
    )
    dev = short_paragraph_subset(data_root / "squad" / "dev-v1.1.json", tmp / "d.json", 400)
    run_squad(tmp / "run", pretrained_tiny, tokenizer_path, train, dev)
    return tmp / "run", read_squad(dev)


def test_squad_predictions_are_official_and_beat_a_trivial_baseline(squad_run):
    out, dev = squad_run
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    split = json.loads((out / "split.json").read_text())
    assert [e.id for e in dev] == split["splits"]["test"] and len(dev) >= 400
    official = json.loads((out / "predictions" / "epoch_1_test.json").read_text())
    assert isinstance(official, dict) and list(official) == [e.id for e in dev]
    assert all(isinstance(v, str) and v in e.context for e, v in zip(dev, official.values()))
    scores = evaluate(dev, official)  # the file alone reproduces the recorded metrics
    assert {"loss": records[1]["test"]["loss"], **scores} == pytest.approx(records[1]["test"], abs=1e-9)
    lines = [json.loads(x) for x in (out / "predictions" / "epoch_1_test.jsonl").open()]
    assert [x["answers"] for x in lines] == [[a["text"] for a in e.answers] for e in dev]
    assert 100 * sum(x["f1"] for x in lines) / len(lines) == pytest.approx(scores["f1"])

    # trivial baseline: as many words as the model predicted, but from the start of the context
    first_words = {e.id: " ".join(e.context.split()[: max(1, len(official[e.id].split()))]) for e in dev}
    baseline = evaluate(dev, first_words)
    first_sentence = evaluate(dev, {e.id: re.split(r"(?<=[.!?])\s", e.context)[0] for e in dev})
    print(f"model {scores}, length-matched first words {baseline}, first sentence {first_sentence}")
    assert scores["f1"] >= baseline["f1"] + 2.0 and scores["exact_match"] > baseline["exact_match"]
    assert scores["f1"] >= records[0]["test"]["f1"] + 2.0  # training helped
    assert records[1]["train"]["loss"] < records[0]["train"]["loss"] - 1.0


def test_squad_mlp_head_is_trained_saved_and_reloaded(pretrained_tiny, tokenizer_path, data_root, tmp_path):
    """--head_hidden_sizes gives SQuAD an MLP head (the zoo's "one hidden layer"): it is the head that
    trains, is saved, and reproduces the recorded metrics when reloaded."""
    train = short_paragraph_subset(
        data_root / "squad" / "train-v1.1.subset-44articles.json", tmp_path / "t.json", 300
    )
    dev = short_paragraph_subset(data_root / "squad" / "dev-v1.1.json", tmp_path / "d.json", 60)
    out = tmp_path / "run"
    over = {
        "head_hidden_sizes": 32,
        "head_activation": "tanh",
        "eval_train_subset": 50,
        "validation_fraction": 0.3,
    }
    records = run_squad(out, pretrained_tiny, tokenizer_path, train, dev, **over)
    assert records[1]["train"]["loss"] < records[0]["train"]["loss"]
    weights = load_file(out / "checkpoints/epoch_1/model.safetensors")
    head = {k: list(v.shape) for k, v in weights.items() if k.startswith("qa_outputs.")}
    assert head == {
        "qa_outputs.1.weight": [32, 64], "qa_outputs.1.bias": [32],
        "qa_outputs.4.weight": [2, 32], "qa_outputs.4.bias": [2],
    }  # fmt: skip
    first = load_file(out / "checkpoints/epoch_0/model.safetensors")
    assert not torch.equal(first["qa_outputs.1.weight"], weights["qa_outputs.1.weight"])

    model = load_finetuned(out / "checkpoints/epoch_1")
    assert read_finetune_record(out / "checkpoints/epoch_1")["head"]["hidden_sizes"] == [32]
    tokenizer = load_tokenizer(tokenizer_path)
    args = json.loads((out / "run_args.json").read_text())
    task = build_task("squad", tokenizer, special_ids(tokenizer), from_record(FinetuneConfig, args))
    test = read_squad(dev)
    scores, _ = evaluate_split(model, task, test, task.featurize(test), 64, torch.device("cpu"), "no", 0)
    assert scores == pytest.approx(records[1]["test"], rel=1e-5)
