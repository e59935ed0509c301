"""Bad input through the real entry points: one line naming the flag or file, exit code != 0, no traceback,
nothing already written changed, and the corrected command then accepted. Also the disk-full path of
checkpoints, the umask, strict metrics.jsonl, weights-only dense checkpoints and the tokenizer beside
every checkpoint.

In-process cases run main(argv) through utils.errors.run_cli (what `python X.py` does); cases that need
another user (a read-only folder, when the tests run as root) or a signal run as subprocesses.
"""

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train_finetune
import train_pretrain
from utils.errors import run_cli
from utils.paths import data_root

REPO = Path(__file__).resolve().parents[1]
FIXTURE_CORPUS = REPO / "tests" / "fixtures" / "corpus_2026_12_01"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HOME": tempfile.gettempdir()}


def cli(main, argv, capsys) -> tuple[int, str]:
    """(exit code, stderr) of `main(argv)` run as its command runs it."""
    capsys.readouterr()
    try:
        run_cli(lambda: main([str(a) for a in argv]))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def one_line_error(code, err: str, *needles) -> None:
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert last.startswith("error: "), err
    for needle in needles:
        assert needle in last, (needle, last)


def snapshot(folder: Path) -> dict:
    """{relative path: sha256} of every file under folder (nothing there: {})."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world():
    """A folder of test inputs: the
    fixture corpus, a copy whose validation split is one document, a small SST-2, a 4-step checkpoint."""
    base = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    base.chmod(0o755)
    shutil.copytree(FIXTURE_CORPUS, base / "corpus")
    shutil.copytree(FIXTURE_CORPUS, base / "one_doc")
    np.save(base / "one_doc" / "validation.documents.npy", np.array([0, 811], dtype=np.int64))
    np.save(base / "one_doc" / "validation.document_sources.npy", np.array([0], dtype=np.int32))
    sst2 = base / "sst2"
    sst2.mkdir()
    real = data_root() / "sst2"
    for name, n in (("train.tsv", 97), ("dev.tsv", 41)):
        (sst2 / name).write_text("".join((real / name).read_text().splitlines(keepends=True)[:n]))
    torch.set_num_threads(1)
    run_cli(lambda: train_pretrain.main([str(a) for a in pretrain_argv(base, base / "pretrained")]))
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def pretrain_argv(world: Path, out: Path, *extra) -> list:
    return [
        "--config_file", REPO / "configs" / "tiny.json", "--input_path", world / "corpus",
        "--vocab_path", world / "corpus" / "tokenizer.json", "--output_dir", out, "--seq_length", 64,
        "--batch_size", 8, "--max_steps", 4, "--save_every", 2, "--device", "cpu", "--mixed_precision", "no",
        "--no_tensorboard", "--log_freq", 2, "--seed", 0, *extra,
    ]  # fmt: skip


def finetune_argv(world: Path, out: Path, *extra) -> list:
    return [
        "--task", "sst2", "--data_dir", world / "sst2", "--checkpoint_path",
        world / "pretrained" / "checkpoints" / "step_4", "--vocab_path", world / "corpus" / "tokenizer.json",
        "--output_dir", out, "--epochs", 1, "--batch_size", 16, "--max_seq_length", 64, "--device", "cpu",
        "--mixed_precision", "no", "--no_tensorboard", "--seed", 0, *extra,
    ]  # fmt: skip


BAD_FLAGS = [  # (flags, what the error line says); each command refuses them before writing anything
    (["--learning_rate", "-1"], "--learning_rate must be > 0, got -1.0"),
    (["--learning_rate", "nan"], "--learning_rate must be > 0, got nan"),
    (["--adam_beta2", "1.5"], "--adam_beta2 must lie in [0, 1), got 1.5"),
    (["--label_smoothing", "2"], "--label_smoothing must lie in [0, 1), got 2.0"),
    (["--weight_decay", "-1"], "--weight_decay must be >= 0, got -1.0"),
    (["--max_gradient", "-1"], "--max_gradient must be >= 0, got -1.0"),
]
PRETRAIN_ONLY = [
    (["--save_every", "-1"], "--save_every must be >= 0, got -1"),
    (["--keep_last", "0"], "--keep_last must be >= 1, got 0"),
]


def test_pretraining_refuses_bad_flags_and_accepts_the_corrected_run(world, tmp_path, capsys):
    out = tmp_path / "run"
    for extra, message in BAD_FLAGS + PRETRAIN_ONLY:
        one_line_error(*cli(train_pretrain.main, pretrain_argv(world, out, *extra), capsys), message)
        assert not out.exists(), extra  # refused before anything was written
    # a held-out split of one document cannot be validated on (NSP): refused at start-up, not at step 2
    argv = pretrain_argv(world, out, "--validation_every", 2, "--input_path", world / "one_doc")
    needles = ("--validation_every 2", "1 document(s)", "--validation_fraction")  # and what to do about it
    one_line_error(*cli(train_pretrain.main, argv, capsys), *needles)
    assert not (out / "run_args.json").exists()
    code, err = cli(train_pretrain.main, pretrain_argv(world, out, "--validation_every", 2), capsys)
    assert code == 0, err  # the corrected command: not refused as "a different run"
    assert (out / "checkpoints" / "step_4").is_dir()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert any("val_loss" in json.loads(line) for line in lines)


def test_finetuning_refuses_bad_flags_and_accepts_the_corrected_run(world, tmp_path, capsys):
    out = tmp_path / "ft"
    for extra, message in BAD_FLAGS:
        one_line_error(*cli(train_finetune.main, finetune_argv(world, out, *extra), capsys), message)
        assert not out.exists(), extra
    code, err = cli(train_finetune.main, finetune_argv(world, out), capsys)
    assert code == 0, err
    # the tokenizer lies beside the fine-tuned model, and transformers reads it as we do
    from transformers import PreTrainedTokenizerFast

    from data.tokenization import load_tokenizer

    saved = out / "checkpoints" / "epoch_1" / "tokenizer.json"
    ours = load_tokenizer(world / "corpus" / "tokenizer.json")
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(saved))
    for line in (world / "sst2" / "dev.tsv").read_text().splitlines()[1:20]:
        text = line.split("\t")[0]
        assert theirs(text)["input_ids"] == ours.encode(text).ids
        assert theirs(text, text)["input_ids"] == ours.encode(text, text).ids  # [CLS] a [SEP] b [SEP]


@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_an_output_dir_that_is_a_file_is_refused(world, tmp_path, capsys, command):
    target = tmp_path / "a_file"
    target.write_text("keep me\n")
    main, argv = (
        (train_pretrain.main, pretrain_argv(world, target))
        if command == "pretrain"
        else (train_finetune.main, finetune_argv(world, target))
    )
    one_line_error(*cli(main, argv, capsys), f"--output_dir {target} is a file")
    assert target.read_text() == "keep me\n"


def test_read_only_output_folders_are_refused_by_every_command(world, data_root):
    """Each command, run as a user who cannot write the folder, says so in one line before its work."""
    read_only = Path(tempfile.mkdtemp(prefix="read_only_"))
    try:
        read_only.chmod(0o555)
        ckpt = world / "pretrained" / "checkpoints" / "step_4"
        vocab_txt = world / "vocab.txt"
        vocab_txt.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nbook\n")
        vocab_txt.chmod(0o644)
        books = [data_root / "corpus" / "gutenberg" / "train"]
        py = [sys.executable]
        cases = {
            "train_pretrain": (
                [*py, REPO / "train_pretrain.py", *pretrain_argv(world, read_only / "run")],
                f"--output_dir {read_only / 'run'}: cannot write in {read_only}",
            ),
            "preprocess": (
                [
                    *py,
                    REPO / "data" / "preprocess.py",
                    "--input_path",
                    *books,
                    "--vocab_path",
                    world / "corpus" / "tokenizer.json",
                    "--output_dir",
                    read_only / "processed",
                ],
                f"--output_dir {read_only / 'processed'}: cannot write",
            ),  # fmt: skip
            "create_tokenizer": (
                [
                    *py,
                    REPO / "tokenizers" / "create_tokenizer.py",
                    "--from_vocab",
                    vocab_txt,
                    "--output_path",
                    read_only / "tok.json",
                ],
                f"--output_path {read_only}: cannot write",
            ),  # fmt: skip
            "train_finetune": (
                [*py, REPO / "train_finetune.py", *finetune_argv(world, read_only / "ft")],
                f"--output_dir {read_only / 'ft'}: cannot write",
            ),
            "convert": (
                [*py, "-m", "model.convert", "--to_hf", ckpt, "--output_dir", read_only / "hf"],
                "Permission denied",
            ),
            "blimp": (
                [
                    *py,
                    "-m",
                    "evaluation.blimp",
                    "--checkpoint_path",
                    ckpt,
                    "--output_dir",
                    read_only,
                    "--max_pairs_per_paradigm",
                    1,
                    "--device",
                    "cpu",
                ],
                f"--output_dir {read_only}: cannot write",
            ),  # fmt: skip
        }
        # as root every folder is writable: drop the capabilities that bypass file modes (root stays the
        # owner, so the repository and the venv stay readable wherever the clone lies; read_only is 0555)
        user = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
        procs = {
            name: subprocess.Popen(
                [*user, *map(str, cmd)],
                cwd=REPO,
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for name, (cmd, _) in cases.items()
        }
        for name, (_, message) in cases.items():
            _, err = procs[name].communicate(timeout=300)
            one_line_error(procs[name].returncode, err, message)
        assert list(read_only.iterdir()) == []
        assert not list(ckpt.glob("blimp_*"))  # nothing went into the checkpoint instead
    finally:
        read_only.chmod(0o755)
        shutil.rmtree(read_only, ignore_errors=True)


def test_blimp_writes_where_output_dir_says(world, tmp_path, capsys):
    from evaluation import blimp

    ckpt = world / "pretrained" / "checkpoints" / "step_4"
    argv = ["--checkpoint_path", ckpt, "--output_dir", tmp_path / "eval", "--max_pairs_per_paradigm", 1]
    code, err = cli(blimp.main, [*argv, "--device", "cpu"], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "blimp_pll.json").read_text())
    assert report["results"][0]["n_pairs"] == 67  # one pair of each of BLiMP's 67 paradigms
    assert not list(ckpt.glob("blimp_*"))


class _FullDisk:
    """A file whose writes fail as on a full disk."""

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self):
        pass


def test_a_full_disk_is_one_line_and_the_last_good_checkpoint_resumes(world, tmp_path, capsys, monkeypatch):
    import training.checkpoint as checkpoint

    real = checkpoint.atomic_write

    def atomic_write(path, write):  # the training state of step 4 meets a full disk
        return real(path, (lambda f: write(_FullDisk())) if ".tmp_step_4" in str(path) else write)

    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "atomic_write", atomic_write)
    code, err = cli(train_pretrain.main, pretrain_argv(world, out), capsys)
    one_line_error(code, err, "no space left on device", f"last good checkpoint is {out}/checkpoints/step_2")
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2"]  # no half-written step_4
    good = snapshot(out / "checkpoints" / "step_2")
    code, err = cli(train_pretrain.main, pretrain_argv(world, out), capsys)  # space freed: run it again
    assert code == 0, err
    assert snapshot(out / "checkpoints" / "step_2") == good
    weights = "checkpoints/step_4/model.safetensors"
    assert snapshot(out)[weights] == snapshot(world / "pretrained")[weights]  # as if never interrupted


def test_a_changed_zoo_spec_is_refused(tmp_path, capsys):
    import importlib.util

    loader = importlib.util.spec_from_file_location("zoo_command", REPO / "zoo.py")  # zoo/ is the package
    zoo_command = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(zoo_command)
    spec = json.loads((REPO / "configs" / "zoo" / "tiny_cpu.json").read_text())
    zoo_dir = tmp_path / "zoo"
    zoo_dir.mkdir()
    (zoo_dir / "zoo_spec.json").write_text(json.dumps(spec))
    before = snapshot(zoo_dir)
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps({**spec, "name": spec.get("name", "zoo") + "_other"}))
    code, err = cli(zoo_command.main, ["run", changed, "--zoo_dir", zoo_dir], capsys)
    one_line_error(code, err, f"--zoo_dir {zoo_dir} holds a zoo of another spec", "in 'name'")
    assert snapshot(zoo_dir) == before


def test_a_pickle_that_runs_code_is_refused_in_one_line(world, tmp_path, capsys):
    from model import convert
    from model.io import load_model

    hf = tmp_path / "hf"
    convert.save_hf_bert(load_model(world / "pretrained" / "checkpoints" / "step_4"), hf)
    (hf / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, hf / "pytorch_model.bin")
    code, err = cli(convert.main, ["--from_hf", hf, "--output_dir", tmp_path / "out"], capsys)
    one_line_error(code, err, f"{hf / 'pytorch_model.bin'}: cannot read weights")
    assert not (tmp_path / "ran").exists() and not (tmp_path / "out").exists()


def test_ctrl_c_in_preprocess_is_one_line(world, tmp_path, data_root):
    out = tmp_path / "processed"
    books = data_root / "corpus" / "gutenberg" / "train"
    cmd = [sys.executable, REPO / "data" / "preprocess.py", "--input_path", books, "--vocab_path",
           world / "corpus" / "tokenizer.json", "--output_dir", out, "--workers", 2,
           "--piece_mb", 1]  # fmt: skip
    proc = subprocess.Popen(
        list(map(str, cmd)), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 120
    while not list((out / "shards" / "parts").glob("*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)  # the workers are busy once the first part is in place
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
    _, err = proc.communicate(timeout=60)
    one_line_error(proc.returncode, err, "interrupted")
    assert "ForkPoolWorker" not in err and "KeyboardInterrupt" not in err


def test_files_respect_the_umask(world, tmp_path, capsys):
    from model.convert import main as convert

    old = os.umask(0o022)
    try:
        code, err = cli(train_pretrain.main, pretrain_argv(world, tmp_path / "run"), capsys)
        assert code == 0, err
        step = sorted((tmp_path / "run" / "checkpoints").iterdir())[-1]
        code, err = cli(convert, ["--to_hf", str(step), "--output_dir", str(tmp_path / "hf")], capsys)
        assert code == 0, err
    finally:
        os.umask(old)
    for path in [tmp_path / "hf", *(tmp_path / "run").rglob("*"), *(tmp_path / "hf").rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o755 if path.is_dir() else 0o644), path


def test_metrics_jsonl_is_strict_json(tmp_path):
    from training.metrics import MetricsLogger

    with MetricsLogger(tmp_path, True, 0, 10, tensorboard=False) as logger:
        logger.log(5, {"loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-4})  # every step skipped

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    line = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=refuse)
    assert line == {"step": 5, "loss": None, "grad_norm": None, "lr": 1e-4}


def test_weights_only_dense_checkpoints_resume_bitwise(world, tmp_path, capsys):
    """EarlyBERTs steps 10 and 100 keep weights only; the rolling and final checkpoints hold the optimizer
    state, and a run stopped at step 60 resumes from them to the uninterrupted run's weights."""
    from training.checkpoint import EVALUABLE, latest_checkpoint, list_checkpoints, load_checkpoint
    from utils.errors import UserError

    def argv(out, *extra):
        return pretrain_argv(world, out, "--max_steps", 110, "--save_every", 50, "--log_freq", 50,
                             "--checkpoint_steps", "earlyberts", *extra)  # fmt: skip

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert cli(train_pretrain.main, argv(whole), capsys)[0] == 0
    assert cli(train_pretrain.main, argv(resumed, "--stop_at_step", 60), capsys)[0] == 0
    assert cli(train_pretrain.main, argv(resumed), capsys)[0] == 0
    ckpts = whole / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step_10", "step_100", "step_110"]  # step_50 pruned
    weights_only = {"args.json", "checkpoint.json", "code_version.json", "config.json", "model.safetensors",
                    "tokenizer.json"}  # fmt: skip
    assert {p.name for p in (ckpts / "step_10").iterdir()} == weights_only
    assert {p.name for p in (ckpts / "step_110").iterdir()} == weights_only | {"training_state.pt"}
    assert [n for n, _ in list_checkpoints(whole, need=EVALUABLE)] == [10, 100, 110]
    assert latest_checkpoint(whole) == ckpts / "step_110"
    with pytest.raises(UserError, match="holds weights only"):
        load_checkpoint(ckpts / "step_10")
    for step in (10, 100, 110):
        name = f"checkpoints/step_{step}/model.safetensors"
        assert snapshot(whole)[name] == snapshot(resumed)[name], step
