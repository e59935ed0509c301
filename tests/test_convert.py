"""Hugging Face interop: our BERT equals transformers' BertForPreTraining after import and after export."""

import json
import subprocess
import sys

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from model import ModelConfig, PretrainingModel
from model.convert import load_hf_bert, save_hf_bert
from model.convert import main as convert_main
from model.io import load_model, save_model
from utils.errors import UserError
from utils.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("single_thread")


HF_SMALL = dict(
    vocab_size=101,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=48,
    max_position_embeddings=40,
    type_vocab_size=2,
)


def random_hf_model(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(**HF_SMALL, attn_implementation="eager")
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases, so a swapped weight cannot go unnoticed
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def inputs(batch=3, seq=17, vocab=101, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    types = torch.randint(0, 2, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, 11:] = 0
    mask[2, 5:] = 0
    return ids, types, mask


def assert_same_outputs(ours: PretrainingModel, hf, mask_padding: bool):
    ours.eval()
    ids, types, mask = inputs()
    mask = mask if mask_padding else None
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        enc = ours.encoder(ids, mask, types, output_hidden_states=True)
        out = ours(ids, mask, types)
    assert len(enc.hidden_states) == len(ref.hidden_states) == HF_SMALL["num_hidden_layers"] + 1
    for a, b in zip(enc.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=0)


def old_style_bin(hf, directory):
    """pytorch_model.bin with TF-era LayerNorm gamma/beta names, as in older BERT/MultiBERTs uploads."""
    hf.config.save_pretrained(directory)
    state = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
        for k, v in hf.state_dict().items()
    }
    torch.save(state, directory / "pytorch_model.bin")


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_import_matches_transformers(tmp_path, fmt):
    hf = random_hf_model()
    if fmt == "safetensors":
        hf.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
    else:
        old_style_bin(hf, tmp_path)
    ours = load_hf_bert(tmp_path)
    for padding in (False, True):
        assert_same_outputs(ours, hf, mask_padding=padding)


def test_export_loads_in_transformers(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(**HF_SMALL, pad_vocab_to_multiple_of=8, hidden_dropout_prob=0.0)
    ours = PretrainingModel(config)
    with torch.no_grad():
        for p in ours.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    save_hf_bert(ours, tmp_path)
    hf, info = transformers.BertForPreTraining.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    for padding in (False, True):
        assert_same_outputs(ours, hf.eval(), mask_padding=padding)


def test_cli_round_trip(tmp_path):
    hf = random_hf_model(seed=3)
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").write_text("[PAD]\n")
    cmd = [sys.executable, "-m", "model.convert"]
    subprocess.run(
        cmd + ["--from_hf", tmp_path / "hf", "--output_dir", tmp_path / "ours"], check=True, cwd=REPO_ROOT
    )
    assert (tmp_path / "ours" / "vocab.txt").is_file()
    ours = load_model(tmp_path / "ours")
    assert_same_outputs(ours, hf, mask_padding=True)
    subprocess.run(
        cmd + ["--to_hf", tmp_path / "ours", "--output_dir", tmp_path / "back"], check=True, cwd=REPO_ROOT
    )
    back = load_file(tmp_path / "back" / "model.safetensors")
    for name, tensor in hf.state_dict().items():
        if name in back:
            assert torch.equal(back[name], tensor), name
    assert set(back) == {k for k in hf.state_dict() if not k.startswith("cls.predictions.decoder")}


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "model.convert", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )


def assert_one_line_error(result, *needles):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_cli_bad_inputs(tmp_path):
    hf = random_hf_model()
    hf.save_pretrained(tmp_path / "hf")
    # shapes that do not fit the config: config.json says hidden 32, the weights are wider
    bad = tmp_path / "bad_shapes"
    bad.mkdir()
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 64}))
    save_file(load_file(tmp_path / "hf" / "model.safetensors"), bad / "model.safetensors")
    result = run_cli("--from_hf", bad, "--output_dir", tmp_path / "out")
    assert_one_line_error(result, "intermediate.dense.weight", "[48, 32]")
    assert not (tmp_path / "out").exists()
    # missing weights file
    empty = tmp_path / "no_weights"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(run_cli("--from_hf", empty, "--output_dir", tmp_path / "out"), "pytorch_model.bin")
    # our checkpoint with a misspelt config key
    save_model(
        PretrainingModel(ModelConfig.from_json(REPO_ROOT / "configs" / "tiny.json")), tmp_path / "ckpt"
    )
    d = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    d["hiden_size"] = d.pop("hidden_size")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(d))
    with pytest.raises(UserError, match="hiden_size"):  # in-process: the CLI wrapper is checked above
        convert_main(["--to_hf", str(tmp_path / "ckpt"), "--output_dir", str(tmp_path / "out")])
    # an existing, non-empty output folder is never overwritten
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="keep"):
        convert_main(["--from_hf", str(tmp_path / "hf"), "--output_dir", str(tmp_path / "keep")])
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_ltg_export_refused(tmp_path):
    model = PretrainingModel(ModelConfig.from_json(REPO_ROOT / "configs" / "tiny_elc.json"))
    with pytest.raises(UserError, match="backbone='ltg'"):
        save_hf_bert(model, tmp_path)
