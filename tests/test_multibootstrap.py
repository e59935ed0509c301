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
        lines = [
            {"id": f"ex{i}", "label": int(y), "prediction": int(p if e == epoch else 1 - p)}
            for i, (p, y) in enumerate(zip(preds, labels))
        ]
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
    got = main(
        [
            "--baseline",
            *[str(tmp_path / f"base{k}") for k in range(3)],
            "--intervention",
            *[str(tmp_path / f"expt{k}") for k in range(3)],
            "--paired",
            "--rows_as_seeds",
            "--nboot",
            "300",
            "--output_file",
            str(out),
        ]
    )
    order = np.argsort([f"ex{i}" for i in range(40)])  # the CLI sorts ids as strings
    want = multibootstrap(base[:, order], expt[:, order], labels[order], "accuracy", 300, True, 0)
    assert got["delta"] == pytest.approx(want["delta"])
    assert json.loads(out.read_text())["delta"] == pytest.approx(want["delta"])
    assert "delta" in capsys.readouterr().out


def test_cli_squad_exact_match(tmp_path):
    for name, pred in (("base", "the Eiffel tower"), ("expt", "Eiffel Tower!")):
        (tmp_path / name / "predictions").mkdir(parents=True)
        lines = [
            {"id": "q1", "prediction": pred, "answers": [{"text": "Eiffel Tower", "answer_start": 0}]},
            {"id": "q2", "prediction": "Paris, France", "answers": ["Paris"]},
        ]
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
    args.append("--rows_as_seeds")  # no pretraining seeds here: each run its own seed
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
            "--rows_as_seeds",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "epoch_0_test.jsonl:3: malformed JSON" in proc.stderr


# ---- the reference's grouping: runs grouped by pretraining seed id, pairing on the common seeds ----------
def five_seeds_two_finetunings():
    """Arms of 5 seeds x 2 fine-tunings (seed 4 in the baseline only; seed ids 0 1 2 13 4), rows shuffled."""
    rng = np.random.default_rng(123)
    n = 60
    labels = rng.integers(2, size=n)
    rows = [
        (s + (10 if s == 3 else 0), arm)
        for arm in (0, 1)
        for s in range(5)
        for _ in range(2)
        if not (arm == 1 and s == 4)
    ]
    rows = [rows[i] for i in rng.permutation(len(rows))]
    acc = np.array([0.7 if a == 0 else 0.78 for _, a in rows])
    preds = np.where(rng.random((len(rows), n)) < acc[:, None], labels, 1 - labels)
    return preds, labels, [s for s, _ in rows], [bool(a) for _, a in rows]


def by_hand(preds, labels, seeds, arm, nboot, paired, seed):
    """Independent re-implementation: RandomState.randint draws (what choice() makes), plain loops."""
    rs = np.random.RandomState(seed)
    groups = [
        {
            s: [i for i in range(len(seeds)) if seeds[i] == s and arm[i] == a]
            for s in seeds
            if any(seeds[i] == s and arm[i] == a for i in range(len(seeds)))
        }
        for a in (False, True)
    ]
    keys = [sorted(g) for g in groups]
    if paired:
        keys = [list(set(groups[0]) & set(groups[1]))] * 2
    out = []
    for _ in range(nboot):
        drawn_b = [keys[0][k] for k in rs.randint(0, len(keys[0]), size=len(keys[0]))]
        drawn_i = drawn_b if paired else [keys[1][k] for k in rs.randint(0, len(keys[1]), size=len(keys[1]))]
        jj = rs.randint(0, len(labels), size=len(labels))
        score = [
            np.mean([np.mean([np.mean(preds[r, jj] == labels[jj]) for r in g[s]]) for s in drawn])
            for g, drawn in zip(groups, (drawn_b, drawn_i))
        ]
        out.append(score)
    return np.array(out)


# The reference (multiberts/multibootstrap.py run in its own venv on this data: multibootstrap(run_info,
# preds, labels, lambda y, p: np.mean(y == p), paired_seeds=..., nboot=300, rng=7) then report_ci):
REFERENCE_DELTA = {
    True: {
        "mean": 0.11676388888888889,
        "low": 0.04057291666666682,
        "high": 0.19276041666666666,
        "p": 1 / 300,
    },
    False: {
        "mean": 0.09960138888888889,
        "low": 0.023729166666666725,
        "high": 0.18670833333333328,
        "p": 2 / 300,
    },
}
REFERENCE_BASELINE_MEAN = {True: 0.6708333333333333, False: 0.6854055555555556}


@pytest.mark.parametrize("paired", [True, False])
def test_grouped_equals_reference_and_independent_reimplementation(paired):
    from evaluation.multibootstrap import grouped_bootstrap_samples

    preds, labels, seeds, arm = five_seeds_two_finetunings()
    samples = grouped_bootstrap_samples(preds, labels, seeds, arm, "accuracy", 300, paired, 7)
    np.testing.assert_array_equal(samples, by_hand(preds, labels, seeds, arm, 300, paired, 7))
    stats = summarize(samples)
    assert stats["delta"] == pytest.approx(REFERENCE_DELTA[paired], rel=1e-12, abs=1e-15)
    assert stats["baseline"]["mean"] == pytest.approx(REFERENCE_BASELINE_MEAN[paired], rel=1e-12)
    # the callable path (any metric) gives the same samples as the per-example fast path
    same = grouped_bootstrap_samples(preds, labels, seeds, arm, lambda y, p: np.mean(y == p), 300, paired, 7)
    np.testing.assert_array_equal(same, samples)


def test_thresholds_as_report_ci():
    samples = np.array([[0.5, 0.52], [0.5, 0.49], [0.4, 0.45], [0.6, 0.66]])
    stats = summarize(samples, abs_threshold=0.02, rel_threshold=0.1)
    assert stats["p_abs_threshold"] == 0.75 and stats["p_rel_threshold"] == 0.5  # deltas .02 -.01 .05 .06
    neg = summarize(samples, expect_negative_effect=True, abs_threshold=0.0)
    assert neg["p_abs_threshold"] == 0.25 and neg["delta"]["p"] == 0.75


def test_cli_groups_finetunings_by_pretraining_seed(tmp_path):
    """Fine-tuning runs name their pretraining checkpoint in run_args.json; its args.json has the seed."""
    from evaluation.multibootstrap import grouped_bootstrap_samples

    preds, labels, seeds, arm = five_seeds_two_finetunings()
    dirs = {False: [], True: []}
    for k, (row, s, a) in enumerate(zip(preds, seeds, arm)):
        ckpt = tmp_path / f"pretrain_{'elc' if a else 'bert'}_{s}" / "checkpoints" / "step_8"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "args.json").write_text(json.dumps({"seed": s, "init_seed": None}))
        write_run(tmp_path / f"ft{k}", row, labels)
        (tmp_path / f"ft{k}" / "run_args.json").write_text(json.dumps({"checkpoint_path": str(ckpt)}))
        dirs[a].append(str(tmp_path / f"ft{k}"))
    got = main(
        [
            "--baseline",
            *dirs[False],
            "--intervention",
            *dirs[True],
            "--paired",
            "--nboot",
            "300",
            "--seed",
            "7",
        ]
    )
    order = np.argsort([f"ex{i}" for i in range(len(labels))])  # the CLI sorts ids as strings
    rows = [i for a in (False, True) for i in range(len(arm)) if arm[i] == a]
    want = summarize(
        grouped_bootstrap_samples(
            preds[rows][:, order],
            labels[order],
            [seeds[i] for i in rows],
            [arm[i] for i in rows],
            "accuracy",
            300,
            True,
            7,
        )
    )
    assert got["delta"] == pytest.approx(want["delta"]) and got["grouping"] == "seed"
    assert sorted(set(got["intervention_seeds"])) == [0, 1, 2, 13]


def test_compare_suites_from_sweep_table(tmp_path):
    """Two suites of 5 seeds in a sweep table: the paired bootstrap over seeds equals a by-hand loop."""
    from evaluation.compare_suites import main as compare_main
    from evaluation.sweep_report import write_table

    rng = np.random.default_rng(5)
    value = {
        (suite, s): 0.6 + 0.05 * (suite == "elc") + rng.normal(0, 0.02)
        for suite in ("bert", "elc")
        for s in range(5)
    }
    rows = [
        {
            "run": f"{suite}_suite/seed_{s}",
            "seed": s,
            "step": step,
            "tokens_seen": step * 512,
            "evaluation": "blimp",
            "metric": "overall",
            "value": v if step == 8 else 0.5,
        }
        for (suite, s), v in value.items()
        for step in (0, 8)
    ]
    write_table(rows, tmp_path / "results.csv")
    got = compare_main(
        [
            "--table",
            str(tmp_path / "results.csv"),
            "--baseline",
            "bert_suite/*",
            "--intervention",
            "elc_suite/*",
            "--step",
            "8",
            "--paired",
            "--nboot",
            "200",
            "--seed",
            "3",
        ]
    )
    rs = np.random.RandomState(3)
    deltas = []
    for _ in range(200):
        drawn = rs.randint(0, 5, size=5)  # the common seeds 0..4 (a set of small ints iterates sorted)
        deltas.append(np.mean([value["elc", s] for s in drawn]) - np.mean([value["bert", s] for s in drawn]))
    assert got["delta"]["mean"] == pytest.approx(np.mean(deltas), rel=1e-12)
    assert got["delta"]["low"] == pytest.approx(np.quantile(deltas, 0.025), rel=1e-12)
    assert got["delta"]["p"] == max(np.mean(np.array(deltas) <= 0), 1 / 200)
    assert got["baseline_runs"] == [f"bert_suite/seed_{s}" for s in range(5)]
    from utils.errors import UserError

    with pytest.raises(UserError, match="no run of the table matches"):
        compare_main(
            [
                "--table",
                str(tmp_path / "results.csv"),
                "--baseline",
                "gpt*",
                "--intervention",
                "elc*",
                "--step",
                "8",
            ]
        )
