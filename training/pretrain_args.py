"""The run configuration of train_pretrain.py (ELC-BERT's flag names): `PretrainConfig`, its flags,
recipes and checks.

A flag is one field of PretrainConfig (training/run_config.py: `flag(default, help, group=...)`); it is
then parsed, recorded in run_args.json and, unless it says may_differ=True, compared when a run resumes.

--config_file takes either a model config (configs/bert_base.json: the ModelConfig fields) or a recipe:
a JSON object {"model_config": "../bert_base.json", "args": {"learning_rate": 1e-4, ...}} whose
"model_config" path is relative to the recipe file and whose "args" are defaults for any flag below
(flags given on the command line win).
"""

import argparse
from dataclasses import dataclass
from pathlib import Path

from model.config import ModelConfig
from training.cli import HardwareFlags, OptimizerFlags, TensorboardFlags
from training.run_config import (
    HelpFormatter,
    above,
    add_flags,
    at_least,
    between,
    derived,
    flag,
    flag_names,
    from_namespace,
    validate,
)
from utils.errors import ArgumentParser, UserError
from utils.files import read_json

MASKINGS = ("subword", "whole_word", "span")
P, O, D, S, C = "paths", "optimisation", "data", "seeds", "checkpoints and logging"


@dataclass
class PretrainConfig(OptimizerFlags, HardwareFlags, TensorboardFlags):
    GROUPS = (P, O, D, S, "hardware", C)

    # paths
    input_path: str | None = flag(
        None, "processed corpus folder (from data/preprocess.py; holds meta.json)", group=P
    )
    config_file: str | None = flag(
        None,
        "model config JSON, or a recipe JSON naming a model config plus flag defaults",
        group=P,
        may_differ=True,
    )
    output_dir: str | None = flag(
        None,
        "run folder: metrics.jsonl, tensorboard/, checkpoints/step_N/, run_args.json",
        group=P,
        may_differ=True,
    )
    vocab_path: str | None = flag(None, "tokenizer.json the corpus was preprocessed with", group=P)
    checkpoint_path: str | None = flag(
        None,
        "resume from this checkpoints/step_N folder (default: the newest in output_dir)",
        group=P,
        may_differ=True,
    )
    init_from: str | None = flag(
        None,
        "start from these weights with a fresh optimizer: one of our checkpoint "
        "folders or a Hugging Face BERT folder (MultiBERTs, EarlyBERTs, "
        "bert-base-uncased)",
        group=P,
    )

    # optimisation (shared flags: training/cli.py)
    scheduler: str = flag(
        "linear",
        "linear warmup then linear decay to 0 (BERT) | cosine decay to --min_lr_factor (ELC-BERT) | constant",
        group=O,
        choices=("linear", "cosine", "constant"),
    )
    learning_rate: float = flag(1e-4, "peak learning rate", group=O, check=above(0))
    max_steps: int = flag(
        10_000, "total optimizer steps (the schedule spans them)", group=O, check=at_least(1)
    )
    warmup_proportion: float = flag(
        0.01, "warmup steps as a fraction of --max_steps", group=O, may_differ=True, check=between(0, 1)
    )
    warmup_steps: int | None = flag(
        None, "warmup steps (overrides --warmup_proportion)", group=O, check=at_least(0)
    )
    min_lr_factor: float = flag(
        0.1, "cosine schedule: final LR as a fraction of the peak", group=O, check=between(0, 1)
    )
    weight_decay: float = flag(
        0.01,
        "decoupled weight decay (not on biases, LayerNorm, ELC layer weights)",
        group=O,
        check=at_least(0),
    )
    max_trust_ratio: float | None = flag(
        None, "LAMB: clamp the trust ratio at this value", group=O, check=above(0)
    )
    param_groups: str = flag(
        "auto",
        "weight-decay groups and LAMB trust ratios: bert (no decay on biases, LayerNorm, ELC weights) | elc "
        "(elc-bert's: also none on the embeddings, one trust ratio per q/k and v, none with weight decay 0) "
        "| auto: elc for the ltg backbone, else bert; saved resolved in run_args.json",
        group=O,
        choices=("auto", "bert", "elc"),
        legacy="bert",  # runs saved before the flag existed
    )
    label_smoothing: float = flag(
        0.0, "label smoothing of the MLM/NSP cross-entropy", group=O, check=between(0, 1, high_open=True)
    )
    max_skipped_steps: int = flag(
        10,
        "stop after this many steps in a row with a non-finite loss or gradient",
        group=O,
        may_differ=True,
        check=at_least(1),
    )
    # the tokens of a step are the same for any accumulation (and world size): a resume may change it
    gradient_accumulation: int = flag(
        1, "micro-steps per optimizer step", group=O, may_differ=True, check=at_least(1)
    )

    # data
    seq_length: int = flag(
        128, "tokens per sequence (<= the model's max_position_embeddings)", group=D, check=at_least(8)
    )
    batch_size: int = flag(
        256,
        "GLOBAL batch in sequences per optimizer step; must divide by world size x --gradient_accumulation",
        group=D,
        check=at_least(1),
    )
    long_after: float = flag(
        1.0,
        "after this fraction of --max_steps, 4x --seq_length and a quarter of the "
        "batch (ELC-BERT: 0.9; 1.0 = never)",
        group=D,
        check=between(0, 1, low_open=True),
    )
    mask_p: float = flag(
        0.15, "fraction of tokens chosen for MLM", group=D, check=between(0, 1, low_open=True)
    )
    short_p: float = flag(
        0.1, "probability of a shorter random-length sequence", group=D, check=between(0, 1)
    )
    masking: str = flag(
        "subword", "what is masked: single subwords, whole words, spans", group=D, choices=MASKINGS
    )
    max_predictions: int | None = flag(
        None, "masked slots per sequence (default: from the data)", group=D, check=at_least(1)
    )
    nsp: bool | None = flag(
        None,
        "train next-sentence prediction (default: the model config's next_sentence_prediction)",
        group=D,
        no_help="MLM only",
    )
    static_masking: bool = flag(False, "the same mask for a sequence every epoch (BERT's original)", group=D)
    instance_layout: str | None = flag(
        None,
        "bert: google-research/bert create_pretraining_data's pairs and masks (default with NSP) | "
        "bert_exact: the same, drawn from random.Random(seed) as the reference, so the very instances of its "
        "--random_seed (a sequential pass; needs --static_masking) | "
        "fixed_chunks: ours, chunks fixed per seed (default without NSP: ELC-BERT / packed); saved resolved",
        group=D,
        choices=("bert", "bert_exact", "fixed_chunks"),
        legacy="fixed_chunks",  # runs saved before the flag existed
    )
    dupe_factor: int | None = flag(
        None,
        "bert layouts: copies of the corpus, each its own pairs and masks (default: 10, the reference's); "
        "saved resolved",
        group=D,
        legacy=1,
        check=at_least(1),
    )

    # seeds
    seed: int = flag(42, "seed of everything (init, data order, masks, dropout)", group=S)
    init_seed: int | None = flag(None, "seed of the weight initialisation (default: --seed)", group=S)
    data_seed: int | None = flag(None, "seed of data order and masking (default: --seed)", group=S)

    # checkpoints and logging
    checkpoint_steps: str = flag(
        "none",
        "steps whose checkpoints are kept: earlyberts | multiberts | log | "
        "log:N | N | START:STOP:STEP, comma-separated (0 = the initialisation); the "
        "final step is always kept",
        group=C,
        may_differ=True,
    )
    save_every: int = flag(
        1000,
        "rolling checkpoint for resuming every N steps (0: off)",
        group=C,
        may_differ=True,
        check=at_least(0),
    )
    dense_checkpoints: str = flag(
        "auto",
        "what a --checkpoint_steps checkpoint holds: weights (model.safetensors, config, tokenizer, args; "
        "the optimizer state only in the rolling --save_every ones and the final step) | full (also "
        "training_state.pt) | auto: weights when --checkpoint_steps names a preset (earlyberts, multiberts, "
        "log), else full; saved resolved",
        group=C,
        choices=("auto", "weights", "full"),
        may_differ=True,
    )
    keep_last: int = flag(2, "rolling checkpoints kept", group=C, may_differ=True, check=at_least(1))
    stop_at_step: int | None = flag(
        None,
        "save and exit after this step, as if the job's time ran out (resume later)",
        group=C,
        may_differ=True,
        check=at_least(1),
    )
    log_freq: int = flag(
        10, "log training metrics every N steps", group=C, may_differ=True, check=at_least(1)
    )
    validation_every: int = flag(
        0,
        "validation loss on held-out documents every N steps (0: none)",
        group=C,
        may_differ=True,
        check=at_least(0),
    )
    validation_batches: int = flag(
        10, "batches (of --batch_size) per validation", group=C, may_differ=True, check=at_least(1)
    )
    allow_override: bool = flag(
        False,
        "resume or reuse an output folder even when run-defining arguments differ",
        group=C,
        may_differ=True,
    )

    # set after parsing: the model config file (a recipe's, resolved) and the model config itself
    model_config_path: str | None = derived(may_differ=True)
    model_config: dict | None = derived(normalize=lambda saved: ModelConfig.from_dict(saved).to_dict())


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train_pretrain.py",
        description="Pretrain a BERT / LTG-BERT / ELC-BERT model (MLM, optionally NSP) from scratch or from "
        "a checkpoint. Runs as one process, under torchrun, or under SLURM srun.",
        formatter_class=HelpFormatter,
    )
    add_flags(p, PretrainConfig)
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


def parse_args(argv: list[str] | None) -> PretrainConfig:
    """The run configuration from the command line (and the recipe it names); checked, seeds and warmup
    resolved, paths absolute."""
    parser = build_parser()
    args = parser.parse_args(argv)
    model_config_path = None
    if args.config_file:
        recipe = _load_recipe(Path(args.config_file))
        if recipe is not None:
            model_config_path, defaults = recipe
            for key in defaults:
                if key not in flag_names(PretrainConfig) or key in (
                    "config_file",
                    "checkpoint_path",
                    "output_dir",
                ):
                    raise UserError(f"{args.config_file}: unknown or unsupported recipe argument {key!r}")
            parser.set_defaults(**defaults)
            args = parser.parse_args(argv)
        else:
            model_config_path = Path(args.config_file).resolve()
    config = from_namespace(PretrainConfig, args)
    config.model_config_path = None if model_config_path is None else str(model_config_path)
    _check(config)
    if config.dense_checkpoints == "auto":
        presets = {"earlyberts", "multiberts", "log"}
        named = {item.strip().split(":")[0] for item in config.checkpoint_steps.split(",")}
        config.dense_checkpoints = "weights" if named & presets else "full"
    config.init_seed = config.seed if config.init_seed is None else config.init_seed
    config.data_seed = config.seed if config.data_seed is None else config.data_seed
    if config.warmup_steps is None:
        config.warmup_steps = int(config.max_steps * config.warmup_proportion)
    for name in ("input_path", "vocab_path", "init_from"):
        if getattr(config, name) is not None:
            setattr(config, name, str(Path(getattr(config, name)).resolve()))
    return config


def _check(config: PretrainConfig) -> None:
    for name in ("input_path", "output_dir", "vocab_path"):
        if getattr(config, name) is None:
            raise UserError(f"--{name} is required")
    if config.model_config_path is None and config.init_from is None and config.checkpoint_path is None:
        raise UserError("--config_file is required (or --init_from / --checkpoint_path)")
    validate(config)  # each field's range (its `check`)
