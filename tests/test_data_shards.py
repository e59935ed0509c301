"""Sharded, resumable, bounded-memory preprocessing: --shard 1/1 == three shards merged, kill -9 then rerun
== uninterrupted, flat peak RSS, and one-line errors for bad inputs that keep what was written."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.test_data_formats import make_articles, write_jsonl, write_lines
from utils.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "data" / "preprocess.py"


def run(*args, **kw):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, **kw)


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    return proc


def one_line_error(proc, *needles):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert all(str(n) in lines[0] for n in needles), lines[0]


def arrays(d):
    return {p.name: np.load(p) for p in sorted(d.glob("*.npy"))}


def meta(d):
    return json.loads((d / "meta.json").read_text())


def same_corpus(a, b):
    x, y = arrays(a), arrays(b)
    assert x.keys() == y.keys() and len(x) == 8 and all(np.array_equal(x[k], y[k]) for k in x)
    assert meta(a)["fingerprint"] == meta(b)["fingerprint"]
    assert meta(a)["arrays_sha256"] == meta(b)["arrays_sha256"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, fixture_books):
    tmp = tmp_path_factory.mktemp("shards_in")
    (tmp / "in").mkdir()
    write_lines(tmp / "in" / "wiki.txt", make_articles(120, seed=1))
    for book in fixture_books[:2]:
        shutil.copy(book, tmp / "in" / book.name)
    write_jsonl(tmp / "in" / "more.jsonl", make_articles(40, seed=2))
    return tmp / "in"


def test_three_shards_merged_equal_one(inputs, tokenizer_path, tmp_path):
    common = ["--input_path", inputs, "--vocab_path", tokenizer_path, "--piece_mb", 0.05, "--workers", 1]
    whole = tmp_path / "whole"
    ok(run(*common, "--output_dir", whole, "--shard", "0/1"))
    ok(run("--merge", "--output_dir", whole))
    shard_out = tmp_path / "sharded"
    procs = [  # at the same time into one folder, as a SLURM array runs them
        subprocess.Popen([sys.executable, SCRIPT, *map(str, [*common, "--output_dir", shard_out]), "--shard",
                          f"{i}/3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in (2, 0, 1)
    ]  # fmt: skip
    for proc in procs:
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0 and "--merge" in stdout, stderr
    assert not (shard_out / "meta.json").exists()
    ok(run("--merge", "--output_dir", shard_out))
    same_corpus(whole, shard_out)
    assert not (shard_out / "shards").exists()
    # without --shard: the same corpus; a rerun leaves the finished corpus as it is
    direct = tmp_path / "direct"
    ok(run(*common, "--output_dir", direct, "--workers", 2))
    same_corpus(whole, direct)
    m = (direct / "meta.json").read_text()
    again = ok(run(*common, "--output_dir", direct))
    assert "nothing to do" in again.stdout and (direct / "meta.json").read_text() == m
    assert ok(run("--merge", "--output_dir", direct)).stdout.count("nothing to do") == 1
    # pieces end at document boundaries, so their size changes nothing in the arrays
    big = tmp_path / "big_pieces"
    ok(run(*common[:-4], "--output_dir", big, "--piece_mb", 64))
    assert meta(big)["arrays_sha256"] == meta(whole)["arrays_sha256"]


def test_kill_9_then_rerun_gives_the_same(tmp_path, tokenizer_path):
    inp = write_lines(tmp_path / "wiki.txt", make_articles(700, seed=3) * 2)  # ~4 MB
    common = ["--input_path", inp, "--vocab_path", tokenizer_path, "--format", "lines", "--piece_mb", 0.2]
    common += ["--workers", 1]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, SCRIPT, *map(str, common), "--output_dir", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    parts = out / "shards" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(parts.glob("0*"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in parts.glob("0*"))
    n_pieces = len(json.loads((out / "shards" / "job.json").read_text())["pieces"])
    assert 3 <= len(finished) < n_pieces and not (out / "meta.json").exists()
    rerun = ok(run(*common, "--output_dir", out))
    assert f"{len(finished)} of {n_pieces} parts already written" in rerun.stdout
    ref = tmp_path / "uninterrupted"
    ok(run(*common, "--output_dir", ref))
    same_corpus(out, ref)


def test_peak_rss_is_flat_in_corpus_size(tmp_path, tokenizer_path):
    small = tmp_path / "small.txt"
    small.write_bytes(write_lines(tmp_path / "a.txt", make_articles(500, seed=4)).read_bytes() * 3)  # 2 MB
    big = tmp_path / "big.txt"
    big.write_bytes(small.read_bytes() * 10)
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )

    def peak_kib(*args):
        cmd = [sys.executable, "-c", probe, sys.executable, str(SCRIPT), *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stdout.split()[-1])

    rss = {}
    for inp in (small, big):
        out = tmp_path / inp.stem
        args = ["--input_path", inp, "--vocab_path", tokenizer_path, "--format", "lines", "--output_dir", out]
        # processing and merge apart: the merge alone imports torch (for the code version), ~150 MB
        rss[inp.stem] = (peak_kib(*args, "--workers", 1, "--piece_mb", 1, "--shard", "0/1"),
                         peak_kib("--merge", "--output_dir", out))  # fmt: skip
    tokens = {k: meta(tmp_path / k)["splits"]["train"]["tokens"] for k in rss}
    assert tokens["big"] > 9 * tokens["small"]
    assert rss["big"][0] < 1.3 * rss["small"][0] and rss["big"][1] < 1.3 * rss["small"][1], rss


def test_bad_inputs_are_one_line_errors_and_keep_what_was_written(
    inputs, tokenizer_path, tmp_path, data_root
):
    tok = ["--vocab_path", tokenizer_path]
    out = tmp_path / "out"
    one_line_error(
        run("--input_path", inputs, *tok, "--output_dir", out, "--format", "xml"), "--format", "xml"
    )
    odd = tmp_path / "data.xml"
    odd.write_text("<doc/>")
    one_line_error(run("--input_path", odd, *tok, "--output_dir", out), "data.xml", "--format")
    nofield = tmp_path / "nofield.jsonl"
    nofield.write_text('{"text": "Fine."}\n{"body": "No text field."}\n')
    one_line_error(run("--input_path", nofield, *tok, "--output_dir", out), "nofield.jsonl", "'text'")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Il \xe9tait une fois.\n\nUne princesse.\n".encode("latin-1"))
    one_line_error(
        run("--input_path", latin, *tok, "--output_dir", out, "--format", "lines"), "latin.txt", "UTF-8"
    )
    assert not out.exists()  # a failed first run leaves nothing behind

    # shards of a job: a damaged (empty) part and a part of another tokenizer are refused by the merge
    common = ["--input_path", inputs, *tok, "--piece_mb", 0.05, "--workers", 1, "--output_dir", out]
    ok(run(*common, "--shard", "0/2"))
    ok(run(*common, "--shard", "1/2"))
    parts = sorted((out / "shards" / "parts").iterdir())
    before = {p: p.read_bytes() for p in (out / "shards").rglob("*") if p.is_file()}
    victim = parts[1] / "train.tokens.bin"
    victim.write_bytes(b"")
    one_line_error(run("--merge", "--output_dir", out), victim)
    assert not (out / "meta.json").exists()
    victim.write_bytes(before[victim])
    from data.tokenization import save_tokenizer, train_tokenizer

    other_tok = tmp_path / "other.json"
    save_tokenizer(train_tokenizer(["some other text for another vocabulary"] * 50, 200, 1, True), other_tok)
    other = tmp_path / "other"
    ok(run("--input_path", inputs, "--vocab_path", other_tok, "--piece_mb", 0.05, "--workers", 1,
           "--output_dir", other, "--shard", "0/1"))  # fmt: skip
    shutil.rmtree(parts[2])
    shutil.copytree(other / "shards" / "parts" / parts[2].name, parts[2])
    one_line_error(run("--merge", "--output_dir", out), parts[2] / "part.json", "tokenizer")
    # a different job into the same folder is refused without --overwrite; the parts stay
    one_line_error(run(*common[:-2], "--output_dir", out, "--seed", 7), "--overwrite")
    one_line_error(run("--input_path", inputs, "--vocab_path", other_tok, "--output_dir", out), "--overwrite")
    kept = {p for p in (out / "shards").rglob("*") if p.is_file()}
    assert set(before) - kept == set()
    # a missing shard is named
    shutil.rmtree(parts[0])
    one_line_error(run("--merge", "--output_dir", out), "000000", "--shard")
