"""model.convert --from_elc / --to_elc: elc-bert's key names and shapes (hand-listed from its models/ files),
the q/k/v split, round trips through both file forms, and one-line errors for bad or mismatched files."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig, PretrainingModel
from model.convert import main as convert
from model.io import load_model, save_model
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("base", "zero", "normalized", "weighted_output")


def ours(variant, layers=2, seed=0):
    d = json.loads((REPO / "configs" / "tiny_elc.json").read_text())
    d.update(layer_weighting=variant, num_hidden_layers=layers)
    torch.manual_seed(seed)
    model = PretrainingModel(ModelConfig.from_dict(d)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "layer_weighting" in n or n.endswith("bias"):
                p.normal_(0, 1)  # away from init, so that a misplaced tensor shows
    return model


def expected_reference_keys(variant, layers):
    """elc-bert's Bert(config).state_dict() keys, listed by hand from models/model_elc_bert_*.py."""
    keys = {
        "embedding.word_embedding.weight",
        "embedding.relative_embedding",
        "embedding.relative_layer_norm.weight",
        "embedding.relative_layer_norm.bias",
        "classifier.nonlinearity.1.weight",
        "classifier.nonlinearity.1.bias",
        "classifier.nonlinearity.5.weight",
        "classifier.nonlinearity.5.bias",
    }
    for i in range(layers):
        t = f"transformer.layers.{i}."
        for m in ("in_proj_qk", "in_proj_v", "out_proj", "post_layer_norm"):
            keys |= {f"{t}attention.{m}.weight", f"{t}attention.{m}.bias"}
        keys |= {f"{t}attention.position_indices", f"{t}mlp.mlp.1.weight", f"{t}mlp.mlp.4.weight"}
        keys.add(f"{t}prev_layer_weights")
    if variant == "weighted_output":
        keys.add("transformer.prev_layer_weights")
    return keys


def export(model, tmp_path, name="ours") -> Path:
    save_model(model, tmp_path / name)
    convert(["--to_elc", str(tmp_path / name), "--output_dir", str(tmp_path / f"{name}_elc")])
    return tmp_path / f"{name}_elc"


def test_exported_keys_shapes_and_qkv_split(tmp_path):
    model = ours("weighted_output")
    out = export(model, tmp_path)
    saved = torch.load(out / "model.bin", weights_only=True)
    ref = saved["model"]
    assert set(ref) == expected_reference_keys("weighted_output", 2)
    H, I, V = 64, 128, 4096
    assert ref["transformer.layers.0.attention.in_proj_qk.weight"].shape == (2 * H, H)
    assert ref["transformer.layers.0.attention.in_proj_v.weight"].shape == (H, H)
    assert ref["transformer.layers.1.mlp.mlp.1.weight"].shape == (2 * I, H)
    assert ref["transformer.layers.1.prev_layer_weights"].shape == (2,)
    assert ref["transformer.prev_layer_weights"].shape == (3,)
    assert ref["classifier.nonlinearity.5.bias"].shape == (V,)
    assert torch.equal(ref["classifier.nonlinearity.5.weight"], ref["embedding.word_embedding.weight"])
    # q, k, v: the reference's in_proj_qk gives [q | k], in_proj_v gives v, our fused qkv [q | k | v]
    x = torch.randn(5, H)
    fused = model.encoder.layers[1].attention.qkv(x)
    t = "transformer.layers.1.attention."
    qk = F.linear(x, ref[t + "in_proj_qk.weight"], ref[t + "in_proj_qk.bias"])
    v = F.linear(x, ref[t + "in_proj_v.weight"], ref[t + "in_proj_v.bias"])
    torch.testing.assert_close(torch.cat([qk, v], -1), fused, rtol=0, atol=0)
    # elc-bert's config format, readable by its BertConfig (a flat JSON object of these keys)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_size"] == H and cfg["layer_norm_eps"] == 1e-7 and "backbone" not in cfg


@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_keeps_the_logits(variant, tmp_path):
    model = ours(variant)
    out = export(model, tmp_path)
    # the form train_elc_bert_*.py saves: {"model": ..., "optimizer": ..., "args": Namespace}
    ckpt = torch.load(out / "model.bin", weights_only=True)
    ckpt.update(optimizer={}, global_step=3, epoch=0, args=argparse.Namespace(seq_length=128))
    torch.save(ckpt, tmp_path / "train_dict.bin")
    torch.save(ckpt["model"], tmp_path / "bare.bin")  # and a bare state dict
    ids = torch.randint(5, 4096, (2, 20))
    mask = (torch.arange(20)[None] < torch.tensor([[20], [9]])).long()
    want = model(ids, mask).mlm_logits
    for name in ("train_dict.bin", "bare.bin"):
        back = tmp_path / f"back_{name}"
        convert(
            ["--from_elc", str(tmp_path / name), "--config_file", str(out / "config.json")]
            + ["--layer_weighting", variant, "--output_dir", str(back)]
        )
        m = load_model(back).eval()
        assert m.config.layer_weighting == variant and m.config.backbone == "ltg"
        assert torch.equal(m(ids, mask).mlm_logits, want)
    # and exported again: the same file content
    again = export(load_model(tmp_path / "back_bare.bin"), tmp_path, "again")
    a, b = (torch.load(p / "model.bin", weights_only=True)["model"] for p in (out, again))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_or_mismatched_files(tmp_path):
    model = ours("weighted_output")
    out = export(model, tmp_path)
    cfg = out / "config.json"

    def from_elc(ckpt, variant="weighted_output", config=cfg):
        args = ["--from_elc", str(ckpt), "--config_file", str(config), "--layer_weighting", variant]
        convert(args + ["--output_dir", str(tmp_path / "x")])

    with pytest.raises(UserError, match="transformer.prev_layer_weights.*weighted_output checkpoint"):
        from_elc(out / "model.bin", "base")  # a weighted_output file read as base
    with pytest.raises(UserError, match="missing key 'transformer.prev_layer_weights'"):
        base_out = export(ours("base"), tmp_path, "b")
        from_elc(base_out / "model.bin", "weighted_output")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**json.loads(cfg.read_text()), "intermediate_size": 96}))
    with pytest.raises(UserError, match="has shape"):
        from_elc(out / "model.bin", config=wrong)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable torch checkpoint"):
        from_elc(junk)
    with pytest.raises(UserError, match="layer_weighting 'none' must be one of"):
        from_elc(out / "model.bin", "none")
    with pytest.raises(UserError, match="missing key 'hidden_size'"):
        from_elc(out / "model.bin", config=_without(cfg, tmp_path))
    bert = tmp_path / "bert"
    save_model(PretrainingModel(ModelConfig.from_json(REPO / "configs" / "tiny.json")), bert)
    with pytest.raises(UserError, match="--to_elc needs an ltg backbone"):
        convert(["--to_elc", str(bert), "--output_dir", str(tmp_path / "y")])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # nothing written
    # from the command line: one line on stderr, exit 2, no traceback
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "model.convert", "--from_elc", str(junk), "--config_file", str(cfg)]
    r = subprocess.run(
        cmd + ["--layer_weighting", "base", "--output_dir", str(tmp_path / "z")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


def _without(cfg: Path, tmp_path: Path) -> Path:
    d = json.loads(cfg.read_text())
    del d["hidden_size"]
    p = tmp_path / "no_hidden.json"
    p.write_text(json.dumps(d))
    return p
