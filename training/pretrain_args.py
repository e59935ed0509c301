"""Command line of train_pretrain.py (ELC-BERT's flag names), recipes, and the resume compatibility check.

--config_file takes either a model config (configs/bert_base.json: the ModelConfig fields) or a recipe:
a JSON object {"model_config": "../bert_base.json", "args": {"learning_rate": 1e-4, ...}} whose
"model_config" path is relative to the recipe file and whose "args" are defaults for any flag below
(flags given on the command line win).
"""

import argparse
from pathlib import Path

from training.cli import add_hardware_flags, add_optimizer_flags, add_tensorboard_flags
from utils.errors import ArgumentParser, UserError
from utils.files import read_json

MASKINGS = ("subword", "whole_word", "span")

# Arguments that change what a run computes: a resumed run (or an output folder reused) must match them.
RUN_DEFINING = (
    "model_config",
    "input_path",
    "vocab_path",
    "init_from",
    "seq_length",
    "batch_size",
    "max_steps",
    "long_after",
    "optimizer",
    "scheduler",
    "learning_rate",
    "warmup_steps",
    "min_lr_factor",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_eps",
    "max_trust_ratio",
    "max_gradient",
    "label_smoothing",
    "mixed_precision",
    "seed",
    "init_seed",
    "data_seed",
    "mask_p",
    "short_p",
    "masking",
    "nsp",
    "static_masking",
    "max_predictions",
    "instance_layout",
    "dupe_factor",
)


class _Help(argparse.HelpFormatter):
    def _get_help_string(self, action):  # show real defaults only, never "(default: None)"
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train_pretrain.py",
        description="Pretrain a BERT / LTG-BERT / ELC-BERT model (MLM, optionally NSP) from scratch or from "
        "a checkpoint. Runs as one process, under torchrun, or under SLURM srun.",
        formatter_class=_Help,
    )
    a = p.add_argument_group("paths").add_argument
    a("--input_path", help="processed corpus folder (from data/preprocess.py; holds meta.json)")
    a("--config_file", help="model config JSON, or a recipe JSON naming a model config plus flag defaults")
    a("--output_dir", help="run folder: metrics.jsonl, tensorboard/, checkpoints/step_N/, run_args.json")
    a("--vocab_path", help="tokenizer.json the corpus was preprocessed with")
    a(
        "--checkpoint_path",
        help="resume from this checkpoints/step_N folder (default: the newest in output_dir)",
    )
    a(
        "--init_from",
        help="start from these weights with a fresh optimizer: one of our checkpoint folders or "
        "a Hugging Face BERT folder (MultiBERTs, EarlyBERTs, bert-base-uncased)",
    )

    a = p.add_argument_group("optimisation").add_argument
    add_optimizer_flags(a)
    a(
        "--scheduler",
        default="linear",
        choices=("linear", "cosine", "constant"),
        help="linear warmup then linear decay to 0 (BERT) | cosine decay to --min_lr_factor (ELC-BERT) "
        "| constant",
    )
    a("--learning_rate", type=float, default=1e-4, help="peak learning rate")
    a("--max_steps", type=int, default=10_000, help="total optimizer steps (the schedule spans them)")
    a("--warmup_proportion", type=float, default=0.01, help="warmup steps as a fraction of --max_steps")
    a("--warmup_steps", type=int, default=None, help="warmup steps (overrides --warmup_proportion)")
    a("--min_lr_factor", type=float, default=0.1, help="cosine schedule: final LR as a fraction of the peak")
    a(
        "--weight_decay",
        type=float,
        default=0.01,
        help="decoupled weight decay (not on biases, LayerNorm, ELC layer weights)",
    )
    a("--max_trust_ratio", type=float, default=None, help="LAMB: clamp the trust ratio at this value")
    a("--label_smoothing", type=float, default=0.0, help="label smoothing of the MLM/NSP cross-entropy")
    a(
        "--max_skipped_steps",
        type=int,
        default=10,
        help="stop after this many steps in a row with a non-finite loss or gradient",
    )

    a = p.add_argument_group("data").add_argument
    a(
        "--seq_length",
        type=int,
        default=128,
        help="tokens per sequence (<= the model's max_position_embeddings)",
    )
    a(
        "--batch_size",
        type=int,
        default=256,
        help="GLOBAL batch in sequences per optimizer step; must divide by world size x "
        "--gradient_accumulation",
    )
    a(
        "--long_after",
        type=float,
        default=1.0,
        help="after this fraction of --max_steps, 4x --seq_length and a quarter of the batch (ELC-BERT: 0.9; "
        "1.0 = never)",
    )
    a("--mask_p", type=float, default=0.15, help="fraction of tokens chosen for MLM")
    a("--short_p", type=float, default=0.1, help="probability of a shorter random-length sequence")
    a(
        "--masking",
        default="subword",
        choices=MASKINGS,
        help="what is masked: single subwords, whole words, spans",
    )
    a("--max_predictions", type=int, default=None, help="masked slots per sequence (default: from the data)")
    a(
        "--instance_layout",
        default=None,
        choices=("bert", "fixed_chunks"),
        help="bert: google-research/bert create_pretraining_data's pairs and masks (default with NSP) | "
        "fixed_chunks: ours, chunks fixed per seed (default without NSP: ELC-BERT / packed)",
    )
    a(
        "--dupe_factor",
        type=int,
        default=None,
        help="bert layout: copies of the corpus, each its own pairs and masks (default: 10, the reference's)",
    )
    nsp = p._action_groups[-1].add_mutually_exclusive_group()
    nsp.add_argument(
        "--nsp",
        action="store_const",
        const=True,
        default=None,
        help="train next-sentence prediction (default: the model config's next_sentence_prediction)",
    )
    nsp.add_argument("--no_nsp", dest="nsp", action="store_const", const=False, help="MLM only")
    a(
        "--static_masking",
        action="store_true",
        help="the same mask for a sequence every epoch (BERT's original)",
    )

    a = p.add_argument_group("seeds").add_argument
    a("--seed", type=int, default=42, help="seed of everything (init, data order, masks, dropout)")
    a("--init_seed", type=int, default=None, help="seed of the weight initialisation (default: --seed)")
    a("--data_seed", type=int, default=None, help="seed of data order and masking (default: --seed)")

    hardware = p.add_argument_group("hardware").add_argument
    add_hardware_flags(hardware)
    hardware(
        "--no_unpad",
        dest="unpad",
        action="store_false",
        help="run every layer over the padding too (default: batches with padding send only their real "
        "tokens through the token-wise layers; same numbers, fewer FLOPs, other dropout draws)",
    )

    a = p.add_argument_group("checkpoints and logging").add_argument
    a(
        "--checkpoint_steps",
        default="none",
        help="steps whose checkpoints are kept: earlyberts | multiberts | log | log:N | N | START:STOP:STEP, "
        "comma-separated (0 = the initialisation); the final step is always kept",
    )
    a("--save_every", type=int, default=1000, help="rolling checkpoint for resuming every N steps (0: off)")
    a("--keep_last", type=int, default=2, help="rolling checkpoints kept")
    a(
        "--stop_at_step",
        type=int,
        default=None,
        help="save and exit after this step, as if the job's time ran out (resume later)",
    )
    a("--log_freq", type=int, default=10, help="log training metrics every N steps")
    add_tensorboard_flags(a)
    a("--validation_every", type=int, default=0, help="validation loss on held-out documents every N steps")
    a("--validation_batches", type=int, default=10, help="batches (of --batch_size) per validation")
    a(
        "--allow_override",
        action="store_true",
        help="resume or reuse an output folder even when run-defining arguments differ",
    )
    return p


def _load_recipe(path: Path) -> tuple[Path, dict] | None:
    """(model config path, flag defaults) when `path` is a recipe, None when it is a model config."""
    d = read_json(path, "--config_file")
    if not isinstance(d, dict) or "model_config" not in d:
        return None
    unknown = sorted(set(d) - {"model_config", "args", "description"})
    if unknown:
        raise UserError(f"{path}: unknown recipe key {unknown[0]!r} (known: model_config, args, description)")
    return (path.parent / d["model_config"]).resolve(), dict(d.get("args", {}))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.model_config_path = None
    if args.config_file:
        recipe = _load_recipe(Path(args.config_file))
        if recipe is not None:
            model_config, defaults = recipe
            dests = {a.dest for a in parser._actions}
            for key in defaults:
                if key not in dests or key in ("config_file", "checkpoint_path", "output_dir"):
                    raise UserError(f"{args.config_file}: unknown or unsupported recipe argument {key!r}")
            parser.set_defaults(**defaults)
            args = parser.parse_args(argv)
            args.model_config_path = str(model_config)
        else:
            args.model_config_path = str(Path(args.config_file).resolve())
    for flag in ("input_path", "output_dir", "vocab_path"):
        if getattr(args, flag) is None:
            raise UserError(f"--{flag} is required")
    if args.model_config_path is None and args.init_from is None and args.checkpoint_path is None:
        raise UserError("--config_file is required (or --init_from / --checkpoint_path)")
    for flag in ("seq_length", "batch_size", "max_steps", "gradient_accumulation", "log_freq"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if not 0.0 < args.long_after <= 1.0:
        raise UserError(f"--long_after must lie in (0, 1], got {args.long_after}")
    if not 0.0 <= args.warmup_proportion <= 1.0:
        raise UserError(f"--warmup_proportion must lie in [0, 1], got {args.warmup_proportion}")
    args.init_seed = args.seed if args.init_seed is None else args.init_seed
    args.data_seed = args.seed if args.data_seed is None else args.data_seed
    if args.warmup_steps is None:
        args.warmup_steps = int(args.max_steps * args.warmup_proportion)
    for flag in ("input_path", "vocab_path", "init_from"):
        if getattr(args, flag) is not None:
            setattr(args, flag, str(Path(getattr(args, flag)).resolve()))
    return args


def differing_args(saved: dict, current: dict) -> list[str]:
    """Run-defining arguments whose values differ between a saved run and this one."""
    return [k for k in RUN_DEFINING if k in saved and saved.get(k) != current.get(k)]
