"""ELC-BERT on the LTG backbone as elc-bert's models/ files define it: what each layer_weighting variant
stores, the whole forward and backward against an independent re-implementation of the layer loop
written here, and the MLM head's order (LN, dense, GELU, LN, dropout, tied decoder)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig, PretrainingModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VARIANTS = ("base", "zero", "normalized", "weighted_output", "base_residual")


def tiny(variant, **over) -> ModelConfig:
    d = json.loads((CONFIGS / "tiny_elc.json").read_text())
    d.update(layer_weighting=variant, num_hidden_layers=3, hidden_dropout_prob=0.0)
    d.update(attention_probs_dropout_prob=0.0, **over)
    return ModelConfig.from_dict(d)


def make(variant, seed=0, **over):
    torch.manual_seed(seed)
    model = PretrainingModel(tiny(variant, **over))
    with torch.no_grad():  # layer weights away from their init, so that every mix weight matters
        for n, p in model.named_parameters():
            if "layer_weighting" in n:
                p.normal_(0, 1)
    return model


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 4096, (3, 24), generator=g)
    mask = (torch.arange(24)[None] < torch.tensor([[24], [17], [6]])).long()
    return ids, mask


def expected_forward(model, ids, mask):
    """elc-bert's Encoder/EncoderLayer loop, written independently: layer i reads softmax(w_i) . states;
    base stores a + ffn(a), the others a + ffn(x + a); normalized a LayerNorm of it; weighted_output mixes
    all states once more. Attention, FFN and the head are our modules (pinned elsewhere)."""
    enc, variant = model.encoder, model.config.layer_weighting
    x, (rel,) = enc.embeddings(ids)
    key_mask = mask[:, None, None, :].bool()
    states = [x]
    for i, layer in enumerate(enc.layers):
        w = torch.softmax(enc.layer_weighting.layer_weights[i], 0)
        h = sum(w[j] * s for j, s in enumerate(states))
        a = layer.attention(h, key_mask, rel)
        out = a + layer.ffn(a if variant == "base" else h + a)
        if variant == "normalized":
            out = F.layer_norm(out, out.shape[-1:], eps=model.config.layer_norm_eps)
        states.append(out)
    if variant == "weighted_output":
        w = torch.softmax(enc.layer_weighting.output_weights, 0)
        states.append(sum(w[j] * s for j, s in enumerate(states)))
    return model.mlm_head(states[-1], enc.word_embeddings.weight)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_forward_and_backward_match_the_reference_loop(variant, train):
    model = make(variant)
    model.train(train)  # dropout 0: train and eval must agree with the loop in both modes
    ids, mask = batch()
    real = mask.bool()
    want = expected_forward(model, ids, mask)
    want_grads = torch.autograd.grad(
        want[real].logsumexp(-1).sum(), list(model.parameters()), allow_unused=True
    )
    got = model(ids, mask).mlm_logits
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)
    grads = torch.autograd.grad(got[real].logsumexp(-1).sum(), list(model.parameters()), allow_unused=True)
    for (name, _), g, w in zip(model.named_parameters(), grads, want_grads):
        if w is None:
            assert g is None or not g.any(), name
        else:
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4, msg=name)


def test_base_is_not_the_residual_form():
    """The reference's base feeds the FFN the attention output alone: different numbers from the
    x + attention form, which stays available as base_residual (same weights, same init)."""
    base, residual = make("base"), make("base_residual")
    assert torch.equal(
        torch.nn.utils.parameters_to_vector(base.parameters()),
        torch.nn.utils.parameters_to_vector(residual.parameters()),
    )
    base.eval(), residual.eval()
    ids, mask = batch()
    diff = (base(ids, mask).mlm_logits - residual(ids, mask).mlm_logits)[mask.bool()].abs().max()
    assert diff > 1e-2
    # both start with the previous layer's weight at 1 (before the softmax)
    fresh = PretrainingModel(tiny("base_residual"))
    assert fresh.encoder.layer_weighting.layer_weights[2].tolist() == [0.0, 0.0, 1.0]


def test_mlm_head_order_is_ln_dense_gelu_ln_dropout():
    model = make("zero", hidden_dropout_prob=0.5)
    head = model.mlm_head
    h = torch.randn(4, 50, model.config.hidden_size)
    eps = model.config.layer_norm_eps
    dense = head.transform[1]
    # eval: the hand-written order
    head.eval()
    want = F.layer_norm(F.gelu(dense(F.layer_norm(h, h.shape[-1:], eps=eps))), h.shape[-1:], eps=eps)
    torch.testing.assert_close(head.transform(h), want)
    # train: dropout comes last, so half the decoder's inputs are exact zeros (the scaled rest is want * 2);
    # with the LayerNorm last (the old order) there would be none
    head.train()
    torch.manual_seed(5)
    out = head.transform(h)
    zeros = (out == 0).float().mean().item()
    assert abs(zeros - 0.5) < 0.03, zeros
    kept = out != 0
    torch.testing.assert_close(out[kept], 2 * want[kept])
    # and the decoder is the tied word embedding plus the bias
    logits = head(h, model.encoder.word_embeddings.weight)
    assert logits.shape == (4, 50, model.config.vocab_size)
