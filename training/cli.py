"""Flags that train_pretrain.py and train_finetune.py define the same way (typed run-config fields, see
training/run_config.py), and their shared start-up. The commands' own defaults (learning rate, warmup,
...) stay in training/pretrain_args.py and finetune/args.py."""

from dataclasses import dataclass

from training.distributed import cleanup, init_distributed
from training.run_config import above, at_least, between, flag


@dataclass
class OptimizerFlags:
    optimizer: str = flag(
        "adamw", "AdamW (fused kernels) or LAMB", group="optimisation", choices=("adamw", "lamb")
    )
    adam_beta1: float = flag(
        0.9, "first-moment decay (AdamW and LAMB)", group="optimisation", check=between(0, 1, high_open=True)
    )
    adam_beta2: float = flag(
        0.999,
        "second-moment decay (ELC-BERT: 0.98)",
        group="optimisation",
        check=between(0, 1, high_open=True),
    )
    adam_eps: float = flag(1e-6, "epsilon of AdamW / LAMB", group="optimisation", check=at_least(0))
    max_gradient: float = flag(
        1.0, "clip the global gradient norm (0: no clipping)", group="optimisation", check=at_least(0)
    )
    gradient_accumulation: int = flag(
        1, "micro-steps per optimizer step", group="optimisation", check=at_least(1)
    )


@dataclass
class HardwareFlags:
    mixed_precision: str = flag(
        "auto",
        "autocast dtype; fp16 adds a GradScaler; auto = bf16 on a GPU that has it, else no",
        group="hardware",
        choices=("auto", "bf16", "fp16", "no"),
    )
    device: str = flag(
        "auto",
        "auto: CUDA when available",
        group="hardware",
        choices=("auto", "cuda", "cpu"),
        may_differ=True,
    )
    compile: bool = flag(False, "torch.compile the model", group="hardware", may_differ=True)
    dist_timeout_minutes: float = flag(
        30.0, "a collective waiting longer fails the run", group="hardware", may_differ=True, check=above(0)
    )


@dataclass
class TensorboardFlags:
    tensorboard: bool = flag(
        True,
        "write OUTPUT_DIR/tensorboard",
        group="checkpoints and logging",
        may_differ=True,
        no_help="do not write OUTPUT_DIR/tensorboard (metrics.jsonl only)",
    )


def run_distributed(train, config) -> None:
    """train(config, info) in the process group that config.device and .dist_timeout_minutes describe."""
    info = init_distributed(config.device, config.dist_timeout_minutes)
    try:
        train(config, info)
    finally:
        cleanup()
