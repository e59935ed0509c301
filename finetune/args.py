"""Command line of train_finetune.py (ELC-BERT flag names where they apply) and its checks."""

import argparse
from pathlib import Path

from finetune.tasks import TASK_NAMES
from training.cli import add_hardware_flags, add_optimizer_flags, add_tensorboard_flags
from utils.errors import ArgumentParser, UserError

# Flags that do not change what a run computes: a resumed run may differ in them.
OPERATIONAL = {
    "resume",
    "stop_at_epoch",
    "device",
    "eval_batch_size",
    "dist_timeout_minutes",
    "compile",
    "log_freq",
    "tensorboard",
}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train_finetune.py",
        description="Fine-tune a pretrained BERT / LTG-BERT / ELC-BERT on a GLUE task or SQuAD v1.1, with a "
        "checkpoint, the metrics of every split and per-example predictions after every epoch.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument_group("paths").add_argument
    a("--task", required=True, help=f"one of {', '.join(TASK_NAMES)}")
    a(
        "--data_dir",
        help="the task's files: GLUE train.tsv, dev.tsv (MNLI dev_matched/dev_mismatched.tsv); "
        "SQuAD train-v1.1.json, dev-v1.1.json (not needed when --train_file and --dev_file name them; "
        "MNLI's dev_mismatched.tsv always comes from here)",
    )
    a("--train_file", help="use this train file instead of DATA_DIR's")
    a("--dev_file", help="use this dev file instead of DATA_DIR's")
    a(
        "--checkpoint_path",
        help="pretrained model: one of our checkpoint folders (checkpoints/step_N) or a "
        "Hugging Face BERT folder; a fine-tuned checkpoints/epoch_E folder gives its encoder",
    )
    a("--vocab_path", required=True, help="tokenizer.json of the checkpoint (or a BERT vocab.txt)")
    a("--output_dir", required=True, help="run folder: metrics.jsonl, split.json, predictions/, checkpoints/")
    a("--resume", action="store_true", help="continue from the newest checkpoints/epoch_E in --output_dir")
    a(
        "--stop_at_epoch",
        type=int,
        default=None,
        help="exit after this epoch's records, as if the job's time ran out (continue with --resume)",
    )

    a = p.add_argument_group("task").add_argument
    a("--max_seq_length", type=int, default=None, help="tokens per input (default 128; SQuAD 384)")
    a("--doc_stride", type=int, default=128, help="SQuAD: context tokens between the starts of two windows")
    a("--max_query_length", type=int, default=64, help="SQuAD: question tokens kept")
    a("--max_answer_length", type=int, default=30, help="SQuAD: longest answer span in tokens")
    a("--n_best_size", type=int, default=20, help="SQuAD: start/end candidates per window")

    a = p.add_argument_group("head").add_argument
    a(
        "--pooling",
        default="cls",
        choices=("cls", "pooler", "mean"),
        help="sentence vector for the classifier (GLUE; SQuAD scores every token)",
    )
    a("--head_hidden_sizes", default="", help="comma-separated MLP widths ('' = one linear layer)")
    a("--head_activation", default="gelu", choices=("relu", "gelu", "tanh"), help="between MLP layers")
    a(
        "--head_dropout",
        type=float,
        default=None,
        help="dropout before every head layer (default 0.1; SQuAD 0, as BERT's QA head)",
    )
    a("--head_seed", type=int, default=None, help="seed of the head's random init (default: --seed)")
    a("--freeze_encoder", action="store_true", help="train the head only (linear probing)")
    a("--freeze_layers", type=int, default=0, help="keep the embeddings and the first N layers fixed")

    a = p.add_argument_group("optimisation").add_argument
    add_optimizer_flags(a)
    a("--epochs", type=int, default=3, help="passes over the training split")
    a("--batch_size", type=int, default=32, help="GLOBAL batch (examples; SQuAD windows) per optimizer step")
    a(
        "--scheduler",
        default="linear",
        choices=("linear", "constant", "cosine"),
        help="linear warmup then linear decay to 0 | constant | cosine to --min_lr_factor",
    )
    a("--learning_rate", type=float, default=3e-5, help="peak learning rate of the encoder")
    a(
        "--head_learning_rate",
        type=float,
        default=None,
        help="peak learning rate of the head (default: --learning_rate)",
    )
    a("--warmup_proportion", type=float, default=0.1, help="warmup steps as a fraction of all steps")
    a("--min_lr_factor", type=float, default=0.1, help="cosine schedule: final LR as a fraction of the peak")
    a("--weight_decay", type=float, default=0.01, help="decoupled weight decay (not on biases, LayerNorm)")
    a("--label_smoothing", type=float, default=0.0, help="label smoothing of the classification loss")
    a("--bucket_batches", type=int, default=100, help="length grouping: sort within buckets of N batches")

    a = p.add_argument_group("splits").add_argument
    a(
        "--split",
        default="glue",
        choices=("glue", "resplit"),
        help="glue: train = published train minus a held-out validation part, test = published dev (GLUE's "
        "test labels are hidden); resplit: train+dev pooled, de-duplicated and split by --split_fractions",
    )
    a("--split_fractions", default="0.8,0.1,0.1", help="resplit: train,validation,test fractions")
    a(
        "--validation_fraction",
        type=float,
        default=0.1,
        help="glue: fraction of the train file held out as validation (0: validation = dev, as test)",
    )
    a("--split_seed", type=int, default=0, help="seed of the split (keep it fixed across a zoo)")
    a("--split_file", help="reuse a saved OUTPUT_DIR/split.json (verified against the data by hash)")
    a("--max_train_examples", type=int, default=None, help="train on a seeded subset of the train split")
    a(
        "--eval_train_subset",
        type=int,
        default=None,
        help="evaluate on at most N train examples (fixed subset)",
    )

    a = p.add_argument_group("seeds, hardware, logging").add_argument
    a("--seed", type=int, default=42, help="seed of data order and dropout (and the head, see --head_seed)")
    add_hardware_flags(a)
    a("--eval_batch_size", type=int, default=128, help="batch size of evaluation (per process)")
    a("--log_freq", type=int, default=10, help="training loss to tensorboard every N steps")
    add_tensorboard_flags(a)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.task not in TASK_NAMES:
        raise UserError(f"--task {args.task!r} is not one of {', '.join(TASK_NAMES)}")
    if args.max_seq_length is None:
        args.max_seq_length = 384 if args.task == "squad" else 128
    if args.head_dropout is None:
        args.head_dropout = 0.0 if args.task == "squad" else 0.1
    if args.head_seed is None:
        args.head_seed = args.seed
    if args.head_learning_rate is None:
        args.head_learning_rate = args.learning_rate
    try:
        args.head_hidden_sizes = [int(x) for x in args.head_hidden_sizes.split(",") if x.strip()]
        args.split_fractions = [float(x) for x in args.split_fractions.split(",")]
    except ValueError as err:
        raise UserError(
            f"--head_hidden_sizes / --split_fractions: not a comma-separated list of numbers ({err})"
        ) from None
    for flag in (
        "epochs",
        "batch_size",
        "gradient_accumulation",
        "eval_batch_size",
        "bucket_batches",
        "log_freq",
    ):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.eval_train_subset is not None and args.eval_train_subset < 1:
        raise UserError(f"--eval_train_subset must be >= 1, got {args.eval_train_subset}")
    if args.task == "squad" and args.max_seq_length < args.max_query_length + 4:
        raise UserError(
            f"--max_seq_length {args.max_seq_length} leaves no room for context after "
            f"--max_query_length {args.max_query_length}"
        )
    if not 0.0 <= args.warmup_proportion <= 1.0:
        raise UserError(f"--warmup_proportion must lie in [0, 1], got {args.warmup_proportion}")
    if not 0.0 <= args.validation_fraction < 1.0:
        raise UserError(f"--validation_fraction must lie in [0, 1), got {args.validation_fraction}")
    if args.checkpoint_path is None and not args.resume:
        raise UserError("--checkpoint_path is required (the pretrained model to start from)")
    for flag in ("data_dir", "train_file", "dev_file", "checkpoint_path", "vocab_path", "split_file"):
        if getattr(args, flag) is not None:
            setattr(args, flag, str(Path(getattr(args, flag)).resolve()))
    return args


def differing_args(saved: dict, current: dict) -> list[str]:
    """Run-defining arguments whose values differ between a saved run and this one."""
    keys = (set(saved) | set(current)) - OPERATIONAL
    return sorted(k for k in keys if saved.get(k) != current.get(k))
