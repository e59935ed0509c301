"""The one training loop: pretraining (train_pretrain.py) and fine-tuning both run it.

What a caller supplies
----------------------
- `model`: an nn.Module (moved to `dist.device` here, wrapped in DDP when world_size > 1, compiled
  when `TrainerConfig.compile`). `trainer.model` stays the raw module (save it, read layer weights).
- `optimizer` + `scheduler`: from training.optim.build_optimizer / training.schedules.build_schedule.
  The scheduler steps once per optimizer step, skipped steps included (the LR is a function of the step).
- `objective`: what to minimise, for one micro-batch (a dict of tensors):
    objective.counts(batch) -> {term: LongTensor[]}   how many items each loss term averages over
                                                      (masked tokens, sentence pairs, examples); read
                                                      from the batch alone, before the forward pass
    objective(model, batch) -> (loss_sums, metric_sums)
        loss_sums:   {term: Tensor[]}   summed (not averaged) over the micro-batch's items
        metric_sums: {name: Tensor[]}   extra sums to log
    objective.metric_terms: {name: term}                every metric's denominator: the count of that
                                                      term (in training and validation alike)
    objective.untrained_parameters(model) -> [name]   optional: what it never gives a gradient (MLM only:
      the NSP head), frozen here (requires_grad False, printed once): DDP expects no gradient of theirs,
      the optimizer skips them (no .grad: no step, no weight decay), checkpoints save them unchanged.
  e.g. pretraining: counts {"mlm": #masked tokens, "nsp": #pairs}, sums {"mlm": CE sum, "nsp": CE sum},
  metrics {"mlm_acc": #correct, "nsp_acc": #correct}, metric_terms {"mlm_acc": "mlm", "nsp_acc": "nsp"}.
  The loss of a step is sum over terms of
  (loss sum of the term over all micro-batches and ranks) / (count of the term over all micro-batches and
  ranks): the global counts are all-reduced first, then each micro-step backpropagates
  loss_sum / global_count, times world_size to undo DDP's gradient averaging. So 2 ranks x 1 micro-batch
  and 1 rank x 2 micro-batches give the same step (up to float summation order).
- `batches`: an iterable yielding, per optimizer step, the list of micro-batch dicts of THIS rank
  (data.loader.PretrainingLoader does this), starting at `trainer.step`.
- `callbacks`: callables `cb(trainer)` run after every step (`trainer.step` = steps done): logging,
  validation, checkpointing. A callback that returns True ends `fit` after that step.

What the loop does per step
---------------------------
1. one all_reduce of the term counts; 2. for each micro-batch: dropout RNG reseeded from
(seed, step, global micro-batch index) so the masks do not depend on how the batch is split over ranks
and micro-steps, and a resumed run draws the same masks; forward under autocast; backward (DDP no_sync
on all but the last micro-step); 3. fp16: GradScaler unscale; clip the global gradient norm to
`max_gradient` (<= 0: no clipping, the norm is still computed); 4. a step whose loss or gradient norm is
not finite is skipped: weights and optimizer moments stay as they were, the batch is consumed, the
step counter and LR schedule advance, `skipped_steps` counts it. 5. scheduler step, zero grads.

Host synchronisation: none inside a step on CUDA with fused AdamW or LAMB -- the skip flag is a device
tensor handed to the optimizer as `found_inf` (the GradScaler protocol; both skip on device). Other
optimizers (the foreach AdamW used on CPU) read the flag with one `.item()` per step, free on CPU.
Losses, metrics and the skip counters live in device accumulators and reach the host only in
`collect_metrics()` (one all_reduce + one transfer), which the caller runs at logging steps. After
`max_skipped_steps` skips in a row, `collect_metrics()`/`check_health()` raise `TrainingDiverged`;
skipped steps never touch the weights, so checkpoints written meanwhile still hold the last good ones.

Minimal use::

    trainer = Trainer(model, opt, sched, objective, dist=info, config=TrainerConfig(precision="bf16"))
    trainer.fit(loader, max_steps, callbacks=[lambda t: t.step % 10 == 0 and print(t.collect_metrics())])
"""

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from training.distributed import DistInfo, all_reduce_sum
from training.metrics import averages
from training.precision import autocast, check_mode, make_scaler
from utils.errors import UserError


class Objective(Protocol):
    metric_terms: dict[str, str]  # metric name -> the loss term whose count it is averaged over

    def counts(self, batch: dict) -> dict[str, Tensor]: ...

    def __call__(self, model: nn.Module, batch: dict) -> tuple[dict[str, Tensor], dict[str, Tensor]]: ...


class TrainingDiverged(UserError):
    """Too many consecutive non-finite steps: the run stops (its last good checkpoint is intact)."""


@dataclass
class TrainerConfig:
    precision: str = "no"  # "no" | "bf16" | "fp16" (fp16 adds a GradScaler)
    max_gradient: float = 1.0  # global gradient-norm clip; <= 0 disables clipping
    max_skipped_steps: int = 10  # consecutive non-finite steps before TrainingDiverged
    seed: int = 0  # base of the per-micro-batch dropout seeds
    reseed_dropout: bool = True  # reseed RNG per micro-batch from (seed, step, global index)
    compile: bool = False  # torch.compile the (DDP-wrapped) model


def _to_device(batch: dict, device: torch.device) -> dict:
    mask = batch.get("attention_mask")
    if isinstance(mask, Tensor) and mask.device.type == "cpu" and bool(mask.all()):
        # no padding: no mask tensor, so SDPA may take the flash kernel (checked on the host: no sync)
        batch = {**batch, "attention_mask": None}
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class Trainer:
    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        objective: Objective,
        dist: DistInfo | None = None,
        config: TrainerConfig | None = None,
    ):
        self.dist = dist or DistInfo()
        self.config = config or TrainerConfig()
        self.device = self.dist.device
        self.precision = check_mode(self.config.precision, self.device)
        self.model = model.to(self.device)
        self.optimizer, self.scheduler, self.objective = optimizer, scheduler, objective
        # what the objective never gives a gradient: frozen before DDP (see the module docstring)
        self.frozen = getattr(objective, "untrained_parameters", lambda model: [])(self.model)
        params = dict(self.model.named_parameters())
        for name in self.frozen:
            params[name].requires_grad_(False)
        if self.frozen and self.dist.is_main:
            print(f"frozen, not trained by this objective: {', '.join(self.frozen)}", flush=True)
        self.ddp = None
        self.forward_model: nn.Module = self.model
        if self.dist.distributed:
            self.ddp = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
                gradient_as_bucket_view=True,
            )
            self.forward_model = self.ddp
        if self.config.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.scaler = make_scaler(self.precision, self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.step = 0  # optimizer steps done (skipped ones included)
        self.tokens_seen = 0  # input positions processed, all ranks, padding included
        self.skipped_steps = 0  # host copy, refreshed at collect_metrics / check_health
        self.last_lr = optimizer.param_groups[0]["lr"]
        self._skipped = torch.zeros((), device=self.device)  # device counters: total and in a row
        self._in_a_row = torch.zeros((), device=self.device)
        self._reset_window()

    # ---------------------------------------------------------------- one step
    def _reset_window(self) -> None:
        # ("sum" | "count", term), ("metric", name) or (name,) -> device scalar, summed over the good steps
        self._acc: dict[tuple[str, ...], Tensor] = {}
        self._window_steps = 0
        self._window_tokens = 0
        self._window_start = time.perf_counter()

    def _add(self, name: tuple[str, ...], value: Tensor, keep: Tensor) -> None:
        value = torch.where(keep, value.detach().float(), 0.0)
        self._acc[name] = self._acc[name] + value if name in self._acc else value

    def _seed_dropout(self, micro: int, accumulation: int) -> None:
        if self.config.reseed_dropout:
            index = self.dist.rank * accumulation + micro  # the micro-batch's slot in the global batch
            torch.manual_seed((self.config.seed * 1_000_003 + self.step) * 65_537 + index)

    def train_step(self, micro_batches: Sequence[dict]) -> None:
        """One optimizer step over this rank's micro-batches (no host sync; see the module docstring)."""
        world = self.dist.world_size
        batches = [_to_device(b, self.device) for b in micro_batches]
        counts = [self.objective.counts(b) for b in batches]
        terms = sorted(counts[0])
        local_counts = torch.stack([sum(c[t] for c in counts).float() for t in terms])  # [T]
        global_counts = all_reduce_sum(local_counts.clone(), self.dist).clamp_min(1.0)  # [T]

        step_loss = torch.zeros((), device=self.device)  # this rank's share of the step's loss
        term_sums = torch.zeros(len(terms), device=self.device)  # [T]
        metric_sums: dict[str, Tensor] = {}
        for m, batch in enumerate(batches):
            self._seed_dropout(m, len(batches))
            last = m == len(batches) - 1
            sync = contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            with sync:
                with autocast(self.precision, self.device):
                    sums, metrics = self.objective(self.forward_model, batch)
                sums_vec = torch.stack([sums[t].float() for t in terms])  # [T]
                loss = (sums_vec / global_counts).sum()
                scaled = loss * world  # DDP averages gradients over ranks; we want their sum
                (self.scaler.scale(scaled) if self.scaler else scaled).backward()
            step_loss = step_loss + loss.detach()
            term_sums = term_sums + sums_vec.detach()
            for k, v in metrics.items():
                metric_sums[k] = metric_sums.get(k, 0) + v.detach().float()

        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.config.max_gradient if self.config.max_gradient > 0 else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        step_loss = all_reduce_sum(step_loss, self.dist)  # the step's global loss, same on every rank
        bad = ~(torch.isfinite(grad_norm) & torch.isfinite(step_loss))
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self._optimizer_step(bad)
        if self.scaler is not None:
            self.scaler.update()
        with warnings.catch_warnings():  # a skipped first step makes the scheduler think step() was forgotten
            warnings.filterwarnings(
                "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
            )
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

        keep = ~bad
        self._skipped = self._skipped + bad.float()
        self._in_a_row = (self._in_a_row + 1.0) * bad.float()
        self._add(("good_steps",), torch.ones((), device=self.device), keep)
        self._add(("loss",), step_loss, keep)
        self._add(("grad_norm",), grad_norm, keep)
        for i, t in enumerate(terms):
            self._add(("sum", t), term_sums[i], keep)
            self._add(("count", t), local_counts[i], keep)
        for k, v in metric_sums.items():
            self._add(("metric", k), v, keep)
        tokens = sum(b["input_ids"].numel() for b in batches if "input_ids" in b) * world
        self.step += 1
        self.tokens_seen += tokens
        self._window_steps += 1
        self._window_tokens += tokens

    def _optimizer_step(self, bad: Tensor) -> None:
        if getattr(self.optimizer, "_step_supports_amp_scaling", False):
            # fused AdamW / LAMB: the kernel skips the update itself when found_inf == 1, no host sync
            self.optimizer.found_inf = bad.float()
            self.optimizer.grad_scale = None
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf, self.optimizer.grad_scale
        elif not bool(bad):  # one host sync per step (free on CPU)
            self.optimizer.step()

    # ---------------------------------------------------------------- the loop
    def fit(
        self,
        batches: Iterable[Sequence[dict]],
        max_steps: int,
        callbacks: Sequence[Callable[["Trainer"], None]] = (),
    ) -> None:
        """Train until `max_steps` steps are done, the batches run out, or a callback returns True.
        Returns whether a callback stopped it."""
        self.model.train()
        if self.step >= max_steps:
            return False
        for micro_batches in batches:
            self.train_step(micro_batches)
            stop = [cb(self) is True for cb in callbacks]  # every callback runs, even after a stop
            if any(stop):
                return True
            if self.step >= max_steps:
                break
        return False

    # ---------------------------------------------------------------- host-side reads
    def check_health(self) -> None:
        """Refresh the host skip counter; raise TrainingDiverged after too many skips in a row (syncs)."""
        skipped, in_a_row = torch.stack([self._skipped, self._in_a_row]).tolist()
        self.skipped_steps = int(skipped)
        if self.config.max_skipped_steps > 0 and in_a_row >= self.config.max_skipped_steps:
            raise TrainingDiverged(
                f"training stopped at step {self.step}: {int(in_a_row)} steps in a row had a non-finite loss "
                f"or gradient (--max_skipped_steps {self.config.max_skipped_steps}); lower the learning "
                "rate, use bf16 instead of fp16, or resume from an earlier checkpoint"
            )

    def collect_metrics(self) -> dict[str, float]:
        """Averages over the steps since the last call (good steps only), all ranks. Syncs; resets.

        `loss` is the mean of the steps' losses; `<term>_loss` and metrics are weighted by their counts
        over the window (so with several steps per window, loss != mlm_loss + nsp_loss exactly)."""
        names = sorted(self._acc)
        local = [n for n in names if len(n) == 2]  # the per-rank sums: ("sum" | "count" | "metric", name)
        if local:
            vec = all_reduce_sum(torch.stack([self._acc[n] for n in local]), self.dist)
            reduced = dict(zip(local, vec.unbind(0)))
        else:
            reduced = {}
        values = [reduced.get(n, self._acc[n]) for n in names] + [self._skipped, self._in_a_row]
        flat = torch.stack(values).tolist() if values else []
        acc = dict(zip(names, flat))
        elapsed = max(time.perf_counter() - self._window_start, 1e-9)
        good = acc.get(("good_steps",), 0.0)
        out: dict[str, float] = {"step": self.step}
        if good > 0:
            out["loss"] = acc[("loss",)] / good
            out.update(averages(acc, self.objective.metric_terms))
            out["grad_norm"] = acc[("grad_norm",)] / good
        else:
            out["loss"] = float("nan")
        out["lr"] = self.last_lr
        out["tokens_per_s"] = self._window_tokens / elapsed
        out["steps_per_s"] = self._window_steps / elapsed
        out["tokens_seen"] = self.tokens_seen
        out["skipped_steps"] = int(flat[-2]) if flat else 0
        if self.scaler is not None:
            out["loss_scale"] = float(self.scaler.get_scale())
        if self.device.type == "cuda":
            out["gpu_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self._reset_window()
        self.check_health()
        return out

    @torch.no_grad()
    def evaluate(self, batches: Iterable[dict]) -> dict[str, float]:
        """Loss and metrics of the objective over `batches` (this rank's share), summed over ranks."""
        self.model.eval()
        sums: dict[tuple[str, str], Tensor] = {}

        def add(key, value):
            sums[key] = sums.get(key, 0) + value.float()

        for batch in batches:
            batch = _to_device(batch, self.device)
            for t, c in self.objective.counts(batch).items():
                add(("count", t), c)
            with autocast(self.precision, self.device):
                loss_sums, metrics = self.objective(self.model, batch)
            for t, v in loss_sums.items():
                add(("sum", t), v)
            for k, v in metrics.items():
                add(("metric", k), v)
        self.model.train()
        names = sorted(sums)
        if not names:
            return {}
        flat = all_reduce_sum(torch.stack([sums[n] for n in names]), self.dist).tolist()
        out = averages(dict(zip(names, flat)), self.objective.metric_terms)
        out["loss"] = sum(out[f"{t}_loss"] for kind, t in names if kind == "sum")
        return out

    # ---------------------------------------------------------------- checkpoint state
    def state_dict(self) -> dict:
        """Everything but the weights needed to continue exactly (tensors may live on the device)."""
        self.check_health()
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._skipped = torch.full((), float(self.skipped_steps), device=self.device)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
