"""Optimizers: PyTorch's AdamW (fused) and our LAMB; the weight-decay parameter groups.

Parameter groups, two rules (--param_groups; the resolved rule is saved in the run's run_args.json):
- "bert" (BERT backbone): `model.no_weight_decay()` names the parameters that get no weight decay --
  biases, LayerNorm weights, ELC layer weights. Models without that method (e.g. a fine-tuning head around
  an encoder) fall back to: every parameter with fewer than 2 dimensions, plus ELC layer weights. With
  LAMB the decay group gets a trust ratio, the no-decay group a plain Adam step.
- "elc" (ELC-BERT / LTG runs, as elc-bert's train_elc_bert_*.py): no decay for a parameter whose elc-bert
  name contains bias, layer_norm, embedding or prev_layer_weights (model.elc_convert.reference_names): so
  also none for the word and relative embeddings, which get a plain Adam step; LAMB takes one trust ratio
  per elc-bert parameter (in_proj_qk and in_proj_v apart: per row slice of our fused qkv), and none at all
  when weight_decay is 0 (elc-bert computes the ratio only in groups with weight decay).
"""

import torch
from torch import Tensor, nn

from utils.errors import UserError

OPTIMIZERS = ("adamw", "lamb")


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019), written with torch._foreach_* ops.

    Per parameter w with gradient g, at step t:
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
        u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * w
        r = ||w|| / ||u||  (1 when either norm is 0; clamped to max_trust_ratio when given;
                            1 in groups with trust_ratio=False; with trust_splits [n1, n2, ...] one r
                            per slice of rows n1, n2, ... of every parameter in the group)
        w = w - lr * r * u
    Supports the GradScaler `found_inf` protocol (`_step_supports_amp_scaling`): when the loop sets
    `self.found_inf` (a device scalar, 1 = skip), a flagged step leaves weights, moments and the step
    count untouched without a host sync.
    """

    _step_supports_amp_scaling = True

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        trust_ratio: bool = True,
        max_trust_ratio: float | None = None,
        trust_splits: list[int] | None = None,
    ):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid LAMB hyper-parameters lr={lr} betas={betas} eps={eps}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            trust_ratio=trust_ratio,
            max_trust_ratio=max_trust_ratio,
            trust_splits=trust_splits,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf: Tensor | None = getattr(self, "found_inf", None)
        grad_scale: Tensor | None = getattr(self, "grad_scale", None)
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._group_step(group, params, found_inf, grad_scale)
        return loss

    def _group_step(self, group: dict, params: list[Tensor], found_inf, grad_scale) -> None:
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        grads = [p.grad for p in params]
        m = [self.state[p]["exp_avg"] for p in params]
        v = [self.state[p]["exp_avg_sq"] for p in params]
        steps = [self.state[p]["step"] for p in params]
        if grad_scale is not None:
            grads = torch._foreach_div(grads, grad_scale)
        keep: float | Tensor = 1.0
        if found_inf is not None:
            keep = 1.0 - found_inf.to(params[0].device, params[0].dtype)
            # a non-finite gradient would poison the moments even when multiplied by keep = 0
            grads = [torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) for g in grads]
        torch._foreach_add_(steps, keep.float() if isinstance(keep, Tensor) else 1.0)

        # m += (1 - b1) keep (g - m);  v += (1 - b2) keep (g^2 - v)
        dm = torch._foreach_sub(grads, m)
        torch._foreach_mul_(dm, (1 - beta1) * keep)
        torch._foreach_add_(m, dm)
        dv = torch._foreach_mul(grads, grads)
        torch._foreach_sub_(dv, v)
        torch._foreach_mul_(dv, (1 - beta2) * keep)
        torch._foreach_add_(v, dv)
        del dm, dv

        # bias corrections in float64 (a float32 power of 0.999 loses digits), one value per parameter
        t = torch.stack(steps).double()  # [N]
        dtype = params[0].dtype
        bc1 = list((1 - beta1**t).to(dtype).unbind(0))
        bc2 = list((1 - beta2**t).to(dtype).unbind(0))
        denom = torch._foreach_div(v, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(m, bc1)
        torch._foreach_div_(update, denom)
        del denom
        if group["weight_decay"] != 0:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])

        splits = group.get("trust_splits")  # absent in optimizer states saved before it existed
        if group["trust_ratio"] and splits:  # one ratio per row slice: N -> N * len(splits) pieces
            params = [piece for p in params for piece in p.split(splits, 0)]
            update = [piece for u in update for piece in u.split(splits, 0)]  # views: scaled in place
        scale = torch.full((len(params),), -group["lr"], dtype=dtype, device=params[0].device)  # [N]
        if group["trust_ratio"]:
            w_norm = torch.stack(torch._foreach_norm(params))  # [N]
            u_norm = torch.stack(torch._foreach_norm(update))  # [N]
            ratio = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            if group["max_trust_ratio"] is not None:
                ratio = ratio.clamp(max=group["max_trust_ratio"])
            scale = scale * ratio
        scale = scale * keep
        torch._foreach_mul_(update, list(scale.unbind(0)))
        torch._foreach_add_(params, update)  # slices of the parameters when split: the same memory


PARAM_RULES = ("bert", "elc")
ELC_NO_DECAY = ("bias", "layer_norm", "embedding", "prev_layer_weights")  # substrings of elc-bert names


def resolve_param_rule(rule: str, backbone: str) -> str:
    """--param_groups auto -> elc for the ltg backbone (ELC-BERT / LTG-BERT), bert otherwise."""
    if rule == "auto":
        return "elc" if backbone == "ltg" else "bert"
    if rule not in PARAM_RULES:
        raise UserError(f"--param_groups must be auto or one of {', '.join(PARAM_RULES)}, not {rule!r}")
    return rule


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that get no weight decay (see the module docstring)."""
    from model.common import no_weight_decay_names  # the one rule; a model may name its own

    if hasattr(model, "no_weight_decay"):
        return set(model.no_weight_decay())
    return no_weight_decay_names(model)


def elc_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The "elc" rule: [decay, decay fused qkv weights (trust ratio per q/k and v slice), no decay]."""
    config = getattr(model, "config", None)
    if config is None or config.backbone != "ltg":
        raise UserError("--param_groups elc needs a pretraining model with the ltg backbone")
    from model.elc_convert import reference_names

    ref = reference_names(config)
    skip = no_decay_names(model)  # for parameters elc-bert has no counterpart of (an NSP head)
    ratio = weight_decay > 0  # elc-bert: a trust ratio only in groups with weight decay
    H = config.hidden_size
    groups = {"decay": [], "qkv": [], "no_decay": []}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = any(s in ref[n] for s in ELC_NO_DECAY) if n in ref else n in skip
        kind = "no_decay" if no_decay else "qkv" if "+" in ref.get(n, "") else "decay"
        groups[kind].append(p)
    return [
        {"params": groups["decay"], "weight_decay": weight_decay, "trust_ratio": ratio},
        {
            "params": groups["qkv"],
            "weight_decay": weight_decay,
            "trust_ratio": ratio,
            "trust_splits": [2 * H, H],
        },
        {"params": groups["no_decay"], "weight_decay": 0.0, "trust_ratio": False},
    ]


def param_groups(
    model: nn.Module, weight_decay: float, lr_overrides: dict | None = None, rule: str = "bert"
) -> list[dict]:
    """rule "bert": [decay group, no-decay group]; the no-decay group is marked trust_ratio=False (LAMB).
    lr_overrides {parameter-name prefix: lr}: one more such pair per prefix, with its own LR (a fine-tuning
    head's); the first pair holds every other parameter. rule "elc": elc_param_groups (no lr_overrides)."""
    if rule == "elc":
        if lr_overrides:
            raise UserError("--param_groups elc does not take per-head learning rates")
        return elc_param_groups(model, weight_decay)
    skip = no_decay_names(model)
    lr_overrides = lr_overrides or {}
    owner = lambda n: next((k for k in lr_overrides if n.startswith(k)), None)  # noqa: E731
    groups = []
    for prefix in [None, *lr_overrides]:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and owner(n) == prefix]
        lr = {} if prefix is None else {"lr": lr_overrides[prefix]}
        decay = [p for n, p in named if n not in skip]
        no_decay = [p for n, p in named if n in skip]
        groups += [
            {"params": decay, "weight_decay": weight_decay, "trust_ratio": True, **lr},
            {"params": no_decay, "weight_decay": 0.0, "trust_ratio": False, **lr},
        ]
    return groups


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    max_trust_ratio: float | None = None,
    fused: bool | None = None,
    lr_overrides: dict | None = None,
    rule: str = "bert",
) -> torch.optim.Optimizer:
    """AdamW or LAMB over `param_groups(model, weight_decay, lr_overrides, rule)`; fused=None: fused
    kernels."""
    groups = param_groups(model, weight_decay, lr_overrides, rule)
    if name == "adamw":
        if fused is None:
            fused = next(model.parameters()).device.type in ("cuda", "cpu")
        for g in groups:
            g.pop("trust_ratio")
            g.pop("trust_splits", None)
        # fused kernels where PyTorch has them (3% faster than foreach on CPU, honours found_inf)
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None, foreach=not fused)
    if name == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, max_trust_ratio=max_trust_ratio)
    raise UserError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, not {name!r}")


def optimizer_from_args(model: nn.Module, args, **extra) -> torch.optim.Optimizer:
    """build_optimizer from the flags both training commands share (training.cli.add_optimizer_flags,
    --learning_rate, --weight_decay); extra: max_trust_ratio, lr_overrides, rule (--param_groups)."""
    betas = (args.adam_beta1, args.adam_beta2)
    return build_optimizer(
        model, args.optimizer, args.learning_rate, args.weight_decay, betas=betas, eps=args.adam_eps, **extra
    )
