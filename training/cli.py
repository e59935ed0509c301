"""Flags that train_pretrain.py and train_finetune.py define the same way, and their shared start-up.

Each add_* takes an argument group's `add_argument`; the commands' own defaults (learning rate, warmup,
...) stay in training/pretrain_args.py and finetune/args.py.
"""

import argparse

from training.distributed import cleanup, init_distributed


def add_optimizer_flags(a) -> None:
    a("--optimizer", default="adamw", choices=("adamw", "lamb"), help="AdamW (fused kernels) or LAMB")
    a("--adam_beta1", type=float, default=0.9, help="first-moment decay (AdamW and LAMB)")
    a("--adam_beta2", type=float, default=0.999, help="second-moment decay (ELC-BERT: 0.98)")
    a("--adam_eps", type=float, default=1e-6, help="epsilon of AdamW / LAMB")
    a("--max_gradient", type=float, default=1.0, help="clip the global gradient norm (0: no clipping)")
    a("--gradient_accumulation", type=int, default=1, help="micro-steps per optimizer step")


def add_hardware_flags(a) -> None:
    a(
        "--mixed_precision",
        default="auto",
        choices=("auto", "bf16", "fp16", "no"),
        help="autocast dtype; fp16 adds a GradScaler; auto = bf16 on a GPU that has it, else no",
    )
    a("--device", default="auto", choices=("auto", "cuda", "cpu"), help="auto: CUDA when available")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--dist_timeout_minutes", type=float, default=30.0, help="a collective waiting longer fails the run")


def add_tensorboard_flags(a) -> None:
    a("--tensorboard", action="store_true", default=True, help="write OUTPUT_DIR/tensorboard")
    # SUPPRESS: --tensorboard alone sets the default, so help shows it once, on the positive flag
    a(
        "--no_tensorboard",
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        default=argparse.SUPPRESS,
        help="do not write OUTPUT_DIR/tensorboard (metrics.jsonl only)",
    )


def run_distributed(train, args) -> None:
    """train(args, info) in the process group that --device and --dist_timeout_minutes describe."""
    info = init_distributed(args.device, args.dist_timeout_minutes)
    try:
        train(args, info)
    finally:
        cleanup()
