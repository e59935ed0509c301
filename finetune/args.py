"""The run configuration of train_finetune.py (ELC-BERT flag names where they apply): `FinetuneConfig`,
its flags and checks. A flag is one field (training/run_config.py)."""

import argparse
from dataclasses import dataclass
from pathlib import Path

from finetune.tasks import TASK_NAMES
from training.cli import HardwareFlags, OptimizerFlags, TensorboardFlags
from training.run_config import (
    HelpFormatter,
    above,
    add_flags,
    at_least,
    between,
    flag,
    from_namespace,
    validate,
)
from utils.errors import ArgumentParser, UserError

P, T, H, O, SP, X = "paths", "task", "head", "optimisation", "splits", "seeds, hardware, logging"


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


@dataclass
class FinetuneConfig(OptimizerFlags, HardwareFlags, TensorboardFlags):
    """The run configuration of train_finetune.py: one field per flag (see training/run_config.py); every
    field must match when a run resumes, unless it says may_differ=True."""

    GROUPS = (P, T, H, O, SP, X)

    # paths
    task: str | None = flag(None, f"one of {', '.join(TASK_NAMES)}", group=P, required=True)
    data_dir: str | None = flag(
        None,
        "the task's files: GLUE train.tsv, dev.tsv (MNLI dev_matched/"
        "dev_mismatched.tsv); SQuAD train-v1.1.json, dev-v1.1.json (not needed when "
        "--train_file and --dev_file name them; MNLI's dev_mismatched.tsv always comes "
        "from here)",
        group=P,
    )
    train_file: str | None = flag(None, "use this train file instead of DATA_DIR's", group=P)
    dev_file: str | None = flag(None, "use this dev file instead of DATA_DIR's", group=P)
    checkpoint_path: str | None = flag(
        None,
        "pretrained model: one of our checkpoint folders (checkpoints/"
        "step_N) or a Hugging Face BERT folder; a fine-tuned checkpoints/epoch_E "
        "folder gives its encoder",
        group=P,
    )
    vocab_path: str | None = flag(
        None, "tokenizer.json of the checkpoint (or a BERT vocab.txt)", group=P, required=True
    )
    output_dir: str | None = flag(
        None, "run folder: metrics.jsonl, split.json, predictions/, checkpoints/", group=P, required=True
    )
    resume: bool = flag(
        False, "continue from the newest checkpoints/epoch_E in --output_dir", group=P, may_differ=True
    )
    stop_at_epoch: int | None = flag(
        None,
        "exit after this epoch's records, as if the job's time ran out (continue with --resume)",
        group=P,
        may_differ=True,
        check=at_least(0),
    )

    # task
    max_seq_length: int | None = flag(
        None, "tokens per input (default 128; SQuAD 384)", group=T, check=at_least(4)
    )
    doc_stride: int = flag(
        128, "SQuAD: context tokens between the starts of two windows", group=T, check=at_least(1)
    )
    max_query_length: int = flag(64, "SQuAD: question tokens kept", group=T, check=at_least(1))
    max_answer_length: int = flag(30, "SQuAD: longest answer span in tokens", group=T, check=at_least(1))
    n_best_size: int = flag(20, "SQuAD: start/end candidates per window", group=T, check=at_least(1))

    # head
    pooling: str = flag(
        "cls",
        "sentence vector for the classifier (GLUE; SQuAD scores every token)",
        group=H,
        choices=("cls", "pooler", "mean"),
    )
    head_hidden_sizes: list[int] = flag(
        [], "comma-separated MLP widths ('' = one linear layer)", group=H, parse=_int_list
    )
    head_activation: str = flag("gelu", "between MLP layers", group=H, choices=("relu", "gelu", "tanh"))
    head_dropout: float | None = flag(
        None,
        "dropout before every head layer (default 0.1; SQuAD 0, as BERT's QA head)",
        group=H,
        check=between(0, 1, high_open=True),
    )
    head_seed: int | None = flag(None, "seed of the head's random init (default: --seed)", group=H)
    freeze_encoder: bool = flag(False, "train the head only (linear probing)", group=H)
    freeze_layers: int = flag(
        0, "keep the embeddings and the first N layers fixed", group=H, check=at_least(0)
    )

    # optimisation (shared flags: training/cli.py)
    epochs: int = flag(3, "passes over the training split", group=O, check=at_least(1))
    batch_size: int = flag(
        32, "GLOBAL batch (examples; SQuAD windows) per optimizer step", group=O, check=at_least(1)
    )
    scheduler: str = flag(
        "linear",
        "linear warmup then linear decay to 0 | constant | cosine to --min_lr_factor",
        group=O,
        choices=("linear", "constant", "cosine"),
    )
    learning_rate: float = flag(3e-5, "peak learning rate of the encoder", group=O, check=above(0))
    head_learning_rate: float | None = flag(
        None, "peak learning rate of the head (default: --learning_rate)", group=O, check=above(0)
    )
    warmup_proportion: float = flag(
        0.1, "warmup steps as a fraction of all steps", group=O, check=between(0, 1)
    )
    min_lr_factor: float = flag(
        0.1, "cosine schedule: final LR as a fraction of the peak", group=O, check=between(0, 1)
    )
    weight_decay: float = flag(
        0.01, "decoupled weight decay (not on biases, LayerNorm)", group=O, check=at_least(0)
    )
    label_smoothing: float = flag(
        0.0, "label smoothing of the classification loss", group=O, check=between(0, 1, high_open=True)
    )
    bucket_batches: int = flag(
        100, "length grouping: sort within buckets of N batches", group=O, check=at_least(1)
    )

    # splits
    split: str = flag(
        "glue",
        "glue: train = published train minus a held-out validation part, test = "
        "published dev (GLUE's test labels are hidden); resplit: train+dev pooled, de-duplicated "
        "and split by --split_fractions",
        group=SP,
        choices=("glue", "resplit"),
    )
    split_fractions: list[float] = flag(
        [0.8, 0.1, 0.1],
        "resplit: train,validation,test fractions",
        group=SP,
        parse=_float_list,
        check=between(0, 1),
    )
    validation_fraction: float = flag(
        0.1,
        "glue: fraction of the train file held out as validation (0: validation = dev, as test)",
        group=SP,
        check=between(0, 1, high_open=True),
    )
    split_seed: int = flag(0, "seed of the split (keep it fixed across a zoo)", group=SP)
    split_file: str | None = flag(
        None, "reuse a saved OUTPUT_DIR/split.json (verified against the data by hash)", group=SP
    )
    max_train_examples: int | None = flag(
        None, "train on a seeded subset of the train split", group=SP, check=at_least(1)
    )
    eval_train_subset: int | None = flag(
        None, "evaluate on at most N train examples (fixed subset)", group=SP, check=at_least(1)
    )

    # seeds, hardware, logging (hardware flags: training/cli.py)
    seed: int = flag(42, "seed of data order and dropout (and the head, see --head_seed)", group=X)
    eval_batch_size: int = flag(
        128, "batch size of evaluation (per process)", group=X, may_differ=True, check=at_least(1)
    )
    log_freq: int = flag(
        10, "training loss to tensorboard every N steps", group=X, may_differ=True, check=at_least(1)
    )


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train_finetune.py",
        description="Fine-tune a pretrained BERT / LTG-BERT / ELC-BERT on a GLUE task or SQuAD v1.1, with a "
        "checkpoint, the metrics of every split and per-example predictions after every epoch.",
        formatter_class=HelpFormatter,
    )
    add_flags(p, FinetuneConfig)
    return p


def parse_args(argv=None) -> FinetuneConfig:
    """The run configuration from the command line: checked, defaults resolved, paths absolute."""
    args = from_namespace(FinetuneConfig, build_parser().parse_args(argv))
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
    validate(args)  # each field's range (its `check`)
    if args.task == "squad" and args.max_seq_length < args.max_query_length + 4:
        raise UserError(
            f"--max_seq_length {args.max_seq_length} leaves no room for context after "
            f"--max_query_length {args.max_query_length}"
        )
    if args.checkpoint_path is None and not args.resume:
        raise UserError("--checkpoint_path is required (the pretrained model to start from)")
    for name in ("data_dir", "train_file", "dev_file", "checkpoint_path", "vocab_path", "split_file"):
        if getattr(args, name) is not None:
            setattr(args, name, str(Path(getattr(args, name)).resolve()))
    return args
