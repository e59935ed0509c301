"""Linear probes on frozen features, their test metrics, and the online MDL codelength (Voita & Titov 2020).

Features are [N, C, H]: C = 1 for one layer, or every layer for the learned softmax mix (the probe then
learns C mixing weights). Each channel is standardized with train statistics (BERT's outlier dimensions
otherwise dominate the optimisation). Training: Adam on mini-batches, early stopping on dev loss.

Online code: sort the train set in a seeded random order, cut it at 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25,
12.5, 25, 50 and 100%; the first block costs log2(K) bits per label (uniform code), each later block costs
its cross-entropy in bits under a probe trained on everything before it. compression = uniform / online.
"""

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TIMESTAMPS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.25, 12.5, 25.0, 50.0, 100.0)  # percent of the train set


@dataclass
class ProbeConfig:
    learning_rate: float = 1e-2
    batch_size: int = 256
    epochs: int = 5  # passes over the train set ...
    min_steps: int = 200  # ... but at least this many steps (small MDL blocks)
    eval_every: int = 50  # dev-loss checks for early stopping
    seed: int = 0


@contextlib.contextmanager
def torch_threads(n: int):
    """Probe steps are small matmuls: on a shared CPU, more threads spin-wait more than they help."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class LinearProbe(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int):
        super().__init__()
        self.register_buffer("mean", mean)  # [C, H]
        self.register_buffer("std", std)  # [C, H]
        self.mix = nn.Parameter(torch.zeros(mean.shape[0]))  # softmax mixing weights over channels
        self.linear = nn.Linear(mean.shape[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std  # [B, C, H]
        return self.linear(torch.einsum("c,bch->bh", self.mix.softmax(0), x))  # [B, K]

    def mix_weights(self) -> list[float]:
        return self.mix.detach().softmax(0).tolist()


def _log_probs(probe: LinearProbe, x: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([F.log_softmax(probe(x[i : i + chunk]), -1) for i in range(0, len(x), chunk)])


def _dev_loss(probe, x, y) -> float:
    keep = y >= 0  # labels unseen in train cannot be scored
    return F.nll_loss(_log_probs(probe, x[keep]), y[keep]).item() if keep.any() else 0.0


def feature_stats(x: torch.Tensor, max_rows: int = 50_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [C, H] (features only, no labels: shared by every MDL block's probe)."""
    sample = x[:max_rows].float()
    return sample.mean(0), sample.std(0, unbiased=False).clamp(min=1e-4)


def train_probe(x, y, num_classes, dev_x, dev_y, cfg: ProbeConfig, norm=None) -> LinearProbe:
    """x [N, C, H] (any float dtype), y [N] long in [0, K); the probe with the lowest dev loss seen.

    norm: (mean, std) [C, H] to standardize with; default: the statistics of x.
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    probe = LinearProbe(*(norm or feature_stats(x)), num_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.learning_rate)
    steps = max(cfg.min_steps, math.ceil(cfg.epochs * len(x) / cfg.batch_size))
    best, best_state = math.inf, None
    perm, cursor = torch.randperm(len(x), generator=gen), 0
    for step in range(1, steps + 1):
        if cursor >= len(x):
            perm, cursor = torch.randperm(len(x), generator=gen), 0
        idx = perm[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        loss = F.cross_entropy(probe(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.eval_every == 0 or step == steps:
            dev = _dev_loss(probe, dev_x, dev_y)
            if dev < best:
                best, best_state = dev, {k: v.clone() for k, v in probe.state_dict().items()}
    if best_state is not None:
        probe.load_state_dict(best_state)
    return probe


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the classes present in gold or predictions."""
    classes = np.union1d(y_true, y_pred)
    f1 = []
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        f1.append(2 * tp / (np.sum(y_pred == c) + np.sum(y_true == c)))
    return float(np.mean(f1))


def evaluate_probe(probe: LinearProbe, x, y) -> dict:
    pred = _log_probs(probe, x).argmax(-1).numpy()
    gold = y.numpy()
    return {"accuracy": float(np.mean(pred == gold)), "macro_f1": macro_f1(gold, pred)}


def online_codelength(x, y, num_classes, dev_x, dev_y, cfg: ProbeConfig) -> dict:
    """Online MDL codelength of the train labels given the features, in kbits, and the compression."""
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 1))
    norm = feature_stats(x)
    cuts = sorted({min(n, max(1, round(n * t / 100))) for t in TIMESTAMPS})
    bits = cuts[0] * math.log2(num_classes)  # first block: uniform code
    for start, end in zip(cuts[:-1], cuts[1:]):
        seen, block = order[:start], order[start:end]
        probe = train_probe(x[seen], y[seen], num_classes, dev_x, dev_y, cfg, norm)
        nll = -_log_probs(probe, x[block]).gather(1, y[block, None]).sum().item()
        bits += nll / math.log(2)
    uniform = n * math.log2(num_classes)
    return {"codelength_kbits": bits / 1000, "uniform_kbits": uniform / 1000, "compression": uniform / bits}


def encode_labels(train: list[str], *others: list[str]) -> tuple[list[str], list[torch.Tensor]]:
    """Class names (sorted, from train) and label tensors; labels unseen in train become -1."""
    names = sorted(set(train))
    index = {name: i for i, name in enumerate(names)}
    return names, [torch.tensor([index.get(v, -1) for v in split]) for split in (train, *others)]
