"""Run folders written by the code of 2026-12-01 still load, resume bitwise and convert with today's code.

tests/fixtures/run_2026_12_01: pretraining, a bert model of hidden 16, 2 layers, NSP, AdamW, 4 steps of
batch 4 x length 32 on the fixture books, seed 5: its tokenizer, run_args.json, the step-2 checkpoint and
the step-4 weights; tests/fixtures/corpus_2026_12_01: the processed corpus it trained on.
tests/fixtures/finetune_2026_12_01: SST-2 fine-tuning of that step-2 model, stopped
after epoch 1 of 2: run_args.json, split.json, metrics.jsonl, the epoch-1 checkpoint and the weights
the uninterrupted run had after epoch 2. tests/fixtures/run_nonsp_2026_12_01: the NSP run's model trained
MLM only (--no_nsp), its step-2 checkpoint and step-4 weights. Also: a config.json without a key that a
later model knob adds loads with the knob's default."""

import json
import shutil

import pytest
import torch
import transformers
from safetensors.torch import load_file

import train_pretrain
from model.convert import main as convert_main
from model.io import load_model
from utils.paths import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "run_2026_12_01"
MLM_ONLY = REPO_ROOT / "tests" / "fixtures" / "run_mlm_2026_12_01"  # the same without an NSP head
NO_NSP = REPO_ROOT / "tests" / "fixtures" / "run_nonsp_2026_12_01"  # FIXTURE's model trained --no_nsp
TOKENIZER = FIXTURE / "tokenizer.json"
CORPUS = REPO_ROOT / "tests" / "fixtures" / "corpus_2026_12_01"  # processed on 2026-12-01 (format 1)
FLAGS = {
    "seq_length": 32, "batch_size": 4, "max_steps": 4,
    "learning_rate": 2e-3, "warmup_steps": 1, "log_freq": 1, "save_every": 2, "checkpoint_steps": 2,
    "device": "cpu", "mixed_precision": "no", "seed": 5,
    "instance_layout": "fixed_chunks",  # that day's layout (the default with NSP is now bert's)
}  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus those runs trained on, as that day's data/preprocess.py wrote it (the fixture books, the
    saved run's tokenizer, --validation_fraction 0.05 --seed 0): today's reader must read it, and the
    preprocessing of today splits documents differently. Copied: a run may cache its layout beside it."""
    out = tmp_path_factory.mktemp("saved_run_corpus") / "processed"
    shutil.copytree(CORPUS, out)
    return out


def copy_run(fixture, dst, corpus, tok):
    """The fixture run, its paths (a temporary folder of the day it was written) pointed at this test's."""
    shutil.copytree(fixture / "checkpoints", dst / "checkpoints")
    moved = {"input_path": str(corpus), "vocab_path": str(tok), "output_dir": str(dst)}
    for path in (fixture / "run_args.json", fixture / "checkpoints" / "step_2" / "args.json"):
        saved = {**json.loads(path.read_text()), **moved}
        target = dst / path.relative_to(fixture)
        target.write_text(json.dumps(saved, indent=2, sort_keys=True))


def run(fixture, corpus, tok, out, *extra):
    args = {**FLAGS, "config_file": fixture / "model.json", "input_path": corpus, "vocab_path": tok,
            "output_dir": out}  # fmt: skip
    train_pretrain.main(
        [x for k, v in args.items() for x in (f"--{k}", str(v))] + ["--no_tensorboard", *extra]
    )


def without_unused_pooler(weights: dict, fixture) -> dict:
    """The MLM-only run of that day also held BERT's pooler, untrained (no head read it); today's has none."""
    if fixture == MLM_ONLY:
        init = load_file(MLM_ONLY / "checkpoints" / "step_2" / "model.safetensors")
        pooler = [k for k in weights if k.startswith("encoder.pooler.")]
        assert pooler and all(torch.equal(weights.pop(k), init[k]) for k in pooler)
    return weights


@pytest.mark.parametrize("fixture", [FIXTURE, MLM_ONLY], ids=["mlm_nsp", "mlm_only"])
def test_saved_run_resumes_bitwise(corpus, tmp_path, fixture):
    # today's code from scratch writes the very step-2 weights that the saved run holds
    run(fixture, corpus, TOKENIZER, tmp_path / "fresh")
    fresh = load_file(tmp_path / "fresh" / "checkpoints" / "step_2" / "model.safetensors")
    saved = without_unused_pooler(
        load_file(fixture / "checkpoints" / "step_2" / "model.safetensors"), fixture
    )
    assert fresh.keys() == saved.keys()
    assert all(torch.equal(fresh[k], saved[k]) for k in saved)
    # resuming the saved run's step 2 reaches the saved run's own step 4, bitwise
    copy_run(fixture, tmp_path / "old", corpus, TOKENIZER)
    run(fixture, corpus, TOKENIZER, tmp_path / "old")
    resumed = load_file(tmp_path / "old" / "checkpoints" / "step_4" / "model.safetensors")
    expected = without_unused_pooler(load_file(fixture / "step_4_model.safetensors"), fixture)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_saved_no_nsp_run_with_an_nsp_head_resumes_bitwise(corpus, tmp_path):
    """MLM only on a model with an NSP head, as that day's code ran it: the head and the pooler sat in
    the optimizer with zero gradients (a 0.0 * nsp_logits term), so weight decay shrank their weights.
    Today they are frozen. Every trained parameter still matches that day's run bitwise, fresh and
    resumed; the frozen ones keep their values, and their optimizer state its entries."""
    head = ("nsp_head.", "encoder.pooler.")
    run(NO_NSP, corpus, TOKENIZER, tmp_path / "fresh", "--no_nsp")
    fresh = load_file(tmp_path / "fresh" / "checkpoints" / "step_2" / "model.safetensors")
    saved = load_file(NO_NSP / "checkpoints" / "step_2" / "model.safetensors")
    assert fresh.keys() == saved.keys()
    assert all(torch.equal(fresh[k], saved[k]) for k in saved if not k.startswith(head))
    copy_run(NO_NSP, tmp_path / "old", corpus, TOKENIZER)
    run(NO_NSP, corpus, TOKENIZER, tmp_path / "old", "--no_nsp")
    resumed = load_file(tmp_path / "old" / "checkpoints" / "step_4" / "model.safetensors")
    expected = load_file(NO_NSP / "step_4_model.safetensors")
    frozen = [k for k in saved if k.startswith(head)]
    assert len(frozen) == 4 and all(torch.equal(resumed[k], saved[k]) for k in frozen)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected if k not in frozen)
    before, after = (
        torch.load(d / "training_state.pt", weights_only=True)["trainer"]["optimizer"]
        for d in (NO_NSP / "checkpoints" / "step_2", tmp_path / "old" / "checkpoints" / "step_4")
    )
    assert before.keys() == after.keys() and before["state"].keys() == after["state"].keys()
    untouched = [
        i for i, s in before["state"].items() if all(torch.equal(s[x], after["state"][i][x]) for x in s)
    ]
    assert len(untouched) == 4  # the frozen parameters' entries, saved as loaded


def test_saved_run_from_before_a_knob_existed_resumes_bitwise(corpus, tmp_path):
    """Every record of the saved run lacks a key that a later ModelConfig field added (as the runs saved
    before any new knob do): the model config it recorded still equals today's, so it resumes bitwise."""
    old = tmp_path / "old"
    copy_run(FIXTURE, old, corpus, TOKENIZER)
    for path in (old / "run_args.json", old / "checkpoints" / "step_2" / "args.json"):
        record = json.loads(path.read_text())
        del record["model_config"]["pad_token_id"]
        path.write_text(json.dumps(record))
    config = json.loads((old / "checkpoints" / "step_2" / "config.json").read_text())
    del config["pad_token_id"]
    (old / "checkpoints" / "step_2" / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.json").write_text(json.dumps(config))  # the config file of that day, too
    train_pretrain.main(
        [x for k, v in {**FLAGS, "config_file": tmp_path / "model.json", "input_path": corpus,
                        "vocab_path": TOKENIZER, "output_dir": old}.items() for x in (f"--{k}", str(v))]
        + ["--no_tensorboard"]
    )  # fmt: skip
    resumed = load_file(old / "checkpoints" / "step_4" / "model.safetensors")
    expected = load_file(FIXTURE / "step_4_model.safetensors")
    assert resumed.keys() == expected.keys() and all(torch.equal(resumed[k], expected[k]) for k in expected)


def test_saved_checkpoint_loads_without_a_later_key_and_converts(tmp_path):
    ckpt = tmp_path / "step_2"
    shutil.copytree(FIXTURE / "checkpoints" / "step_2", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    del config["pad_token_id"]  # as an older config lacks a key that a newer ModelConfig field adds
    (ckpt / "config.json").write_text(json.dumps(config))
    model = load_model(ckpt).eval()
    assert model.config.pad_token_id == 0  # the field's default
    convert_main(["--to_hf", str(ckpt), "--output_dir", str(tmp_path / "hf")])
    hf = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    ids = torch.randint(5, 4096, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        ours = model(ids, mask)
        ref = hf(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(ours.mlm_logits, ref.prediction_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.nsp_logits, ref.seq_relationship_logits, rtol=1e-5, atol=1e-5)


def test_unknown_config_key_is_still_refused(tmp_path):
    from utils.errors import UserError

    ckpt = tmp_path / "step_2"
    shutil.copytree(FIXTURE / "checkpoints" / "step_2", ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["hiden_size"] = 16  # a typo
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="unknown key 'hiden_size'"):
        load_model(ckpt)


FINETUNE = REPO_ROOT / "tests" / "fixtures" / "finetune_2026_12_01"


def test_saved_finetune_run_resumes_bitwise(data_root, tmp_path):
    """An SST-2 run of the same day (the fixture's step-2 model, 400 train / 100 dev sentences, batch 16,
    2 epochs, stopped after epoch 1) resumed today reaches that day's uninterrupted epoch-2 weights."""
    import train_finetune

    data = tmp_path / "sst2"
    data.mkdir()
    for name, lines in (("train.tsv", 401), ("dev.tsv", 101)):  # header + the first sentences
        text = (data_root / "sst2" / name).read_text().splitlines(keepends=True)
        (data / name).write_text("".join(text[:lines]))
    out = tmp_path / "run"
    shutil.copytree(FINETUNE, out, ignore=shutil.ignore_patterns("epoch_2_model.safetensors"))
    moved = {"data_dir": str(data), "output_dir": str(out), "vocab_path": str(TOKENIZER),
             "checkpoint_path": str(FIXTURE / "checkpoints" / "step_2")}  # fmt: skip
    for path in (out / "run_args.json", out / "checkpoints" / "epoch_1" / "args.json"):
        path.write_text(json.dumps({**json.loads(path.read_text()), **moved}, indent=2, sort_keys=True))
    args = {**moved, "task": "sst2", "epochs": 2, "batch_size": 16, "max_seq_length": 64, "device": "cpu",
            "mixed_precision": "no", "learning_rate": 1e-3}  # fmt: skip
    train_finetune.main(
        [x for k, v in args.items() for x in (f"--{k}", str(v))] + ["--resume", "--no_tensorboard"]
    )
    resumed = load_file(out / "checkpoints" / "epoch_2" / "model.safetensors")
    expected = load_file(FINETUNE / "epoch_2_model.safetensors")
    # that day's cls-pooling classifier also held BERT's pooler, frozen at its pretrained values; today's
    # holds none (model.io drops it on load)
    pretrained = load_file(FIXTURE / "checkpoints" / "step_2" / "model.safetensors")
    pooler = [k for k in expected if k.startswith("encoder.pooler.")]
    assert pooler and all(torch.equal(expected.pop(k), pretrained[k]) for k in pooler)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
