"""Probing: CoNLL-U reading, word pooling, cached extraction, probes and MDL, CLI across runs, bad input."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from data.tokenization import load_tokenizer, special_ids
from evaluation import representations
from evaluation.conllu import labels_of, read_conllu
from evaluation.probes import ProbeConfig, evaluate_probe, online_codelength, train_probe
from evaluation.probing import main
from evaluation.representations import cached_representations, load_kept, load_layers, pool_words
from model import ModelConfig, PretrainingModel
from model.io import save_model
from utils.paths import REPO_ROOT


def test_pooling_first_and_mean_hand_built():
    hidden = torch.arange(24, dtype=torch.float32).view(2, 6, 2)  # [B=2, S=6, H=2]
    token_word = torch.tensor([[-1, 0, 0, 1, -1, -1], [-1, 0, 1, 1, 1, -1]])  # -1: [CLS]/[SEP]/padding
    first, present = pool_words(hidden, token_word, "first")
    mean, _ = pool_words(hidden, token_word, "mean")
    assert present.tolist() == [[True, True], [True, True]]
    torch.testing.assert_close(first[0], hidden[0, [1, 3]])
    torch.testing.assert_close(first[1], hidden[1, [1, 2]])
    torch.testing.assert_close(mean[0], torch.stack([hidden[0, 1:3].mean(0), hidden[0, 3]]))
    torch.testing.assert_close(mean[1], torch.stack([hidden[1, 1], hidden[1, 2:5].mean(0)]))
    _, present = pool_words(hidden, torch.tensor([[-1, 0, 2, 2, -1, -1]]), "first")  # word 1 has no token
    assert present.tolist() == [[True, False, True]]


def test_conllu_reader_skips_ranges_and_empty_nodes(data_root):
    path = data_root / "ud_ewt" / "en_ewt-ud-dev.conllu"
    tb = read_conllu(path)
    lines = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line[:1].isdigit()]
    words = [f[1] for f in lines if f[0].isdigit()]  # plain integer ids only
    assert len(tb.words) == 2001
    assert [w for s in tb.words for w in s] == words
    assert len(words) < len(lines)  # the file has multiword ranges and empty nodes that were skipped
    upos = labels_of(tb, "UPOS")
    assert [u for s in upos for u in s] == [f[3] for f in lines if f[0].isdigit()]
    sub = read_conllu(path, max_sentences=50, seed=3)
    assert len(sub.words) == 50 and sub.words == read_conllu(path, max_sentences=50, seed=3).words
    assert all(s in tb.words for s in sub.words[:5])


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    config = ModelConfig.from_json(REPO_ROOT / "configs" / "tiny.json")
    config.max_position_embeddings = 24  # short: some EWT sentences are cut, their last words dropped
    return PretrainingModel(config).eval()


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_cached_extraction_matches_one_sentence_at_a_time(
    tiny_model, tokenizer_path, data_root, tmp_path, pooling
):
    tokenizer = load_tokenizer(tokenizer_path)
    special = special_ids(tokenizer)
    tb = read_conllu(data_root / "ud_ewt" / "en_ewt-ud-dev.conllu", max_sentences=12, seed=1)
    cache = cached_representations(
        tiny_model, "w", tokenizer, tb, 12, pooling, tmp_path, 5, torch.device("cpu")
    )
    kept = load_kept(cache)
    feats = load_layers(cache, [0, 1, 2])  # [kept words, 3, H]
    rows, offset = [], 0
    for words in tb.words:  # reference: one unpadded sentence, pooled by a loop over its words
        enc = tokenizer.encode(words, is_pretokenized=True, add_special_tokens=False)
        ids, word_ids = enc.ids[:22], enc.word_ids[:22]
        with torch.no_grad():
            states = tiny_model.encoder(
                torch.tensor([[special.cls, *ids, special.sep]]), output_hidden_states=True
            )
        for w in range(len(words)):
            pos = [i + 1 for i, x in enumerate(word_ids) if x == w]
            if pos:
                pos = pos[:1] if pooling == "first" else pos
                rows.append(torch.stack([h[0, pos].mean(0) for h in states.hidden_states]))
        offset += len(words)
    assert len(kept) == offset and kept.sum() == len(rows) < offset  # some words fell past 22 subwords
    np.testing.assert_allclose(feats.astype(np.float32), torch.stack(rows).numpy(), rtol=1e-2, atol=1e-2)
    # a second request is served from the cache: extraction must not run again
    again = cached_representations(
        tiny_model, "w", tokenizer, tb, 12, pooling, tmp_path, 5, "no device needed"
    )
    assert again == cache


def synthetic_task(n, shuffle, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(5, size=n)
    x = (3 * rng.normal(size=(5, 1, 16))[y] + rng.normal(size=(n, 1, 16))).astype(np.float32)  # separable
    if shuffle:
        y = rng.permutation(y)
    return torch.from_numpy(x).half(), torch.from_numpy(y)


def test_probe_and_mdl_on_decodable_vs_shuffled_labels():
    cfg = ProbeConfig(min_steps=100, eval_every=50)
    results = {}
    for shuffle in (False, True):
        x, y = synthetic_task(1500, shuffle)
        (x_tr, y_tr), (x_dev, y_dev), (x_te, y_te) = (
            (x[:1000], y[:1000]),
            (x[1000:1250], y[1000:1250]),
            (x[1250:], y[1250:]),
        )
        probe = train_probe(x_tr, y_tr, 5, x_dev, y_dev, cfg)
        results[shuffle] = {
            **evaluate_probe(probe, x_te, y_te),
            **online_codelength(x_tr, y_tr, 5, x_dev, y_dev, cfg),
        }
    real, shuffled = results[False], results[True]
    assert real["accuracy"] > 0.95 and real["macro_f1"] > 0.9
    majority = np.bincount(synthetic_task(1500, True)[1][1250:].numpy()).max() / 250
    assert shuffled["accuracy"] < majority + 0.08  # chance: nothing to learn
    assert real["codelength_kbits"] < 0.5 * shuffled["codelength_kbits"]
    assert real["compression"] > 2.0 and 0.8 < shuffled["compression"] < 1.1
    assert real["uniform_kbits"] == pytest.approx(1000 * np.log2(5) / 1000)


@pytest.fixture(scope="module")
def two_seed_runs(tmp_path_factory, tokenizer_path):
    root = tmp_path_factory.mktemp("runs")
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = PretrainingModel(ModelConfig.from_json(REPO_ROOT / "configs" / "tiny.json"))
        for step in (10, 200):
            d = root / f"seed{seed}" / "checkpoints" / f"step_{step}"
            save_model(model, d)
            (d / "args.json").write_text(json.dumps({"vocab_path": str(tokenizer_path), "seed": seed}))
            torch.nn.init.normal_(model.encoder.word_embeddings.weight, std=1.0)
    return root


def test_cli_across_checkpoints_and_seeds(two_seed_runs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    runs = [str(two_seed_runs / "seed0"), str(two_seed_runs / "seed1")]
    args = ["--checkpoint_path", *runs, "--output_dir", str(out), "--tasks", "upos", "--max_sentences", "60",
            "--probe_min_steps", "20", "--probe_epochs", "1"]  # fmt: skip
    rows = main(args)
    assert [(r["run"], r["step"], r["layer"]) for r in rows] == [
        (run, step, layer) for run in ("seed0", "seed1") for step in (10, 200) for layer in (0, 1, 2, "mix")
    ]
    table = list(csv.DictReader(open(out / "probing.csv")))
    assert len(table) == 16 and float(table[3]["accuracy"]) == pytest.approx(rows[3]["accuracy"], abs=1e-5)
    majority_upos = 0.25  # NOUN, the most frequent tag in EWT, is about 17% of words
    assert all(r["accuracy"] > majority_upos and r["compression"] > 1.0 for r in rows)
    assert (out / "probing_upos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "tensorboard" / "seed1").glob("events.out.tfevents.*"))) == 1
    assert len(list((out / "cache").iterdir())) == 2 * 2 * 3  # runs x steps x splits

    def no_extraction(*a, **k):
        raise AssertionError("representations should come from the cache")

    monkeypatch.setattr(representations, "extract", no_extraction)
    again = main([*args, "--no_mdl"])
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]  # deterministic, from the cache


def test_conllu_without_the_column_is_one_line_error(two_seed_runs, tmp_path, data_root):
    lines = (data_root / "ud_ewt" / "en_ewt-ud-dev.conllu").read_text(encoding="utf-8").splitlines()[:60]
    fields = [line.split("\t") for line in lines]
    stripped = ["\t".join([*f[:7], "_", *f[8:]]) if len(f) == 10 else f[0] for f in fields]  # DEPREL -> _
    bad = tmp_path / "no_deprel.conllu"
    bad.write_text("\n".join(stripped) + "\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.probing", "--checkpoint_path", str(two_seed_runs / "seed0"),
         "--output_dir", str(tmp_path / "out"), "--tasks", "deprel", "--train_file", str(bad)],  # fmt: skip
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "no_deprel.conllu" in proc.stderr and "DEPREL" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written before the inputs were checked
