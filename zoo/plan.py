"""The grid expanded into runs, their command lines, and a deterministic partition into shards.

A run is one engine invocation: a continued-pretraining run (train_pretrain.py, one model state per
epoch) or a fine-tuning run (train_finetune.py, states at epoch 0 and after every epoch) started from a
pretraining run's state (or the base model when the spec has no pretraining grid). Run folders:
ZOO_DIR/runs/RUN_ID/ (the engine's --output_dir plus the zoo's own zoo_* files).
"""

from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path

from utils.errors import UserError
from zoo.spec import ZooSpec, resolve_path

# flags the zoo sets itself: a spec's extra_args may not name them
PRETRAIN_MANAGED = set(
    "init_from input_path vocab_path output_dir optimizer scheduler learning_rate weight_decay seed "
    "seq_length batch_size max_steps warmup_steps warmup_proportion mask_p nsp checkpoint_steps "
    "save_every keep_last log_freq validation_every validation_batches config_file checkpoint_path".split()
)
FINETUNE_MANAGED = set(
    "task data_dir train_file dev_file checkpoint_path vocab_path output_dir resume epochs batch_size "
    "learning_rate weight_decay seed optimizer scheduler warmup_proportion max_seq_length head_hidden_sizes "
    "head_activation pooling head_dropout freeze_encoder freeze_layers split split_fractions split_seed "
    "validation_fraction max_train_examples eval_train_subset".split()
)


@dataclass
class Run:
    run_id: str
    stage: str  # "pretrain" | "finetune"
    lineage: str  # the pretraining run it descends from ("base": fine-tuned from the base model)
    hparams: dict  # the run's settings (grid values and the fixed ones)
    epochs: int
    task: str | None = None
    parent: str | None = None  # the pretraining run whose state is fine-tuned (None: the base model)
    parent_epoch: int | None = None
    state_epochs: list[int] = field(default_factory=list)  # epochs that leave a model state

    def to_dict(self) -> dict:
        return asdict(self)


def _num(x: float) -> str:
    return f"{x:g}"


def _fixed(grid, skip: tuple) -> dict:
    """A grid's single-valued settings as flat hyper-parameters (head.hidden_sizes -> head_hidden_sizes)."""
    out = {}
    for key, value in asdict(grid).items():
        if key == "head":
            out.update(
                {f"head_{k}": ",".join(map(str, v)) if isinstance(v, list) else v for k, v in value.items()}
            )
        elif key not in skip:
            out[key] = value
    return out


def expand(spec: ZooSpec) -> list[Run]:
    """Every run of the zoo, pretraining runs first, in grid order (ids are stable across calls)."""
    runs, parents, pt = [], [(None, None)], spec.pretrain
    if pt is not None:
        fixed = _fixed(pt, ("learning_rates", "weight_decays", "seeds", "corpus", "extra_args", "save_every"))
        for lr, wd, seed in product(pt.learning_rates, pt.weight_decays, pt.seeds):
            rid = f"pt_lr{_num(lr)}_wd{_num(wd)}_s{seed}"
            hp = {"learning_rate": lr, "weight_decay": wd, "seed": seed, **fixed}
            runs.append(Run(rid, "pretrain", rid, hp, pt.epochs, state_epochs=list(range(1, pt.epochs + 1))))
        epochs = [pt.epochs] if spec.finetune_from == "final" else list(spec.finetune_from)
        parents = [(r.run_id, e) for r in runs for e in epochs]
    for task, g in spec.finetune.items():
        grid_keys = ("learning_rates", "weight_decays", "seeds", "data_dir", "train_file", "dev_file")
        fixed = _fixed(g, (*grid_keys, "extra_args"))
        for (parent, pe), lr, wd, seed in product(parents, g.learning_rates, g.weight_decays, g.seeds):
            origin = f"{parent}_e{pe}" if parent else "base"
            rid = f"ft_{task}_lr{_num(lr)}_wd{_num(wd)}_s{seed}_from_{origin}"
            hp = {"learning_rate": lr, "weight_decay": wd, "seed": seed, **fixed}
            states = list(range(g.epochs + 1))
            runs.append(Run(rid, "finetune", parent or "base", hp, g.epochs, task, parent, pe, states))
    return runs


def select(runs: list[Run], stage: str = "all", shard: tuple[int, int] = (0, 1)) -> list[Run]:
    """The runs of one stage (all | pretrain | finetune) and one shard i of N.

    The partition unit is a lineage (a pretraining run with its fine-tunes) when both stages are
    selected, so shards never wait on each other; otherwise a single run. Units are sorted and dealt
    round-robin: deterministic, balanced, and independent of the machine."""
    if stage not in ("all", "pretrain", "finetune"):
        raise UserError(f"--stage {stage!r} must be all, pretrain or finetune")
    chosen = [r for r in runs if stage in ("all", r.stage)]
    ids = {r.run_id for r in chosen}
    unit = {r.run_id: r.parent if r.parent in ids else r.run_id for r in chosen}
    index, n = shard
    keep = set(sorted(set(unit.values()))[index::n])
    return [r for r in chosen if unit[r.run_id] in keep]


def _flags(values: dict) -> list[str]:
    """{flag: value} -> argv; True is a bare switch (negations are named: {"no_nsp": true}); None, False:
    nothing."""
    out = []
    for key, value in values.items():
        if value is None or value is False:
            continue
        if value is True:
            out.append(f"--{key}")
        elif isinstance(value, list):
            out += [f"--{key}", ",".join(map(str, value))]
        else:
            out += [f"--{key}", str(value)]
    return out


def check_engines(spec: ZooSpec) -> None:
    """Before any run: extra_args name real engine flags the zoo does not set itself, and the engines'
    own parsers accept the command lines of the zoo's runs (one per stage and task)."""
    from finetune.args import build_parser as finetune_parser
    from finetune.args import parse_args as finetune_parse
    from training.pretrain_args import build_parser as pretrain_parser
    from training.pretrain_args import parse_args as pretrain_parse

    groups = [
        ("finetune." + t, g.extra_args, finetune_parser(), FINETUNE_MANAGED) for t, g in spec.finetune.items()
    ]
    if spec.pretrain is not None:
        groups.append(("pretrain", spec.pretrain.extra_args, pretrain_parser(), PRETRAIN_MANAGED))
    for where, extra, parser, managed in groups:
        options = {o: a.dest for a in parser._actions for o in a.option_strings}
        for key, value in extra.items():
            if f"--{key}" not in options or key == "help":
                raise UserError(f"{spec.source}: '{where}.extra_args.{key}' is not a flag of the engine")
            if options[f"--{key}"] in managed:
                raise UserError(
                    f"{spec.source}: '{where}.extra_args.{key}' is set by the zoo (use the spec key)"
                )
            if value is False:
                raise UserError(
                    f"{spec.source}: '{where}.extra_args.{key}': false is not a flag value "
                    '(name the negation, e.g. "no_nsp": true)'
                )
    first = {}
    for run in expand(spec):
        first.setdefault(run.task or "pretrain", run)
    for name, run in first.items():
        out = Path("/zoo/runs") / run.run_id
        try:
            if name == "pretrain":
                pretrain_parse(pretrain_argv(spec, run, out, 1))
            else:
                finetune_parse(finetune_argv(spec, run, out, Path("/zoo/start")))
        except UserError as err:
            engine = "train_pretrain.py" if name == "pretrain" else "train_finetune.py"
            raise UserError(f"{spec.source}: {engine} refuses the {name} runs' arguments: {err}") from None


def pretrain_argv(spec: ZooSpec, run: Run, out: Path, steps_per_epoch: int) -> list[str]:
    pt, hp = spec.pretrain, run.hparams
    total = steps_per_epoch * pt.epochs
    argv = _flags(
        {
            "init_from": resolve_path(spec.base_model),
            "input_path": resolve_path(pt.corpus),
            "vocab_path": resolve_path(spec.vocab_path),
            "output_dir": out,
            "optimizer": pt.optimizer,
            "scheduler": pt.scheduler,
            "learning_rate": hp["learning_rate"],
            "weight_decay": hp["weight_decay"],
            "seed": hp["seed"],
            "seq_length": pt.seq_length,
            "batch_size": pt.batch_size,
            "max_steps": total,
            "warmup_steps": pt.warmup_steps,
            "mask_p": pt.mask_p,
            "checkpoint_steps": f"{steps_per_epoch}:{total}:{steps_per_epoch}",
            "save_every": pt.save_every,
            "keep_last": 1,
            "log_freq": max(d for d in range(1, 11) if steps_per_epoch % d == 0),
            "validation_every": steps_per_epoch,
            "validation_batches": pt.validation_batches,
        }
    )
    argv.append("--nsp" if pt.nsp else "--no_nsp")
    return argv + _flags(pt.extra_args)


def finetune_argv(spec: ZooSpec, run: Run, out: Path, start: Path) -> list[str]:
    g, hp, s = spec.finetune[run.task], run.hparams, spec.split
    # train_finetune.py reads --data_dir even when both files are given: their folder stands in
    data_dir = resolve_path(g.data_dir) if g.data_dir else resolve_path(g.train_file).parent
    return _flags(
        {
            "task": run.task,
            "data_dir": data_dir,
            "train_file": resolve_path(g.train_file),
            "dev_file": resolve_path(g.dev_file),
            "checkpoint_path": start,
            "vocab_path": resolve_path(spec.vocab_path),
            "output_dir": out,
            "epochs": g.epochs,
            "batch_size": g.batch_size,
            "learning_rate": hp["learning_rate"],
            "weight_decay": hp["weight_decay"],
            "seed": hp["seed"],
            "optimizer": g.optimizer,
            "scheduler": g.scheduler,
            "warmup_proportion": g.warmup_proportion,
            "max_seq_length": g.max_seq_length,
            "head_hidden_sizes": ",".join(map(str, g.head.hidden_sizes)),
            "head_activation": g.head.activation,
            "pooling": g.head.pooling,
            "head_dropout": g.head.dropout,
            "freeze_encoder": g.freeze_encoder,
            "freeze_layers": g.freeze_layers,
            "split": s.mode,
            "split_fractions": s.fractions,
            "split_seed": s.seed,
            "validation_fraction": s.validation_fraction,
            "max_train_examples": g.max_train_examples,
            "eval_train_subset": g.eval_train_subset,
        }
    ) + _flags(g.extra_args)
