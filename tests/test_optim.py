"""Optimizers against float64 references written out by hand, three steps each."""

import math

import pytest
import torch
from torch import nn

from training.optim import Lamb, build_optimizer, param_groups

STEPS = 3
LR, WD, B1, B2, EPS = 0.01, 0.1, 0.9, 0.98, 1e-6


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(4, 3)  # weight: decay (+ trust ratio); bias: none
        self.norm = nn.LayerNorm(3)  # no decay

    def no_weight_decay(self):
        return {"dense.bias", "norm.weight", "norm.bias"}


def _grads(model, step):
    g = torch.Generator().manual_seed(100 + step)
    return {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}


def _run(model, opt):
    for step in range(STEPS):
        for n, p in model.named_parameters():
            p.grad = _grads(model, step)[n].to(p.dtype)
        opt.step()
    return {n: p.detach().double() for n, p in model.named_parameters()}


def _reference(model, lamb: bool, max_trust_ratio=None):
    """Per parameter, in float64: Adam moments with bias correction, decoupled decay or LAMB's ratio."""
    decay = {n for n, _ in model.named_parameters()} - model.no_weight_decay()
    w = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    m = {n: torch.zeros_like(x) for n, x in w.items()}
    v = {n: torch.zeros_like(x) for n, x in w.items()}
    for step in range(STEPS):
        t = step + 1
        g = _grads(model, step)
        for n in w:
            m[n] = B1 * m[n] + (1 - B1) * g[n]
            v[n] = B2 * v[n] + (1 - B2) * g[n] ** 2
            adam = (m[n] / (1 - B1**t)) / ((v[n] / (1 - B2**t)).sqrt() + EPS)
            wd = WD if n in decay else 0.0
            if lamb:
                u = adam + wd * w[n]
                ratio = 1.0
                if n in decay:
                    wn, un = w[n].norm().item(), u.norm().item()
                    ratio = wn / un if wn > 0 and un > 0 else 1.0
                    if max_trust_ratio is not None:
                        ratio = min(ratio, max_trust_ratio)
                w[n] = w[n] - LR * ratio * u
            else:  # AdamW: decay first (PyTorch order), then the Adam step
                w[n] = w[n] * (1 - LR * wd) - LR * adam
    return w


def _model():
    torch.manual_seed(0)
    return Tiny()


@pytest.mark.parametrize("fused", [False, True])
def test_adamw_matches_float64_reference(fused):
    model = _model()
    ref = _reference(model, lamb=False)
    opt = build_optimizer(model, "adamw", LR, WD, betas=(B1, B2), eps=EPS, fused=fused)
    got = _run(model, opt)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("max_trust_ratio", [None, 0.1])
def test_lamb_matches_float64_reference(max_trust_ratio):
    model = _model()
    ref = _reference(model, lamb=True, max_trust_ratio=max_trust_ratio)
    opt = build_optimizer(model, "lamb", LR, WD, betas=(B1, B2), eps=EPS, max_trust_ratio=max_trust_ratio)
    got = _run(model, opt)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-6)
    # the clamp must actually bind in this setting, or the parametrisation tests nothing
    if max_trust_ratio is not None:
        unclamped = _reference(_model(), lamb=True)
        assert not torch.allclose(unclamped["dense.weight"], ref["dense.weight"])


def test_lamb_in_float64_is_exact():
    model = _model().double()
    ref = _reference(model, lamb=True)
    got = _run(model, Lamb(param_groups(model, WD), lr=LR, betas=(B1, B2), eps=EPS))
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["lamb", "adamw_fused"])
def test_found_inf_skips_on_device(name):
    """A flagged step (with NaN gradients) changes neither weights nor moments nor the step count."""
    model = _model()
    if name == "lamb":
        opt = build_optimizer(model, "lamb", LR, WD, betas=(B1, B2), eps=EPS)
    else:
        opt = build_optimizer(model, "adamw", LR, WD, betas=(B1, B2), eps=EPS, fused=True)
    assert opt._step_supports_amp_scaling
    _run(model, opt)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = list(model.parameters())
    state_before = {
        (i, k): v.clone() for i, p in enumerate(params) for k, v in opt.state[p].items() if k != "step"
    }
    for p in model.parameters():
        p.grad = torch.full_like(p, math.nan)
    opt.found_inf = torch.ones(())
    opt.grad_scale = None
    opt.step()
    del opt.found_inf, opt.grad_scale
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    state_after = {(i, k): v for i, p in enumerate(params) for k, v in opt.state[p].items() if k != "step"}
    assert len(state_before) == 2 * len(params)
    assert all(torch.equal(state_before[k], state_after[k]) for k in state_before)
    assert all(float(opt.state[p]["step"]) == STEPS for p in model.parameters())


def test_no_decay_groups_follow_model():
    model = _model()
    decay, no_decay = param_groups(model, WD)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in decay["params"]] == ["dense.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == ["dense.bias", "norm.bias", "norm.weight"]
    assert decay["trust_ratio"] and not no_decay["trust_ratio"] and no_decay["weight_decay"] == 0.0
