"""The evaluation sweep on a two-seed tiny suite (zoo.suite): table, figures, BLiMP == evaluation.blimp alone,
a rerun evaluates nothing, kill -9 then rerun completes only the missing rows, shards, --follow; held-out
MLM deterministic and equal to a hand-written loss."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import micro_pretrain_flags

from evaluation import blimp, sweep
from evaluation.mlm import HeldOutText, fixed_masks
from utils.errors import UserError
from utils.paths import REPO_ROOT

PARADIGMS = ("anaphor_number_agreement", "determiner_noun_agreement_1", "wh_questions_object_gap")


@pytest.fixture(scope="module")
def blimp_dir(data_root, tmp_path_factory):
    """A small BLiMP: the first 6 pairs of 3 paradigms."""
    out = tmp_path_factory.mktemp("blimp")
    for name in PARADIGMS:
        lines = (data_root / "blimp" / "data" / f"{name}.jsonl").read_text().splitlines()[:6]
        (out / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="module")
def suite(processed_corpus, tokenizer_path, tmp_path_factory):
    """zoo.suite: 2 seeds of a 30k-parameter BERT, 8 steps, dense (log) checkpoints 0 1 2 4 8."""
    from zoo import suite as suite_cli

    tmp = tmp_path_factory.mktemp("suite")
    flags = dict(max_steps=8, warmup_steps=2, log_freq=4)
    train = micro_pretrain_flags(tmp, processed_corpus, tokenizer_path, **flags)
    suite_cli.main(["--suite_dir", str(tmp / "bert_suite"), "--seeds", "0-1", "--", *train])
    return tmp / "bert_suite"


def sweep_args(suite, blimp_dir, processed_corpus, out, *extra):
    return [
        "--runs",
        str(suite),
        "--evals",
        "blimp,mlm",
        "--output_dir",
        str(out),
        "--blimp_dir",
        str(blimp_dir),
        "--mlm_input_path",
        str(processed_corpus),
        "--mlm_max_tokens",
        "1500",
        "--mlm_pll_units",
        "10",
        "--device",
        "cpu",
        *extra,
    ]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_suite_sweep_table_figures_blimp_equal_and_rerun_does_nothing(
    suite, blimp_dir, processed_corpus, tmp_path
):
    suite_json = json.loads((suite / "suite.json").read_text())
    assert [r["seed"] for r in suite_json["runs"]] == [0, 1]
    out = tmp_path / "sweep"
    first = sweep.main(sweep_args(suite, blimp_dir, processed_corpus, out))
    assert first["evaluated"] == 2 * 5 * 2  # runs x checkpoints (0 1 2 4 8) x evaluations
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == ["run", "seed", "step", "tokens_seen", "evaluation", "metric", "value"]
    runs = {r["run"]: r["seed"] for r in rows}
    assert runs == {"bert_suite/seed_0": "0", "bert_suite/seed_1": "1"}
    assert {int(r["step"]) for r in rows} == {0, 1, 2, 4, 8}
    seen = {int(r["step"]): int(r["tokens_seen"]) for r in rows}
    assert seen == {s: s * 8 * 64 for s in (0, 1, 2, 4, 8)}  # batch 8 x length 64 per step
    # BLiMP numbers equal evaluation.blimp run on each checkpoint alone
    for seed in (0, 1):
        for step in (0, 4, 8):
            ckpt = suite / f"seed_{seed}" / "checkpoints" / f"step_{step}"
            alone = blimp.main(
                [
                    "--checkpoint_path",
                    str(ckpt),
                    "--blimp_dir",
                    str(blimp_dir),
                    "--output_file",
                    str(tmp_path / "alone.json"),
                    "--device",
                    "cpu",
                ]
            )[0]
            mine = {
                r["metric"]: float(r["value"])
                for r in rows
                if r["run"] == f"bert_suite/seed_{seed}"
                and r["step"] == str(step)
                and r["evaluation"] == "blimp"
            }
            assert mine["overall"] == alone["overall"] and mine["macro_paradigm"] == alone["macro_paradigm"]
            assert {k[len("paradigm/") :]: v for k, v in mine.items() if k.startswith("paradigm/")} == alone[
                "paradigms"
            ]
    # one PNG per measure, each shown on the index page; details ('/') only in the table
    measures = {(r["evaluation"], r["metric"]) for r in rows if "/" not in r["metric"]}
    assert ("mlm", "loss") in measures and ("mlm", "pseudo_perplexity") in measures
    index = (out / "index.md").read_text()
    for evaluation, metric in measures:
        png = out / "figures" / f"{evaluation}__{metric}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"(figures/{png.name})" in index
    assert len(list((out / "figures").iterdir())) == len(measures)
    # a second run evaluates nothing and rewrites the same table
    before = (out / "results.csv").read_text()
    assert sweep.main(sweep_args(suite, blimp_dir, processed_corpus, out))["evaluated"] == 0
    assert (out / "results.csv").read_text() == before
    # other settings in the same folder are refused, naming the setting
    with pytest.raises(UserError, match="max_pairs_per_paradigm"):
        sweep.main(sweep_args(suite, blimp_dir, processed_corpus, out, "--blimp_max_pairs_per_paradigm", "2"))


def test_kill9_then_rerun_completes_only_missing_rows(suite, blimp_dir, processed_corpus, tmp_path):
    reference = tmp_path / "uninterrupted"
    sweep.main(sweep_args(suite, blimp_dir, processed_corpus, reference))
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "evaluation.sweep", *sweep_args(suite, blimp_dir, processed_corpus, out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results = out / "results"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and len(list(results.glob("**/*.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {f: f.stat().st_mtime_ns for f in results.glob("**/*.json")}
    assert 3 <= len(done) < 20, "the kill came too late to test anything"
    assert not (out / "results.csv").exists()
    rerun = sweep.main(sweep_args(suite, blimp_dir, processed_corpus, out))
    assert rerun["evaluated"] == 20 - len(done)  # only the missing (run, step, evaluation) results
    assert all(f.stat().st_mtime_ns == t for f, t in done.items())  # finished ones untouched
    assert (out / "results.csv").read_text() == (reference / "results.csv").read_text()


def test_shards_together_equal_one_sweep_and_mlm_is_deterministic(
    suite, blimp_dir, processed_corpus, tmp_path
):
    one = tmp_path / "one"
    sweep.main(sweep_args(suite, blimp_dir, processed_corpus, one, "--shard", "0/1"))
    three = tmp_path / "three"
    counts = [
        sweep.main(sweep_args(suite, blimp_dir, processed_corpus, three, "--shard", f"{i}/3", "--no_report"))[
            "evaluated"
        ]
        for i in range(3)
    ]
    assert sum(counts) == 20 and all(c < 20 for c in counts)
    assert sweep.main(sweep_args(suite, blimp_dir, processed_corpus, three))["evaluated"] == 0
    assert (three / "results.csv").read_text() == (one / "results.csv").read_text()  # MLM loss too, bitwise
    with pytest.raises(UserError, match="--shard"):
        sweep.main(sweep_args(suite, blimp_dir, processed_corpus, tmp_path / "x", "--shard", "3/3"))


def test_heldout_mlm_fixed_masks_and_loss_by_hand(suite, processed_corpus, tokenizer_path):
    from data.tokenization import load_tokenizer
    from evaluation.checkpoints import load_checkpoint

    tokenizer = load_tokenizer(tokenizer_path)
    model = load_checkpoint(suite / "seed_0" / "checkpoints" / "step_8", torch.device("cpu"))
    text = HeldOutText(processed_corpus, tokenizer, 64, 64, 600, 0.15, 3, pll_units=0)
    again = HeldOutText(processed_corpus, tokenizer, 64, 64, 600, 0.15, 3, pll_units=0)
    assert all(np.array_equal(a, b) for a, b in zip(text.masks, again.masks))  # same positions every call
    other = fixed_masks(text.sequences, 0.15, 4)
    assert any(not np.array_equal(a, b) for a, b in zip(text.masks, other))  # ... chosen by the seed
    scores = text.evaluate(model, batch_size=3)
    assert scores == text.evaluate(model, batch_size=3)
    # by hand: one sequence at a time, full-sequence logits, cross-entropy at the masked positions
    sp, nll, hits, n = text.special, 0.0, 0, 0
    for seq, pos in zip(text.sequences, text.masks):
        ids = torch.tensor([sp.cls, *seq.tolist(), sp.sep])
        x = ids.clone()
        x[torch.from_numpy(pos)] = sp.mask
        with torch.no_grad():
            logits = model(x[None]).mlm_logits[0, torch.from_numpy(pos)]
        nll += F.cross_entropy(logits, ids[pos], reduction="sum").item()
        hits += int((logits.argmax(-1) == ids[pos]).sum())
        n += len(pos)
    assert scores["num_masked"] == n and scores["accuracy"] == hits / n
    assert scores["loss"] == pytest.approx(nll / n, abs=1e-5)
    assert n == sum(max(1, round(0.15 * len(s))) for s in text.sequences)


def test_follow_evaluates_checkpoints_as_they_land(suite, blimp_dir, processed_corpus, tmp_path):
    run = tmp_path / "growing"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(suite / "seed_0" / "run_args.json", run / "run_args.json")
    source = suite / "seed_0" / "checkpoints"
    shutil.copytree(source / "step_0", run / "checkpoints" / "step_0")
    out = tmp_path / "followed"
    result = {}
    argv = [
        "--runs",
        str(run),
        "--evals",
        "blimp",
        "--output_dir",
        str(out),
        "--blimp_dir",
        str(blimp_dir),
        "--follow",
        "--poll_seconds",
        "0.05",
        "--follow_timeout",
        "60",
        "--device",
        "cpu",
    ]
    thread = threading.Thread(target=lambda: result.update(sweep.main(argv)))
    thread.start()
    for step in (1, 2, 4, 8):  # the training run writes its checkpoints one after another (renamed in)
        time.sleep(0.15)
        shutil.copytree(source / f"step_{step}", run / "checkpoints" / f".tmp_step_{step}")
        os.replace(run / "checkpoints" / f".tmp_step_{step}", run / "checkpoints" / f"step_{step}")
    thread.join(timeout=90)
    assert not thread.is_alive() and result["evaluated"] == 5  # stopped by itself at max_steps
    steps = {int(r["step"]) for r in read_csv(out / "results.csv")}
    assert steps == {0, 1, 2, 4, 8}


def test_suite_slurm_script_and_refusals(suite, tmp_path):
    from zoo import suite as suite_cli

    train = json.loads((suite / "suite.json").read_text())["train_args"]
    record = suite_cli.main(["--suite_dir", str(tmp_path / "s"), "--seeds", "0-2,7", "--slurm", "--", *train])
    assert [r["seed"] for r in record["runs"]] == [0, 1, 2, 7]
    script = (tmp_path / "s" / "suite.sbatch").read_text()
    assert "#SBATCH --array=0-3" in script and "SEEDS=(0 1 2 7)" in script
    assert "--checkpoint_steps log" in script  # dense checkpoints when the flags set none
    assert subprocess.run(["bash", "-n", str(tmp_path / "s" / "suite.sbatch")]).returncode == 0
    with pytest.raises(UserError, match="other training flags"):
        suite_cli.main(
            ["--suite_dir", str(tmp_path / "s"), "--seeds", "0", "--slurm", "--", *train, "--mask_p", "0.2"]
        )
    with pytest.raises(UserError, match="--seed is set per seed"):
        suite_cli.main(["--suite_dir", str(tmp_path / "t"), "--seeds", "0", "--", *train, "--seed", "3"])


def test_sweep_probing_equals_evaluation_probing_alone(suite, tmp_path):
    from evaluation import probing

    run = suite / "seed_0"
    got = sweep.main(
        [
            "--runs",
            str(run),
            "--evals",
            "probing",
            "--steps",
            "8",
            "--output_dir",
            str(tmp_path / "s"),
            "--probing_max_sentences",
            "30",
            "--probing_epochs",
            "1",
            "--device",
            "cpu",
        ]
    )
    mine = {r["metric"]: r["value"] for r in got["rows"]}
    alone = probing.main(
        [
            "--checkpoint_path",
            str(run / "checkpoints" / "step_8"),
            "--output_dir",
            str(tmp_path / "p"),
            "--tasks",
            "upos",
            "--max_sentences",
            "30",
            "--probe_epochs",
            "1",
            "--no_mdl",
            "--device",
            "cpu",
        ]
    )
    mix = next(r for r in alone if r["layer"] == "mix")
    assert mine["upos_mix_accuracy"] == mix["accuracy"] and mine["upos_mix_macro_f1"] == mix["macro_f1"]
    assert mine["upos_best_layer_accuracy"] == max(r["accuracy"] for r in alone if r["layer"] != "mix")
    assert mine["upos/layer_1/accuracy"] == next(r["accuracy"] for r in alone if r["layer"] == 1)


def test_mlm_command_on_raw_text_equals_heldout_text(suite, tokenizer_path, data_root, tmp_path):
    from data.tokenization import load_tokenizer
    from evaluation import mlm
    from evaluation.checkpoints import load_checkpoint

    book = sorted((data_root / "corpus" / "gutenberg" / "dev").glob("*.txt"))[0]
    ckpt = suite / "seed_1" / "checkpoints" / "step_4"
    out = tmp_path / "mlm.json"
    got = mlm.main(
        [
            "--checkpoint_path",
            str(ckpt),
            "--input_path",
            str(book),
            "--max_tokens",
            "800",
            "--pll_units",
            "5",
            "--output_file",
            str(out),
            "--device",
            "cpu",
        ]
    )[0]
    text = HeldOutText(book, load_tokenizer(tokenizer_path), 64, None, 800, 0.15, 0, 5)
    assert sum(len(s) for s in text.sequences) == 800 and all(len(s) == 62 for s in text.sequences[:-1])
    want = text.evaluate(load_checkpoint(ckpt, torch.device("cpu")))
    assert got["loss"] == want["loss"] and got["pseudo_perplexity"] == want["pseudo_perplexity"]
    assert json.loads(out.read_text())["results"][0]["accuracy"] == want["accuracy"]
    with pytest.raises(UserError, match="no such text file"):
        mlm.main(["--checkpoint_path", str(ckpt), "--input_path", str(tmp_path / "missing.txt")])


def test_sweep_finetune_equals_train_finetune_alone(suite, data_root, tmp_path):
    from evaluation.checkpoints import resolve_vocab

    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    for name, n in (("train.tsv", 200), ("dev.tsv", 60)):  # real SST-2 rows, a subset
        lines = (data_root / "sst2" / name).read_text().splitlines(keepends=True)
        (sst2 / name).write_text("".join(lines[: n + 1]))
    run, ckpt = suite / "seed_1", suite / "seed_1" / "checkpoints" / "step_8"
    common = dict(epochs=2, max_train_examples=96, learning_rate=1e-3, batch_size=16, max_seq_length=64)
    flags = [x for k, v in common.items() for x in (f"--finetune_{k}", str(v))]
    sweep_flags = ["--runs", str(run), "--evals", "finetune", "--steps", "8", "--device", "cpu"]
    sweep_flags += ["--output_dir", str(tmp_path / "s"), "--finetune_data_dir", str(sst2), *flags]
    sweep_flags += ["--finetune_args", "--head_hidden_sizes 16"]
    got = sweep.main(sweep_flags)
    mine = {r["metric"]: r["value"] for r in got["rows"]}
    alone = [sys.executable, str(REPO_ROOT / "train_finetune.py"), "--task", "sst2", "--data_dir", str(sst2)]
    alone += ["--checkpoint_path", str(ckpt), "--vocab_path", str(resolve_vocab(ckpt, None))]
    alone += ["--output_dir", str(tmp_path / "alone"), "--seed", "42", "--no_tensorboard", "--device", "cpu"]
    alone += [x for k, v in common.items() for x in (f"--{k}", str(v))] + ["--head_hidden_sizes", "16"]
    subprocess.run(alone, check=True, capture_output=True, cwd=REPO_ROOT)
    records = [json.loads(line) for line in (tmp_path / "alone" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for split in ("train", "validation", "test"):
        for metric in ("loss", "accuracy"):
            assert mine[f"sst2_{split}_{metric}"] == records[-1][split][metric], (split, metric)
            assert mine[f"sst2/epoch_0/{split}/{metric}"] == records[0][split][metric]
    assert mine["sst2_train_loss"] < records[0]["train"]["loss"]  # the short fine-tuning trained
    kept = tmp_path / "s" / "results" / "seed_1" / "step_8" / "finetune"
    assert (kept / "metrics.jsonl").read_text() == (tmp_path / "alone" / "metrics.jsonl").read_text()
    assert (kept / "predictions").is_dir() and not (kept / "checkpoints").exists()  # no optimizer states
    assert sweep.main(sweep_flags)["evaluated"] == 0  # a rerun does nothing
    with pytest.raises(UserError, match="--finetune_data_dir .*: no such folder"):
        sweep.main(["--runs", str(run), "--evals", "finetune", "--output_dir", str(tmp_path / "t")]
                   + ["--finetune_data_dir", str(tmp_path / "nonexistent")])  # fmt: skip
    # a flag train_finetune.py would refuse is refused before sweep.json fixes the settings
    with pytest.raises(UserError, match="--finetune_args: unrecognized arguments: --bogus"):
        sweep.main(["--runs", str(run), "--evals", "finetune", "--output_dir", str(tmp_path / "u")]
                   + ["--finetune_data_dir", str(sst2), "--finetune_args", "--bogus 1"])  # fmt: skip
    assert not (tmp_path / "u").exists()
