"""Multi-bootstrap (MultiBERTs): coverage on synthetic data, paired vs unpaired, tiny exact cases, CLI."""

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

from evaluation.multibootstrap import bootstrap_samples, main, multibootstrap, summarize
from utils.paths import REPO_ROOT


def synthetic_scores(rng, seeds=10, examples=200, effect=0.05, shared_seed_sd=0.0):
    """Per-example scores [seeds, examples] for both arms; E[intervention - baseline] = effect exactly.

    Seed and example effects on the delta are random, so the estimate varies with the drawn seeds and
    examples as it does in real runs; shared_seed_sd adds a seed effect common to both arms (paired seeds).
    """
    shared = rng.normal(0, shared_seed_sd, size=(seeds, 1))
    base_seed, expt_seed = rng.normal(0, 0.02, size=(2, seeds, 1))
    example, example_delta = rng.normal(0, 0.1, size=examples), rng.normal(0, 0.2, size=examples)
    base = 0.7 + shared + base_seed + example + rng.normal(0, 0.05, size=(seeds, examples))
    expt = (
        0.7
        + effect
        + shared
        + expt_seed
        + example
        + example_delta
        + rng.normal(0, 0.05, size=(seeds, examples))
    )
    return base, expt


@pytest.mark.parametrize("paired", [True, False])
def test_interval_covers_known_effect_about_95_percent(paired):
    rng = np.random.default_rng(1234)
    covered = 0
    for _ in range(200):
        base, expt = synthetic_scores(rng)
        stats = multibootstrap(base, expt, np.zeros(base.shape[1]), "mean", nboot=200, paired=paired, rng=rng)
        covered += stats["delta"]["low"] <= 0.05 <= stats["delta"]["high"]
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_paired_interval_is_narrower_when_seeds_are_shared():
    rng = np.random.default_rng(7)
    base, expt = synthetic_scores(rng, shared_seed_sd=0.2)
    labels = np.zeros(base.shape[1])
    paired = multibootstrap(base, expt, labels, "mean", nboot=500, paired=True, rng=0)["delta"]
    unpaired = multibootstrap(base, expt, labels, "mean", nboot=500, paired=False, rng=0)["delta"]
    assert paired["high"] - paired["low"] < 0.5 * (unpaired["high"] - unpaired["low"])
    assert paired["low"] <= 0.05 <= paired["high"]


def tiny_case():
    labels = np.array([0, 1, 1])
    base = np.array([[0, 1, 0], [1, 1, 0]])
    expt = np.array([[0, 1, 1], [0, 0, 1]])
    return base, expt, labels


def test_tiny_case_equals_direct_numpy_computation():
    base, expt, labels = tiny_case()
    got = bootstrap_samples(base, expt, labels, "accuracy", nboot=6, paired=True, rng=3)
    rng = np.random.default_rng(3)  # the documented draw order: seeds, then examples
    for b in range(6):
        seeds, jj = rng.integers(2, size=2), rng.integers(3, size=3)
        want_base = np.mean([np.mean(base[s, jj] == labels[jj]) for s in seeds])
        want_expt = np.mean([np.mean(expt[s, jj] == labels[jj]) for s in seeds])
        np.testing.assert_allclose(got[b], [want_base, want_expt], rtol=0, atol=1e-12)
    # Without resampling every sample is the observed macro-average over seeds.
    fixed = bootstrap_samples(
        base, expt, labels, "accuracy", 3, True, 0, sample_seeds=False, sample_examples=False
    )
    np.testing.assert_allclose(fixed, [[np.mean(base == labels), np.mean(expt == labels)]] * 3)
    stats = summarize(got)
    delta = got[:, 1] - got[:, 0]
    assert stats["delta"]["low"] == pytest.approx(np.quantile(delta, 0.025))
    assert stats["delta"]["high"] == pytest.approx(np.quantile(delta, 0.975))
    assert stats["delta"]["p"] == pytest.approx(max(np.mean(delta <= 0), 1 / 6))


def test_per_example_fast_path_equals_callable_metric_and_exact_enumeration():
    base, expt, labels = tiny_case()
    fast = bootstrap_samples(base, expt, labels, "accuracy", nboot=20000, paired=True, rng=5)
    slow = bootstrap_samples(base, expt, labels, lambda y, p: np.mean(y == p), nboot=300, paired=True, rng=5)
    np.testing.assert_allclose(fast[:300], slow, atol=1e-12)
    # Exact bootstrap distribution: every ordered seed draw x every ordered example draw is equally likely.
    deltas = []
    for seeds in itertools.product(range(2), repeat=2):
        for jj in itertools.product(range(3), repeat=3):
            jj = list(jj)
            acc = [np.mean([np.mean(a[s, jj] == labels[jj]) for s in seeds]) for a in (base, expt)]
            deltas.append(acc[1] - acc[0])
    deltas = np.array(deltas)
    got = fast[:, 1] - fast[:, 0]
    assert got.mean() == pytest.approx(deltas.mean(), abs=0.01)
    assert np.mean(got <= 0) == pytest.approx(np.mean(deltas <= 0), abs=0.015)


def write_run(run_dir, preds, labels, epoch=2, split="test"):
    (run_dir / "predictions").mkdir(parents=True)
    for e in range(epoch + 1):  # earlier epochs hold other predictions: the last one must be read
        lines = [{"id": f"ex{i}", "label": int(y), "prediction": int(p if e == epoch else 1 - p)}
                 for i, (p, y) in enumerate(zip(preds, labels))]  # fmt: skip
        text = "".join(json.dumps(x) + "\n" for x in lines[::-1])  # order differs from id order
        (run_dir / "predictions" / f"epoch_{e}_{split}.jsonl").write_text(text)


def test_cli_reads_prediction_files_and_matches_numpy(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = rng.integers(2, size=40)
    base = np.where(rng.random((3, 40)) < 0.7, labels, 1 - labels)
    expt = np.where(rng.random((3, 40)) < 0.8, labels, 1 - labels)
    for k in range(3):
        write_run(tmp_path / f"base{k}", base[k], labels)
        write_run(tmp_path / f"expt{k}", expt[k], labels)
    out = tmp_path / "stats.json"
    got = main(["--baseline", *[str(tmp_path / f"base{k}") for k in range(3)],
                "--intervention", *[str(tmp_path / f"expt{k}") for k in range(3)],
                "--paired", "--nboot", "300", "--output_file", str(out)])  # fmt: skip
    order = np.argsort([f"ex{i}" for i in range(40)])  # the CLI sorts ids as strings
    want = multibootstrap(base[:, order], expt[:, order], labels[order], "accuracy", 300, True, 0)
    assert got["delta"] == pytest.approx(want["delta"])
    assert json.loads(out.read_text())["delta"] == pytest.approx(want["delta"])
    assert "delta" in capsys.readouterr().out


def test_cli_squad_exact_match(tmp_path):
    for name, pred in (("base", "the Eiffel tower"), ("expt", "Eiffel Tower!")):
        (tmp_path / name / "predictions").mkdir(parents=True)
        lines = [{"id": "q1", "prediction": pred, "answers": [{"text": "Eiffel Tower", "answer_start": 0}]},
                 {"id": "q2", "prediction": "Paris, France", "answers": ["Paris"]}]  # fmt: skip
        text = "".join(json.dumps(x) + "\n" for x in lines)
        (tmp_path / name / "predictions" / "epoch_0_validation.jsonl").write_text(text)
    args = [
        "--baseline",
        str(tmp_path / "base"),
        "--intervention",
        str(tmp_path / "expt"),
        "--split",
        "validation",
    ]
    em = main([*args, "--metric", "squad_em", "--nboot", "50"])
    assert em["baseline"]["mean"] == em["intervention"]["mean"]  # normalization makes both answers match
    f1 = main([*args, "--nboot", "1"])  # auto metric: SQuAD F1; one sample of 2 examples
    assert f1["metric"] == "squad_f1" and 0.5 <= f1["baseline"]["mean"] <= 1.0


def test_malformed_jsonl_line_is_one_line_error(tmp_path):
    for name in ("base", "expt"):
        write_run(tmp_path / name, np.array([0, 1]), np.array([0, 1]), epoch=0)
    bad = tmp_path / "expt" / "predictions" / "epoch_0_test.jsonl"
    bad.write_text(bad.read_text() + '{"id": "ex9", "label": 1, "prediction": \n')
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evaluation.multibootstrap",
            "--baseline",
            str(tmp_path / "base"),
            "--intervention",
            str(tmp_path / "expt"),
        ],  # fmt: skip
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "epoch_0_test.jsonl:3: malformed JSON" in proc.stderr
