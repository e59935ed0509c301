"""Model unit tests: config, BERT / LTG-BERT backbones, ELC layer weighting, masked-only MLM head, io."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

import model.bert
from model import ModelConfig, PretrainingModel
from model.config import LAYER_WEIGHTINGS
from model.io import load_model, save_model
from model.ltg import make_log_bucket_position
from utils.errors import UserError
from utils.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIGS = REPO_ROOT / "configs"


def tiny(name="tiny", **overrides) -> ModelConfig:
    d = ModelConfig.from_json(CONFIGS / f"{name}.json").to_dict()
    return ModelConfig.from_dict({**d, **overrides})


def batch(config, b=3, s=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (b, s), generator=g)
    types = (torch.arange(s) >= s // 2).long().expand(b, s)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 12:] = 0
    mask[2, 7:] = 0
    return ids, mask, types


# ---------------------------------------------------------------- config


def test_configs_in_repo_have_the_documented_sizes():
    sizes = {  # hidden, layers, heads, ffn, vocab, positions
        "bert_base": (768, 12, 12, 3072, 30522, 512),
        "bert_small": (256, 4, 4, 1024, 4096, 512),
        "tiny": (64, 2, 2, 128, 4096, 128),
        "tiny_elc": (64, 2, 2, 128, 4096, 128),
        "elc_small": (384, 12, 6, 1024, 6144, 512),
        "elc_base": (768, 12, 12, 2048, 16384, 512),
    }
    for name, want in sizes.items():
        c = ModelConfig.from_json(CONFIGS / f"{name}.json")
        got = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size)
        assert got + (c.vocab_size, c.max_position_embeddings) == want, name
    assert ModelConfig.from_json(CONFIGS / "tiny_elc.json").backbone == "ltg"
    assert ModelConfig.from_json(CONFIGS / "tiny_elc.json").layer_weighting == "base"


def test_config_json_round_trip(tmp_path):
    c = tiny("tiny_elc", layer_weighting="weighted_output", pad_vocab_to_multiple_of=64)
    c.to_json(tmp_path / "c.json")
    assert ModelConfig.from_json(tmp_path / "c.json") == c
    assert (
        c.padded_vocab_size == 4096
        and tiny(vocab_size=4000, pad_vocab_to_multiple_of=64).padded_vocab_size == 4032
    )


def test_config_errors_name_the_key(tmp_path):
    d = ModelConfig.from_json(CONFIGS / "tiny.json").to_dict()
    cases = {
        "hiden_size": {**{k: v for k, v in d.items() if k != "hidden_size"}, "hiden_size": 64},
        "num_attention_heads": {k: v for k, v in d.items() if k != "num_attention_heads"},
        "layer_weighting": {**d, "layer_weighting": "weighted"},
        "backbone": {**d, "backbone": "roberta"},
        "hidden_dropout_prob": {**d, "hidden_dropout_prob": "0.1"},
    }
    for key, bad in cases.items():
        (tmp_path / "c.json").write_text(json.dumps(bad))
        with pytest.raises(UserError, match=key) as err:
            ModelConfig.from_json(tmp_path / "c.json")
        assert "c.json" in str(err.value)
    with pytest.raises(UserError, match="missing.json"):
        ModelConfig.from_json(tmp_path / "missing.json")


def test_bert_base_has_110m_parameters():
    with torch.device("meta"):  # no memory, no init cost
        m = PretrainingModel(ModelConfig.from_json(CONFIGS / "bert_base.json"))
    n = sum(p.numel() for p in m.parameters())
    assert abs(n - 110e6) / 110e6 < 0.01, n


# ---------------------------------------------------------------- BERT


def test_no_attention_mask_reaches_sdpa_without_padding(monkeypatch):
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("attn_mask"))
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(model.bert.F, "scaled_dot_product_attention", spy)
    m = PretrainingModel(tiny()).eval()
    ids, mask, types = batch(m.config)
    m(ids, None, types)
    assert seen == [None, None]
    m(ids, mask, types)
    assert all(s is not None for s in seen[2:])


@pytest.mark.parametrize("name", ["tiny", "tiny_elc"])
def test_padding_does_not_change_real_tokens(name):
    m = PretrainingModel(tiny(name)).eval()
    ids, mask, types = batch(m.config)
    noisy = torch.where(mask.bool(), ids, torch.randint_like(ids, 5, 100))  # change only the pad tokens
    with torch.no_grad():
        a = m.encoder(ids, mask, types).last_hidden_state
        b = m.encoder(noisy, mask, types).last_hidden_state
        # the unpadded first row equals a run on its own, without any mask
        c = m.encoder(ids[:1], None, types[:1]).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(a[0], c[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["tiny", "tiny_elc"])
def test_masked_only_mlm_loss_equals_full_loss(name):
    config = tiny(name, pad_vocab_to_multiple_of=64, vocab_size=4000)
    m = PretrainingModel(config).eval()
    ids, mask, types = batch(config)
    g = torch.Generator().manual_seed(1)
    positions = torch.stack([torch.randperm(7, generator=g)[:5] for _ in range(3)])  # [B,P], distinct
    labels = torch.randint(0, config.vocab_size, (3, 5), generator=g)
    labels[0, 4] = labels[2, 3:] = -100
    positions[labels == -100] = 0  # padding slots point at 0, as the data pipeline does
    with torch.no_grad():
        gathered = m(ids, mask, types, masked_positions=positions).mlm_logits  # [B,P,V]
        full = m(ids, mask, types).mlm_logits  # [B,S,V]
    assert gathered.shape == (3, 5, 4000) and full.shape == (3, 20, 4000)
    full_labels = torch.full((3, 20), -100)
    for b in range(3):
        for p in range(5):
            if labels[b, p] != -100:
                full_labels[b, positions[b, p]] = labels[b, p]
    loss_gathered = F.cross_entropy(gathered.flatten(0, 1), labels.flatten(), ignore_index=-100)
    loss_full = F.cross_entropy(full.flatten(0, 1), full_labels.flatten(), ignore_index=-100)
    assert abs(loss_gathered.item() - loss_full.item()) < 1e-6


@pytest.mark.parametrize("name", ["tiny", "tiny_elc"])
def test_forward_is_one_graph_without_host_sync(name):
    # .item(), nonzero() or boolean indexing in forward would each show up as a graph break
    config = tiny(name, layer_weighting="weighted_output", next_sentence_prediction=True)
    m = PretrainingModel(config)
    ids, mask, types = batch(config)
    explained = torch._dynamo.explain(m)(ids, mask, types, torch.zeros(3, 4, dtype=torch.long))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


# ---------------------------------------------------------------- LTG


def test_log_bucket_table():
    # bucket size 32, max position 512: exact for |d| <= 16, then ceil(log(|d|/16) / log(511/16) * 15) + 16
    table = {0: 0, 1: 1, 15: 15, 16: 16, 17: 17, 20: 17, 24: 18, 31: 19, 32: 20, 48: 21, 64: 23, 100: 24,
             128: 26, 256: 29, 400: 30, 511: 31, 600: 31}  # fmt: skip
    d = torch.tensor(list(table))
    want = torch.tensor(list(table.values()))
    assert torch.equal(make_log_bucket_position(d, 32, 512), want)
    assert torch.equal(make_log_bucket_position(-d, 32, 512), -want)  # symmetric with sign


def reference_ltg_attention(att, x, pad, relative):
    """The ltg-bert/elc-bert Attention.forward math, transcribed directly (seq-first, einsum + gather)."""
    S, B, H = x.shape
    nh, hd = att.num_heads, H // att.num_heads
    w, bias = att.qkv.weight, att.qkv.bias
    h = att.pre_norm(x)
    query, key = F.linear(h, w[: 2 * H], bias[: 2 * H]).chunk(2, dim=2)
    value = F.linear(h, w[2 * H :], bias[2 * H :])
    query_pos, key_pos = F.linear(relative, w[: 2 * H], bias[: 2 * H]).chunk(2, dim=-1)
    query_pos, key_pos = query_pos.view(-1, nh, hd), key_pos.view(-1, nh, hd)
    query = query.reshape(S, B * nh, hd).transpose(0, 1)
    key = key.reshape(S, B * nh, hd).transpose(0, 1)
    value = value.reshape(S, B * nh, hd).transpose(0, 1)
    scores = torch.bmm(query, key.transpose(1, 2) * att.scale).view(B, nh, S, S)
    query, key = query.view(B, nh, S, hd), key.view(B, nh, S, hd)
    qp = torch.einsum("bhqd,khd->bhqk", query, key_pos * att.scale)
    pk = torch.einsum("bhkd,qhd->bhqk", key * att.scale, query_pos)
    idx = att.position_indices[:S, :S].expand(B, nh, -1, -1)
    scores = scores + qp.gather(-1, idx) + pk.gather(-2, idx)
    scores = scores.masked_fill(pad[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, -1)
    context = torch.bmm(probs.flatten(0, 1), value).transpose(0, 1).reshape(S, B, H)
    return att.post_norm(att.out(context))


def test_ltg_attention_matches_reference_math():
    torch.manual_seed(0)
    m = PretrainingModel(tiny("tiny_elc", max_position_embeddings=64, position_bucket_size=8)).eval()
    att = m.encoder.layers[0].attention
    with torch.no_grad():
        att.post_norm.weight.add_(0.3 * torch.randn(64))
        x = torch.randn(3, 40, 64)  # long enough to use log buckets (bucket/2 = 4)
        _, mask, _ = batch(m.config, s=40)
        relative = torch.randn(2 * 8 - 1, 64)
        ours = att(x, mask[:, None, None, :].bool(), relative)
        ref = reference_ltg_attention(att, x.transpose(0, 1), ~mask.bool(), relative).transpose(0, 1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_ltg_initialisation():
    torch.manual_seed(0)
    config = tiny(
        "tiny_elc", hidden_size=128, num_hidden_layers=4, intermediate_size=256, num_attention_heads=4
    )
    enc = PretrainingModel(config).encoder
    std = math.sqrt(2 / (5 * 128))
    cut_std = std * 0.8796  # std of a normal truncated at +-2 std
    for w in (enc.word_embeddings.weight, enc.layers[0].attention.qkv.weight):
        assert w.abs().max() <= 2 * std + 1e-6
        assert abs(w.std().item() / cut_std - 1) < 0.05
    for i, layer in enumerate(enc.layers):
        want = cut_std * math.sqrt(1 / (2 * (i + 1)))
        assert abs(layer.ffn.mlp[1].weight.std().item() / want - 1) < 0.05
        assert torch.all(layer.attention.qkv.bias == 0)


# ---------------------------------------------------------------- ELC layer weighting


@pytest.mark.parametrize("backbone", ["bert", "ltg"])
@pytest.mark.parametrize("variant", [v for v in LAYER_WEIGHTINGS if v != "none"])
def test_elc_variants(backbone, variant):
    name = "tiny" if backbone == "bert" else "tiny_elc"
    config = tiny(name, layer_weighting=variant, num_hidden_layers=3)
    m = PretrainingModel(config)
    weights = m.softmaxed_layer_weights()
    assert set(weights) == {"layer_0", "layer_1", "layer_2"} | (
        {"output"} if variant == "weighted_output" else set()
    )
    e = math.e
    if variant in ("base", "base_residual"):  # previous layer at 1, the rest at 0, before the softmax
        torch.testing.assert_close(weights["layer_2"], torch.tensor([1, 1, e]) / (2 + e))
    else:
        torch.testing.assert_close(weights["layer_2"], torch.full((3,), 1 / 3))
    assert torch.equal(weights["layer_0"], torch.tensor([1.0]))

    ids, mask, types = batch(config)
    inputs = []
    m.encoder.layers[2].register_forward_pre_hook(lambda mod, args: inputs.append(args[0]))
    out = m.encoder(ids, mask, types, output_hidden_states=True)
    states = out.hidden_states
    assert len(states) == 4
    # layer 2's input is the softmax-weighted sum of the embedding output and layers 0, 1
    mix = sum(w * s for w, s in zip(weights["layer_2"], states[:3]))
    torch.testing.assert_close(inputs[0], mix, atol=1e-6, rtol=0)
    if variant == "normalized":  # stored outputs passed a non-affine LayerNorm
        torch.testing.assert_close(states[2].mean(-1), torch.zeros(3, 20), atol=1e-5, rtol=0)
    if variant == "weighted_output":
        assert not torch.allclose(out.last_hidden_state, states[-1])
        torch.testing.assert_close(out.last_hidden_state, sum(states) / 4, atol=1e-6, rtol=0)
    else:
        assert torch.equal(out.last_hidden_state, states[-1])

    loss = m(ids, mask, types, masked_positions=torch.ones(3, 2, dtype=torch.long)).mlm_logits.square().mean()
    loss.backward()
    layer_weights = [n for n, p in m.named_parameters() if "layer_weighting" in n]
    assert len(layer_weights) == 3 + (variant == "weighted_output")
    for n, p in m.named_parameters():
        if (
            "layer_weighting" in n and n != "encoder.layer_weighting.layer_weights.0"
        ):  # a 1-way softmax is flat
            assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert set(layer_weights) <= m.no_weight_decay()


@pytest.mark.parametrize("variant", ["none", "zero", "normalized"])
def test_ltg_layer_output_stored(variant):
    # LTG-BERT: x + a + ffn(x + a); ELC (elc-bert zero/normalized files): a + ffn(x + a), optionally normed
    m = PretrainingModel(tiny("tiny_elc", layer_weighting=variant)).eval()
    ids, mask, _ = batch(m.config)
    with torch.no_grad():
        states = m.encoder(ids, mask, output_hidden_states=True).hidden_states
        x, (relative,) = m.encoder.embeddings(ids)
        layer = m.encoder.layers[0]
        a = layer.attention(x, mask[:, None, None, :].bool(), relative)
        want = a + layer.ffn(x + a)
        want = {"none": x + want, "zero": want, "normalized": F.layer_norm(want, (64,), eps=1e-7)}[variant]
    torch.testing.assert_close(states[1], want, atol=1e-5, rtol=0)


def test_no_weight_decay_groups():
    m = PretrainingModel(tiny())
    names = m.no_weight_decay()
    assert "encoder.layers.0.attention.qkv.bias" in names and "encoder.embeddings.norm.weight" in names
    assert "mlm_head.bias" in names
    assert "encoder.layers.0.attention.qkv.weight" not in names and "encoder.pooler.weight" not in names


# ---------------------------------------------------------------- io


@pytest.mark.parametrize("name", ["tiny", "tiny_elc"])
def test_save_load_round_trip(tmp_path, name):
    m = PretrainingModel(tiny(name, layer_weighting="weighted_output", pad_vocab_to_multiple_of=64)).eval()
    save_model(m, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "ckpt").eval()
    assert loaded.config == m.config
    ids, mask, types = batch(m.config)
    with torch.no_grad():
        a, b = m(ids, mask, types), loaded(ids, mask, types)
    assert torch.equal(a.mlm_logits, b.mlm_logits)
    assert (a.nsp_logits is None and b.nsp_logits is None) or torch.equal(a.nsp_logits, b.nsp_logits)


def test_load_errors_name_the_file(tmp_path):
    save_model(PretrainingModel(tiny()), tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors"):
        load_model(tmp_path / "ckpt")
    save_model(PretrainingModel(tiny()), tmp_path / "ckpt2")
    d = json.loads((tmp_path / "ckpt2" / "config.json").read_text())
    (tmp_path / "ckpt2" / "config.json").write_text(json.dumps({**d, "intermediate_size": 256}))
    with pytest.raises(UserError, match=r"layers\.0\.ffn_in\..*the config needs"):
        load_model(tmp_path / "ckpt2")
