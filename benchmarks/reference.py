"""The plain path: what each fast-path option replaces, kept here to measure "before" and to test that
the fast path changes no numbers. None of it is used for training.

- FullLogitObjective: vocabulary logits at every position, cross-entropy with ignore_index on [B,S]
  labels, an explicit all-ones attention mask (instead of the masked-only head and no mask).
- ExplicitMaskObjective: the masked-only head, but an all-ones mask where the loop dropped it.
- unfuse_qkv: three query/key/value Linears per layer (Hugging Face's layout) instead of one fused 3H.
- LoopLamb: LAMB written per parameter with Python floats (instead of torch._foreach over all of them).
- with_config: the same weights in a model whose config differs (e.g. pad_vocab_to_multiple_of 1 vs 64).
"""

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.batches import IGNORE, full_labels
from model import PretrainingModel
from model.bert import BertSelfAttention
from training.pretraining_objective import PretrainingObjective


def with_explicit_mask(batch: dict) -> dict:
    """The plain path's attention mask: all ones where the loop dropped it (a batch without padding)."""
    if batch.get("attention_mask") is None:
        return {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}
    return batch


class ExplicitMaskObjective(PretrainingObjective):
    """PretrainingObjective whose model always gets an attention mask."""

    def __call__(self, model: nn.Module, batch: dict):
        return super().__call__(model, with_explicit_mask(batch))


class FullLogitObjective(PretrainingObjective):
    """PretrainingObjective's sums and metrics, computed the plain way (see the module docstring)."""

    def __init__(self, *args, explicit_mask: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.explicit_mask = explicit_mask

    def __call__(self, model: nn.Module, batch: dict):
        if self.explicit_mask:
            batch = with_explicit_mask(batch)
        out = model(
            input_ids=batch["input_ids"],  # [B,S]
            attention_mask=batch.get("attention_mask"),
            token_type_ids=batch.get("token_type_ids"),
        )
        labels = full_labels(batch)  # [B,S]
        logits = out.mlm_logits  # [B,S,V]
        mlm = F.cross_entropy(
            logits.flatten(0, 1).float(),
            labels.flatten(),
            ignore_index=IGNORE,
            reduction="sum",
            label_smoothing=self.label_smoothing,
        )
        sums = {"mlm": mlm}
        metrics = {"mlm_acc": ((logits.argmax(-1) == labels) & (labels != IGNORE)).sum()}
        if self.nsp:
            nsp_labels = batch["nsp_labels"]
            sums["nsp"] = F.cross_entropy(
                out.nsp_logits.float(), nsp_labels, reduction="sum", label_smoothing=self.label_smoothing
            )
            metrics["nsp_acc"] = (out.nsp_logits.argmax(-1) == nsp_labels).sum()
        return sums, metrics


class UnfusedSelfAttention(BertSelfAttention):
    """BertSelfAttention (its attention unchanged) with separate query, key and value projections."""

    def __init__(self, fused: BertSelfAttention):
        nn.Module.__init__(self)
        self.num_heads, self.dropout_p, self.out = fused.num_heads, fused.dropout_p, fused.out
        h = fused.out.in_features
        self.query, self.key, self.value = (nn.Linear(h, h) for _ in range(3))
        with torch.no_grad():  # the same weights, split
            for i, linear in enumerate((self.query, self.key, self.value)):
                linear.weight.copy_(fused.qkv.weight[i * h : (i + 1) * h])
                linear.bias.copy_(fused.qkv.bias[i * h : (i + 1) * h])

    def project(self, x):
        B, S, H = x.shape  # three [B,S,H] projections -> [B,nh,S,hd] each
        split = (
            f(x).view(B, S, self.num_heads, H // self.num_heads) for f in (self.query, self.key, self.value)
        )
        return tuple(t.transpose(1, 2) for t in split)


def unfuse_qkv(model: PretrainingModel) -> PretrainingModel:
    """In place: every bert layer's fused qkv becomes three Linears."""
    for layer in model.encoder.layers:
        layer.attention = UnfusedSelfAttention(layer.attention)
    return model


def with_config(model: PretrainingModel, **changes) -> PretrainingModel:
    """A new model with config fields changed (e.g. pad_vocab_to_multiple_of) holding model's weights:
    vocabulary rows are cut to the new padded size, or zero-filled beyond the old one."""
    config = type(model.config).from_dict({**model.config.to_dict(), **changes})
    new = PretrainingModel(config)
    own = new.state_dict()
    state = {}
    for name, tensor in model.state_dict().items():
        rows = own[name].shape[0] if own[name].ndim else 0
        if own[name].shape != tensor.shape:  # only the padded vocabulary dimension differs
            fill = torch.zeros(max(0, rows - tensor.shape[0]), *tensor.shape[1:], dtype=tensor.dtype)
            tensor = torch.cat([tensor[:rows], fill])
        state[name] = tensor.clone()
    new.load_state_dict(state)
    return new.to(next(model.parameters()).device)


class LoopLamb(torch.optim.Optimizer):
    """training.optim.Lamb's update, one parameter at a time (the reference the foreach version replaces):
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; u = m^/(sqrt(v^)+eps) + wd w; w -= lr r u, with
    r = ||w||/||u|| (1 if either is 0, clamped to max_trust_ratio) in trust_ratio groups, else 1."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, max_trust_ratio=None):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, trust_ratio=True)
        super().__init__(params, defaults)
        self.max_trust_ratio = max_trust_ratio

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    u.add_(p, alpha=group["weight_decay"])
                ratio = 1.0
                if group["trust_ratio"]:
                    w_norm, u_norm = p.norm().item(), u.norm().item()
                    ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
                    if self.max_trust_ratio is not None:
                        ratio = min(ratio, self.max_trust_ratio)
                p.add_(u, alpha=-group["lr"] * ratio)
