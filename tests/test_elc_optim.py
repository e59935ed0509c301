"""LAMB groups of ELC-BERT runs (--param_groups elc) as elc-bert's train_elc_bert_*.py builds them, pinned
with hand-derived first steps; BERT runs keep BERT's convention; the rule a run used is saved."""

import json
from pathlib import Path

import pytest
import torch

import train_pretrain
from model import ModelConfig, PretrainingModel
from training.optim import Lamb, build_optimizer, param_groups, resolve_param_rule

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LR, EPS, WD = 1e-2, 1e-6, 0.1


def model_of(name, **over):
    d = json.loads((CONFIGS / f"{name}.json").read_text())
    d.update(num_hidden_layers=2, **over)
    torch.manual_seed(0)
    return PretrainingModel(ModelConfig.from_dict(d)).double()


def names_in(model, groups):
    ids = {id(p): n for n, p in model.named_parameters()}
    return [sorted(ids[id(p)] for p in g["params"]) for g in groups]


def test_elc_groups_are_the_reference_names_rule():
    model = model_of("tiny_elc", layer_weighting="weighted_output")
    decay, qkv, no_decay = names_in(model, param_groups(model, WD, rule="elc"))
    # hand-listed from elc-bert's names: bias, layer_norm, embedding, prev_layer_weights get no decay
    want_no_decay = {
        "encoder.embeddings.word_embeddings.weight",
        "encoder.embeddings.relative_embedding",
        "encoder.embeddings.relative_norm.weight",
        "encoder.embeddings.relative_norm.bias",
        "encoder.layer_weighting.output_weights",
        "mlm_head.bias",
        "mlm_head.transform.1.bias",
    }
    for i in range(2):
        want_no_decay |= {f"encoder.layers.{i}.attention.{m}" for m in ("qkv.bias", "out.bias")}
        want_no_decay |= {f"encoder.layers.{i}.attention.post_norm.{k}" for k in ("weight", "bias")}
        want_no_decay.add(f"encoder.layer_weighting.layer_weights.{i}")
    assert set(no_decay) == want_no_decay
    assert qkv == [f"encoder.layers.{i}.attention.qkv.weight" for i in range(2)]
    want_decay = {"mlm_head.transform.1.weight"}
    for i in range(2):
        want_decay |= {f"encoder.layers.{i}.attention.out.weight"}
        want_decay |= {f"encoder.layers.{i}.ffn.mlp.{j}.weight" for j in (1, 4)}
    assert set(decay) == want_decay
    # the bert rule (BERT runs) is unchanged: embeddings decay, with a trust ratio
    bert_decay, bert_no = names_in(model, param_groups(model, WD, rule="bert"))
    assert "encoder.embeddings.word_embeddings.weight" in bert_decay
    assert "encoder.embeddings.relative_embedding" in bert_decay
    assert set(bert_no) == {n for n, p in model.named_parameters() if p.ndim < 2}


def one_step(model, rule, wd):
    opt = build_optimizer(model, "lamb", LR, wd, betas=(0.9, 0.98), eps=EPS, rule=rule)
    torch.manual_seed(1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    return before, {n: p.detach() for n, p in model.named_parameters()}


def adam_first_step(g):  # m / (sqrt(v) + eps) at step 1, bias-corrected: g / (|g| + eps)
    return g / (g.abs() + EPS)


def ratio_step(w, g, wd):
    u = adam_first_step(g) + wd * w
    return -LR * (w.norm() / u.norm()) * u


def test_elc_first_step_embeddings_plain_adam_and_per_slice_trust_ratio():
    model = model_of("tiny_elc")
    H = model.config.hidden_size
    before, after = one_step(model, "elc", WD)
    grads = {n: p.grad for n, p in model.named_parameters()}
    # embeddings: no decay, no trust ratio (the bert rule gave them both)
    for n in ("encoder.embeddings.word_embeddings.weight", "encoder.embeddings.relative_embedding"):
        torch.testing.assert_close(after[n] - before[n], -LR * adam_first_step(grads[n]), rtol=0, atol=1e-15)
    # fused qkv: one ratio over rows [0, 2H) (elc-bert's in_proj_qk), one over [2H, 3H) (in_proj_v)
    n = "encoder.layers.1.attention.qkv.weight"
    w, g = before[n], grads[n]
    want = torch.cat([ratio_step(w[: 2 * H], g[: 2 * H], WD), ratio_step(w[2 * H :], g[2 * H :], WD)])
    torch.testing.assert_close(after[n] - w, want, rtol=0, atol=1e-15)
    assert not torch.allclose(want, ratio_step(w, g, WD))  # one ratio over the whole [3H,H]: other numbers
    # other decayed weights: one ratio each
    n = "encoder.layers.0.ffn.mlp.4.weight"
    torch.testing.assert_close(after[n] - before[n], ratio_step(before[n], grads[n], WD), rtol=0, atol=1e-15)


def test_elc_weight_decay_zero_means_no_trust_ratio_anywhere():
    model = model_of("tiny_elc")
    before, after = one_step(model, "elc", 0.0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(after[n] - before[n], -LR * adam_first_step(p.grad), rtol=0, atol=1e-15)
    # the bert rule keeps its trust ratio on the decay group at weight decay 0
    model = model_of("tiny_elc")
    before, after = one_step(model, "bert", 0.0)
    n = "encoder.layers.0.ffn.mlp.1.weight"
    g = dict(model.named_parameters())[n].grad
    torch.testing.assert_close(after[n] - before[n], ratio_step(before[n], g, 0.0), rtol=0, atol=1e-15)


def test_split_fused_equals_separate_parameters():
    """Per-slice ratios over one [3H,H] tensor == LAMB over separate [2H,H] and [H,H] tensors."""
    torch.manual_seed(2)
    w = torch.randn(12, 4, dtype=torch.float64)
    fused, qk, v = w.clone().requires_grad_(), w[:8].clone().requires_grad_(), w[8:].clone().requires_grad_()
    a = Lamb([{"params": [fused], "trust_splits": [8, 4]}], lr=LR, weight_decay=WD)
    b = Lamb([qk, v], lr=LR, weight_decay=WD)
    for _ in range(5):
        g = torch.randn_like(w)
        fused.grad, qk.grad, v.grad = g.clone(), g[:8].clone(), g[8:].clone()
        a.step(), b.step()
    torch.testing.assert_close(fused.detach(), torch.cat([qk, v]).detach(), rtol=0, atol=1e-15)
    # and its state dict round-trips (bitwise resume)
    c = Lamb([{"params": [fused.detach().clone().requires_grad_()], "trust_splits": [8, 4]}], lr=LR)
    c.load_state_dict(a.state_dict())
    assert c.param_groups[0]["trust_splits"] == [8, 4]


def test_rule_resolution_and_errors():
    assert resolve_param_rule("auto", "ltg") == "elc" and resolve_param_rule("auto", "bert") == "bert"
    assert resolve_param_rule("bert", "ltg") == "bert"
    from utils.errors import UserError

    with pytest.raises(UserError, match="ltg backbone"):
        param_groups(model_of("tiny"), WD, rule="elc")


def test_an_elc_run_saves_its_rule(processed_corpus, tokenizer_path, tmp_path):
    out = tmp_path / "run"
    flags = {
        "config_file": CONFIGS / "tiny_elc.json",
        "input_path": processed_corpus,
        "vocab_path": tokenizer_path,
        "output_dir": out,
        "seq_length": 32,
        "batch_size": 4,
        "max_steps": 2,
        "optimizer": "lamb",
        "masking": "span",
        "max_predictions": 3,
        "log_freq": 1,
        "save_every": 0,
        "device": "cpu",
        "mixed_precision": "no",
        "no_tensorboard": True,
    }
    argv = []
    for k, v in flags.items():
        argv += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    train_pretrain.main(argv)
    saved = json.loads((out / "run_args.json").read_text())
    assert saved["param_groups"] == "elc"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # 3 slots per sequence are too few for span masking: the surplus is counted, not silently lost
    assert any(m.get("mlm_dropped", 0) > 0 for m in lines)
