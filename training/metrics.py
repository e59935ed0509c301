"""Monitoring on rank 0: tensorboard scalars, OUTPUT_DIR/metrics.jsonl, a tqdm progress bar; and the one
reduction of summed losses and metrics into averages (training windows and validation alike).

metrics.jsonl has one strict JSON object per line (a missing value, such as the loss of a window in which
every step was skipped, is null; never NaN): training lines carry `step`, `loss`, the per-term losses
(`mlm_loss`, `nsp_loss`), metrics (`mlm_acc`, `nsp_acc`), `lr`, `grad_norm`, `tokens_per_s`,
`skipped_steps`, ...; validation lines carry `step` and `val_*` keys. On resume, lines (and tensorboard
events) after the resumed step are dropped, so the log reads like one uninterrupted run.
Tensorboard tags: train/* (losses, accuracies), val/*, stats/* (lr, grad_norm, tokens_per_s, ...),
layer_weights/* (softmaxed ELC layer weights).
"""

import json
import math
from pathlib import Path

from tqdm import tqdm

from utils.files import strict_json, write_text_atomic

TRAIN_KEYS = ("loss", "mlm_loss", "nsp_loss", "mlm_acc", "nsp_acc")  # the rest go under stats/


def _truncate_jsonl(path: Path, after_step: int) -> None:
    """Drop lines logged after `after_step` (by a run that went on past its last checkpoint)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= after_step:
                keep.append(line)
        except ValueError:  # a line cut short by a crash
            continue
    write_text_atomic(path, "".join(line + "\n" for line in keep))


class MetricsLogger:
    """Writes only on the main rank; a no-op elsewhere. Use as a context manager or call close()."""

    def __init__(
        self, output_dir, enabled: bool, start_step: int, total_steps: int, tensorboard: bool = True
    ):
        self.enabled = enabled
        self.tb = None
        self.bar = None
        self.jsonl = None
        if not enabled:
            return
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / "metrics.jsonl"
        _truncate_jsonl(path, start_step)
        self.jsonl = open(path, "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(log_dir=str(output_dir / "tensorboard"), purge_step=start_step)
        self.bar = tqdm(
            total=total_steps, initial=start_step, desc="train", dynamic_ncols=True, mininterval=1
        )

    def log(self, step: int, values: dict, prefix: str = "") -> None:
        """One JSON line (keys prefixed) and tensorboard scalars for `values` at `step`."""
        if not self.enabled:
            return
        record = {"step": step, **{f"{prefix}{k}": v for k, v in values.items() if k != "step"}}
        self.jsonl.write(json.dumps(strict_json(record), allow_nan=False) + "\n")  # NaN -> null
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if k == "step" or not isinstance(v, (int, float)) or not math.isfinite(v):
                    continue
                if prefix:
                    tag = f"val/{k}"
                else:
                    tag = f"train/{k}" if k in TRAIN_KEYS else f"stats/{k}"
                self.tb.add_scalar(tag, v, step)

    def scalars(self, step: int, values: dict, group: str) -> None:
        """Tensorboard-only scalars under `group/` (e.g. layer weights)."""
        if self.enabled and self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{group}/{k}", v, step)

    def progress(self, step: int, values: dict | None = None) -> None:
        if not self.enabled:
            return
        self.bar.update(step - self.bar.n)
        if values:
            self.bar.set_postfix(
                loss=f"{values.get('loss', float('nan')):.3f}", tok_s=f"{values.get('tokens_per_s', 0):.0f}"
            )

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tb is not None:
            self.tb.close()
        self.jsonl.close()
        self.bar.close()
        self.enabled = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def averages(acc: dict[tuple[str, ...], float], metric_terms: dict[str, str]) -> dict[str, float]:
    """The one reduction of training windows and validation alike: <term>_loss = the term's summed loss /
    its count; a metric = its sum / the count of the term that metric_terms names for it."""
    out = {}
    for kind, name in (key for key in sorted(acc) if len(key) == 2):
        if kind == "sum":
            out[f"{name}_loss"] = acc[kind, name] / max(acc["count", name], 1.0)
        elif kind == "metric":
            if metric_terms.get(name) not in {key[1] for key in acc if key[0] == "count"}:
                raise ValueError(
                    f"metric {name!r}: objective.metric_terms names no loss term to average it over"
                )
            out[name] = acc[kind, name] / max(acc["count", metric_terms[name]], 1.0)
    return out


def close_run(writer, logger: MetricsLogger) -> None:
    """End of a training command: wait for the last checkpoint (rank 0's writer; None elsewhere), then close
    the logger even when that save failed (full disk), so the bar is gone before the error line."""
    try:
        if writer is not None:
            writer.wait()
    finally:
        logger.close()
