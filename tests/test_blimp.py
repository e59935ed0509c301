"""BLiMP with pseudo-log-likelihoods: batched PLL == one mask at a time, choice, aggregation, CLI, errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.tokenization import load_tokenizer, special_ids
from evaluation.blimp import aggregate, encode_pairs, evaluate, load_blimp, main, score_pairs
from evaluation.pll import encode, pseudo_log_likelihoods
from model import ModelConfig, PretrainingModel
from model.io import save_model
from utils.paths import REPO_ROOT


def make_model(config: str):
    torch.manual_seed(0)
    model = PretrainingModel(ModelConfig.from_json(REPO_ROOT / "configs" / f"{config}.json")).eval()
    for p in model.parameters():  # larger weights than at init: predictions then depend on the context
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.2)
    return model


@pytest.fixture(scope="module")
def tiny_model():
    return make_model("tiny")


@pytest.fixture(scope="module")
def blimp_subset(data_root):
    return load_blimp(data_root / "blimp" / "data", max_pairs_per_paradigm=2)


def one_at_a_time_pll(model, tokenizer, sentence, l2r):
    """Reference: for each token, mask it (and, for l2r, the rest of its word), run the full model."""
    special = special_ids(tokenizer)
    enc = tokenizer.encode(sentence, add_special_tokens=False)
    ids = [special.cls, *enc.ids, special.sep]
    words = [None, *enc.word_ids, None]
    total = 0.0
    for t in range(1, len(ids) - 1):
        x = list(ids)
        for q in range(t, len(ids) - 1):
            if q == t or (l2r and words[q] == words[t]):
                x[q] = special.mask
        with torch.no_grad():
            logits = model(torch.tensor([x])).mlm_logits[0, t]  # full head, no masked_positions
        total += F.log_softmax(logits, -1)[ids[t]].item()
    return total


@pytest.mark.parametrize("config, scoring", [("tiny", "pll"), ("tiny", "pll_word_l2r"), ("tiny_elc", "pll")])
def test_batched_pll_equals_one_mask_at_a_time(tiny_model, tokenizer_path, blimp_subset, config, scoring):
    if config != "tiny":  # the LTG-BERT backbone (relative positions) must not see its padding either
        tiny_model = make_model(config)
    tokenizer = load_tokenizer(tokenizer_path)
    special = special_ids(tokenizer)
    pool = blimp_subset["good"] + blimp_subset["bad"]
    _, _, pool_words = encode(tokenizer, pool, special.cls, special.sep, 128)
    pool_multi = ((pool_words[:, 1:] == pool_words[:, :-1]) & (pool_words[:, 1:] >= 0)).any(1).tolist()
    # both kinds of sentence: with a word of several subwords (where the variants differ) and without
    multi_pool = [s for s, m in zip(pool, pool_multi) if m][:5]
    single_pool = [s for s, m in zip(pool, pool_multi) if not m][:4]
    assert len(multi_pool) >= 2 and len(single_pool) >= 1, "the sample needs both kinds of sentence"
    sentences = multi_pool + single_pool
    ids, lengths, words = encode(tokenizer, sentences, special.cls, special.sep, 128)
    # a small batch crosses sentence boundaries inside chunks and leaves a ragged last chunk
    got = pseudo_log_likelihoods(tiny_model, ids, lengths, words, special.mask, scoring, batch_size=7)
    want = [one_at_a_time_pll(tiny_model, tokenizer, s, scoring == "pll_word_l2r") for s in sentences]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    # the variants agree exactly on sentences whose words are single tokens, and only there
    multi = np.array([True] * len(multi_pool) + [False] * len(single_pool))
    other = pseudo_log_likelihoods(tiny_model, ids, lengths, words, special.mask, "pll", batch_size=64)
    np.testing.assert_allclose(got[~multi], other[~multi], rtol=1e-5, atol=1e-4)
    if scoring == "pll_word_l2r":
        diff = np.abs(got[multi] - other[multi])
        assert np.all(diff > 1e-4) and diff.mean() > 0.05  # float noise is ~1e-5


def test_higher_pll_is_chosen(tiny_model, tokenizer_path, blimp_subset):
    blimp_subset = {k: v[::3] for k, v in blimp_subset.items()}  # 45 pairs of 45 paradigms
    tokenizer = load_tokenizer(tokenizer_path)
    encoded = encode_pairs(tokenizer, blimp_subset, 128)
    good, bad = score_pairs(tiny_model, encoded, "pll", 512, torch.device("cpu"))
    result = evaluate(tiny_model, tokenizer, blimp_subset, "pll", 512, torch.device("cpu"))
    assert result["overall"] == pytest.approx(np.mean(good > bad))
    swapped = {**blimp_subset, "good": blimp_subset["bad"], "bad": blimp_subset["good"]}
    flipped = evaluate(tiny_model, tokenizer, swapped, "pll", 512, torch.device("cpu"))
    assert flipped["overall"] == pytest.approx(np.mean(bad > good))
    same = {**blimp_subset, "bad": blimp_subset["good"]}  # a tie is not a win
    assert evaluate(tiny_model, tokenizer, same, "pll", 512, torch.device("cpu"))["overall"] == 0.0


def test_aggregation_per_paradigm_field_overall():
    paradigms = ["a", "a", "a", "b", "b", "c", "d", "d", "d", "d"]
    fields = ["morphology"] * 5 + ["syntax"] + ["syntax_semantics"] * 4
    correct = [1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    got = aggregate(paradigms, fields, np.array(correct, dtype=bool))
    assert got["paradigms"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0, "d": 0.25})
    assert got["fields"] == pytest.approx({"morphology": 3 / 5, "syntax": 1.0, "syntax_semantics": 0.25})
    assert got["overall"] == pytest.approx(5 / 10)  # micro: over pairs
    assert got["macro_paradigm"] == pytest.approx((2 / 3 + 0.5 + 1.0 + 0.25) / 4)
    assert got["n_pairs"] == 10


def test_real_blimp_reader(blimp_subset):
    assert len(blimp_subset["good"]) == 67 * 2 == len(set(blimp_subset["paradigm"])) * 2
    # the files spell one field three ways (syntax_semantics, syntax/semantics, syntax-semantics)
    assert set(blimp_subset["field"]) == {"morphology", "semantics", "syntax", "syntax_semantics"}
    assert blimp_subset["good"][0] == "Who should Derek hug after shocking Richard?"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model, tokenizer_path):
    run = tmp_path_factory.mktemp("run")
    for step in (20, 100, 3):  # steps sort numerically, not as strings
        d = run / "checkpoints" / f"step_{step}"
        save_model(tiny_model, d)
        (d / "args.json").write_text(json.dumps({"vocab_path": str(tokenizer_path)}))
        torch.nn.init.normal_(tiny_model.mlm_head.dense.weight, std=0.5)  # each step a different model
    return run


def test_cli_scores_every_checkpoint_of_a_run(tiny_run, tokenizer_path, data_root, capsys):
    from model.io import load_model

    out = tiny_run / "blimp.json"
    results = main(
        ["--checkpoint_path", str(tiny_run), "--max_pairs_per_paradigm", "1", "--output_file", str(out)]
    )
    assert [r["step"] for r in results] == [3, 20, 100]
    saved = json.loads(out.read_text())["results"]
    assert [r["overall"] for r in saved] == [r["overall"] for r in results]
    pairs = load_blimp(data_root / "blimp" / "data", 1)
    want = evaluate(load_model(tiny_run / "checkpoints" / "step_20").eval(), load_tokenizer(tokenizer_path),
                    pairs, "pll", 1024, torch.device("cpu"))  # fmt: skip
    assert saved[1]["paradigms"] == pytest.approx(want["paradigms"])
    table = capsys.readouterr().out
    assert "syntax_semantics" in table and len([line for line in table.splitlines() if line.strip()]) >= 4


def test_folder_without_checkpoints_is_one_line_error(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "evaluation.blimp", "--checkpoint_path", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "no checkpoints" in proc.stderr and str(tmp_path) in proc.stderr
