"""GLUE metrics in plain numpy (no sklearn/scipy): accuracy, F1, Matthews, Pearson, Spearman."""

import math

import numpy as np


def accuracy(labels, preds) -> float:
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float((labels == preds).mean()) if len(labels) else math.nan


def f1_binary(labels, preds, positive=1) -> float:
    """F1 of the positive class; 0 when there is no true or predicted positive (sklearn's convention)."""
    labels, preds = np.asarray(labels) == positive, np.asarray(preds) == positive
    tp = float((labels & preds).sum())
    denom = 2 * tp + float((~labels & preds).sum()) + float((labels & ~preds).sum())
    return 2 * tp / denom if denom else 0.0


def matthews_corrcoef(labels, preds) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K, as sklearn); 0 when undefined."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    classes, inverse = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    k, n = len(classes), len(labels)
    confusion = np.zeros((k, k), dtype=np.float64)  # [true, predicted]
    np.add.at(confusion, (inverse[:n], inverse[n:]), 1)
    t, p = confusion.sum(1), confusion.sum(0)
    c, s = np.trace(confusion), confusion.sum()
    denom = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denom) if denom else 0.0


def pearson(x, y) -> float:
    """Pearson correlation; NaN when either side is constant (as scipy)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = math.sqrt((x @ x) * (y @ y))
    return float(x @ y / denom) if denom else math.nan


def rankdata(x) -> np.ndarray:
    """Ranks starting at 1, ties get the average of their ranks (scipy.stats.rankdata 'average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1], True])  # tie-group bounds
    sizes = np.diff(starts)
    average = (starts[:-1] + starts[1:] - 1) / 2 + 1  # mean 1-based rank of each tie group
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(average, sizes)
    return ranks


def spearman(x, y) -> float:
    return pearson(rankdata(x), rankdata(y))


METRICS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews_correlation": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names, labels, preds) -> dict:
    """{name: value} for the named metrics."""
    return {name: METRICS[name](labels, preds) for name in names}
