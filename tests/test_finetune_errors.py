"""Bad input to train_finetune.py: one line naming the problem, exit code 2, no traceback, nothing written."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_bad_input_gives_one_line_errors(pretrained_tiny, tokenizer_path, data_root, tmp_path):
    from data.tokenization import save_tokenizer, train_tokenizer

    sst2 = tmp_path / "sst2"
    sst2.mkdir()
    (sst2 / "train.tsv").write_text("text\tlabel\na fine film\t1\n")  # SST-2 needs a 'sentence' column
    (sst2 / "dev.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    squad = json.loads((data_root / "squad" / "dev-v1.1.json").read_text())
    squad["data"] = squad["data"][:1]
    del squad["data"][0]["paragraphs"][2]["qas"][1]["question"]
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    # same size as the checkpoint's vocabulary (4096) but trained on other text: a different tokenizer
    sentences = [
        r.split("\t")[0] for r in (data_root / "sst2" / "train.tsv").read_text().splitlines()[1:20000]
    ]
    other = tmp_path / "other_tokenizer.json"
    save_tokenizer(train_tokenizer(sentences, vocab_size=4096, lowercase=True), other)
    small = tmp_path / "small_tokenizer.json"
    save_tokenizer(train_tokenizer(sentences[:2000], vocab_size=500, lowercase=True), small)
    mnli = tmp_path / "mnli.tsv"
    mnli.write_text("sentence1\tsentence2\tgold_label\nA dog runs.\tAn animal moves.\tentailment\n")
    bare = tmp_path / "bare_checkpoint"  # weights and config only, as a converted model: no args.json
    bare.mkdir()
    for name in ("model.safetensors", "config.json"):
        (bare / name).write_bytes((pretrained_tiny / name).read_bytes())

    base = ["--checkpoint_path", pretrained_tiny, "--vocab_path", tokenizer_path, "--device", "cpu"]
    sst = ["--task", "sst2", "--data_dir", data_root / "sst2"]
    cases = {
        "unknown task": (["--task", "sst3", "--data_dir", sst2], "--task 'sst3' is not one of cola, sst2"),
        "wrong columns": (
            ["--task", "sst2", "--data_dir", sst2],
            "train.tsv: missing column(s) ['sentence']",
        ),
        "squad field": (
            [
                "--task",
                "squad",
                "--train_file",
                tmp_path / "squad.json",
                "--dev_file",
                tmp_path / "squad.json",
            ],
            "squad.json: data[0].paragraphs[2].qas[1] is missing the field 'question'",
        ),
        "no dev file": (
            ["--task", "sst2", "--train_file", data_root / "sst2" / "train.tsv"],
            "--dev_file or --data_dir is required (to read dev.tsv)",
        ),
        "mnli mismatched": (  # the files stand in for train.tsv and dev_matched.tsv only
            ["--task", "mnli", "--train_file", mnli, "--dev_file", mnli],
            "--data_dir is required (to read dev_mismatched.tsv)",
        ),
        "other tokenizer": ([*sst, "--vocab_path", other], "(4096 tokens) is not the tokenizer"),
        "vocabulary size": (
            [*sst, "--vocab_path", small, "--checkpoint_path", bare],
            "has 500 tokens but --checkpoint_path",
        ),
    }
    procs = {}
    for name, (extra, _) in cases.items():
        argv = [*base, *extra, "--output_dir", tmp_path / name.replace(" ", "_")]
        cmd = [sys.executable, str(REPO / "train_finetune.py"), *map(str, argv)]
        procs[name] = subprocess.Popen(
            cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for name, (_, message) in cases.items():
        _, err = procs[name].communicate(timeout=120)
        assert procs[name].returncode == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (name, err)
        assert not (tmp_path / name.replace(" ", "_")).exists(), name  # refused before writing anything
