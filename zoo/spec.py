"""The zoo spec: one JSON file (configs/zoo/*.json) describing a whole population of models.

Top-level keys (see configs/zoo/bert_zoo.json for a full example):
  name, description    labels
  base_model           the model every run descends from: one of our checkpoint folders (config.json
                       has "backbone") or a Hugging Face BERT folder
  vocab_path           tokenizer.json of the base model (the corpus must be preprocessed with it)
  pretrain             the continued-pretraining grid (PretrainGrid), or null to fine-tune the base model
  finetune             {task: FinetuneGrid}: a grid per GLUE task / squad
  finetune_from        which pretraining epochs are fine-tuned: "final" or a list of epochs
  split                the fixed train/validation/test split of every fine-tuning task (Split)
  storage              fp32 or bf16 weights; whether optimizer states are kept after a run completes
  estimates            numbers used only by `zoo.py plan` (throughput; fallbacks while inputs are missing)

Paths: absolute paths are used as they are; "repo:REL" is relative to the repository; any other
relative path is relative to the data root (utils.paths.data_root(), $BERT_DATA_ROOT).
"""

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from utils.errors import UserError
from utils.files import read_json
from utils.paths import REPO_ROOT, data_root

OPTIMIZERS = ("adamw", "lamb")
SCHEDULERS = ("linear", "cosine", "constant")
DTYPES = {"fp32": 4, "bf16": 2}  # bytes per stored parameter


def resolve_path(value: str | None) -> Path | None:
    """Absolute as is; "repo:REL" under the repository; anything else under the data root."""
    if value is None:
        return None
    if value.startswith("repo:"):
        return (REPO_ROOT / value[5:]).resolve()
    path = Path(value).expanduser()
    return path if path.is_absolute() else (data_root() / path).resolve()


@dataclass
class Head:
    hidden_sizes: list[int] = field(default_factory=list)  # [] = one Linear; [768] = MLP, one hidden layer
    activation: str = "gelu"
    pooling: str = "cls"
    dropout: float = 0.1


@dataclass
class PretrainGrid:
    corpus: str  # processed corpus folder (data/preprocess.py output, tokenized with vocab_path)
    learning_rates: list[float]
    weight_decays: list[float]
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 10  # one model state per epoch
    steps_per_epoch: int | None = None  # None: one pass over the corpus; N: an "epoch" of N steps
    batch_size: int = 128  # global batch (sequences)
    seq_length: int = 512
    optimizer: str = "adamw"
    scheduler: str = "constant"
    warmup_steps: int = 0
    mask_p: float = 0.15
    nsp: bool = False  # next-sentence prediction beside MLM (the base model must have the NSP head)
    save_every: int = 1000  # rolling checkpoints (for resuming inside an epoch)
    validation_batches: int = 10  # validation loss at every epoch end over this many batches
    extra_args: dict = field(default_factory=dict)  # any further train_pretrain.py flags


@dataclass
class FinetuneGrid:
    learning_rates: list[float]
    weight_decays: list[float]
    data_dir: str | None = None  # the task's folder under the data root (e.g. "sst2")
    train_file: str | None = None  # instead of data_dir's (e.g. a subset)
    dev_file: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    epochs: int = 5  # states at epoch 0 (before training) and after every epoch
    batch_size: int = 32
    max_seq_length: int | None = None  # None: 128 (squad 384)
    optimizer: str = "adamw"
    scheduler: str = "linear"
    warmup_proportion: float = 0.1
    head: Head = field(default_factory=Head)
    freeze_encoder: bool = False
    freeze_layers: int = 0
    max_train_examples: int | None = None  # a seeded subset of the train split
    eval_train_subset: int | None = None  # evaluate on at most N train examples every epoch
    extra_args: dict = field(default_factory=dict)  # any further train_finetune.py flags


@dataclass
class Split:
    mode: str = "resplit"  # resplit: train+dev pooled then split by fractions; glue: published files
    fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    seed: int = 0
    validation_fraction: float = 0.1  # glue mode: held out of the train file


@dataclass
class Storage:
    dtype: str = "fp32"  # fp32 | bf16: weights are cast when a run completes
    keep_optimizer_state: bool = False  # False: training_state.pt deleted once a run completes


@dataclass
class Estimates:
    flops_per_second: float = 1.25e14  # sustained; default: an A100 in bf16 at 40% of its 312 TFLOP/s
    device: str = "A100 bf16 at 40% MFU"
    model_config: str | None = None  # parameter count while base_model is not there yet
    corpus_tokens: float | None = None  # corpus size while the corpus is not processed yet
    subwords_per_word: float = 1.3  # fine-tuning tokens from word counts


@dataclass
class ZooSpec:
    name: str
    base_model: str
    vocab_path: str
    finetune: dict = field(default_factory=dict)  # task -> FinetuneGrid
    pretrain: PretrainGrid | None = None
    finetune_from: object = "final"
    description: str = ""
    split: Split = field(default_factory=Split)
    storage: Storage = field(default_factory=Storage)
    estimates: Estimates = field(default_factory=Estimates)
    source: str = ""  # the spec file (not a JSON key)


NESTED = {"head": Head, "pretrain": PretrainGrid, "split": Split, "storage": Storage, "estimates": Estimates}


def _type_ok(value, typ) -> bool:
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if typ is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if typ is object:
        return True
    return isinstance(value, typ)


def _build(cls, d, where: str, src: str):
    """A dataclass from a JSON object: unknown keys, missing keys and wrong types are one-line errors."""
    if not isinstance(d, dict):
        raise UserError(f"{src}: {where} must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for key in d:
        if key not in fields:
            raise UserError(f"{src}: unknown key '{where}{key}' (known: {', '.join(fields)})")
    values = {}
    types = typing.get_type_hints(cls)
    for name, f in fields.items():
        if name not in d:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{src}: missing key '{where}{name}'")
            continue
        value = d[name]
        if name in NESTED and value is not None:
            value = _build(NESTED[name], value, f"{where}{name}.", src)
        elif not _type_ok(value, types[name]):
            raise UserError(f"{src}: '{where}{name}' has the wrong type ({value!r})")
        values[name] = value
    return cls(**values)


def _positive_grid(values, key: str, src: str, positive: bool = True) -> None:
    if not values:
        raise UserError(f"{src}: '{key}' is an empty grid (give at least one value)")
    if len(set(values)) != len(values):
        raise UserError(f"{src}: '{key}' repeats a value")
    if any((v <= 0 if positive else v < 0) for v in values):
        raise UserError(f"{src}: '{key}' must hold {'positive' if positive else 'non-negative'} numbers")


def task_names() -> tuple[str, ...]:
    from finetune.glue import GLUE_TASKS  # no torch import: spec checks stay fast

    return (*GLUE_TASKS, "squad")


def _check(spec: ZooSpec, src: str) -> None:
    if not spec.name or any(c in spec.name for c in "/\\ "):
        raise UserError(f"{src}: 'name' must be a non-empty word without spaces or slashes")
    pt = spec.pretrain
    if pt is not None:
        _positive_grid(pt.learning_rates, "pretrain.learning_rates", src)
        _positive_grid(pt.weight_decays, "pretrain.weight_decays", src, positive=False)
        _positive_grid(pt.seeds, "pretrain.seeds", src, positive=False)
        for key in ("epochs", "batch_size", "seq_length", "validation_batches"):
            if getattr(pt, key) < 1:
                raise UserError(f"{src}: 'pretrain.{key}' must be >= 1")
        if pt.steps_per_epoch is not None and pt.steps_per_epoch < 1:
            raise UserError(f"{src}: 'pretrain.steps_per_epoch' must be >= 1 (or null: one corpus pass)")
        if pt.optimizer not in OPTIMIZERS or pt.scheduler not in SCHEDULERS:
            raise UserError(
                f"{src}: 'pretrain.optimizer' / 'pretrain.scheduler' must be one of "
                f"{OPTIMIZERS} / {SCHEDULERS}"
            )
        if not 0 < pt.mask_p < 1:
            raise UserError(f"{src}: 'pretrain.mask_p' must lie in (0, 1)")
    if not spec.finetune and pt is None:
        raise UserError(f"{src}: the zoo is empty (no 'pretrain' grid and no 'finetune' task)")
    names = task_names()
    for task, grid in list(spec.finetune.items()):
        if task not in names:
            raise UserError(f"{src}: unknown task 'finetune.{task}' (known: {', '.join(names)})")
        grid = spec.finetune[task] = _build(FinetuneGrid, grid, f"finetune.{task}.", src)
        where = f"finetune.{task}"
        _positive_grid(grid.learning_rates, f"{where}.learning_rates", src)
        _positive_grid(grid.weight_decays, f"{where}.weight_decays", src, positive=False)
        _positive_grid(grid.seeds, f"{where}.seeds", src, positive=False)
        if grid.epochs < 1 or grid.batch_size < 1:
            raise UserError(f"{src}: '{where}.epochs' and '{where}.batch_size' must be >= 1")
        if grid.data_dir is None and not (grid.train_file and grid.dev_file):
            raise UserError(f"{src}: '{where}' needs 'data_dir' (or both 'train_file' and 'dev_file')")
        if grid.optimizer not in OPTIMIZERS or grid.scheduler not in SCHEDULERS:
            raise UserError(
                f"{src}: '{where}.optimizer' / '{where}.scheduler' must be one of {OPTIMIZERS} / {SCHEDULERS}"
            )
    fe = spec.finetune_from
    if fe != "final" and not (isinstance(fe, list) and fe and all(isinstance(e, int) and e >= 1 for e in fe)):
        raise UserError(f"{src}: 'finetune_from' must be \"final\" or a list of pretraining epochs >= 1")
    if isinstance(fe, list) and pt is not None and max(fe) > pt.epochs:
        raise UserError(f"{src}: 'finetune_from' names epoch {max(fe)} beyond 'pretrain.epochs' {pt.epochs}")
    s = spec.split
    if s.mode not in ("resplit", "glue"):
        raise UserError(f"{src}: 'split.mode' must be resplit or glue")
    if len(s.fractions) != 3 or abs(sum(s.fractions) - 1) > 1e-6 or min(s.fractions) <= 0:
        raise UserError(f"{src}: 'split.fractions' must be three positive numbers summing to 1")
    if spec.storage.dtype not in DTYPES:
        raise UserError(f"{src}: 'storage.dtype' must be one of {', '.join(DTYPES)}")


def load_spec(path) -> ZooSpec:
    """Parse and validate a spec file; every problem is a UserError naming the file and key."""
    path = Path(path)
    raw = read_json(path, "spec")
    src = str(path)
    spec = _build(ZooSpec, raw, "", src)
    spec.source = src
    if not isinstance(spec.finetune, dict):
        raise UserError(f"{src}: 'finetune' must be an object {{task: grid}}")
    _check(spec, src)
    return spec


def missing_inputs(spec: ZooSpec) -> list[str]:
    """Problems with the files a spec names (one line each): `run` refuses, `plan` warns."""
    problems = []
    base = resolve_path(spec.base_model)
    if not (base / "config.json").is_file():
        problems.append(f"base_model {base}: not a checkpoint folder (no config.json)")
    if not resolve_path(spec.vocab_path).is_file():
        problems.append(f"vocab_path {resolve_path(spec.vocab_path)}: no such file")
    if spec.pretrain is not None and not (resolve_path(spec.pretrain.corpus) / "meta.json").is_file():
        problems.append(
            f"pretrain.corpus {resolve_path(spec.pretrain.corpus)}: no processed corpus "
            "(meta.json missing; make it with data/preprocess.py)"
        )
    for task, grid in spec.finetune.items():
        for key in ("data_dir", "train_file", "dev_file"):
            value = getattr(grid, key)
            if value is not None and not resolve_path(value).exists():
                problems.append(f"finetune.{task}.{key} {resolve_path(value)}: not found")
    return problems
