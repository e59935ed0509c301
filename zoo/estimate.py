"""What a zoo will cost: model states, disk (parameters x bytes per state), and compute (6·N·tokens
FLOPs for training, 2·N·tokens for evaluation passes) in hours at the spec's stated throughput."""

import json
import math
from pathlib import Path

from utils.errors import UserError
from zoo.plan import Run, pretrain_argv
from zoo.spec import DTYPES, ZooSpec, resolve_path


def _count(model) -> int:
    return sum(v.numel() for v in model.state_dict().values())


def base_config(spec: ZooSpec):
    """(ModelConfig of the base model, where it came from): the checkpoint, else estimates.model_config."""
    from model.config import ModelConfig
    from model.convert import read_hf_config

    base = resolve_path(spec.base_model)
    if (base / "config.json").is_file():
        if "backbone" in json.loads((base / "config.json").read_text()):
            return ModelConfig.from_json(base / "config.json"), str(base)
        return read_hf_config(base, has_nsp=True), str(base)
    if spec.estimates.model_config is None:
        raise UserError(
            f"{spec.source}: base_model {base} is missing and 'estimates.model_config' is not set"
        )
    return ModelConfig.from_json(resolve_path(spec.estimates.model_config)), spec.estimates.model_config


def state_sizes(spec: ZooSpec, config) -> dict:
    """Parameters stored per state: {"pretrain": n, task: n} (built on the meta device: no memory)."""
    import torch

    from finetune.glue import GLUE_TASKS
    from finetune.modeling import build_model
    from model import PretrainingModel
    from model.heads import ClassifierConfig

    sizes = {}
    with torch.device("meta"):
        model = PretrainingModel(config)
        sizes["pretrain"] = _count(model)
        for task, g in spec.finetune.items():
            h = g.head
            n_labels = 2 if task == "squad" else GLUE_TASKS[task].num_labels  # squad: start, end
            head = ClassifierConfig(n_labels, h.pooling, h.hidden_sizes, h.activation, h.dropout)
            sizes[task] = _count(build_model(task, PretrainingModel(config).encoder, head, 0))
    return sizes


def pretrain_steps_per_epoch(spec: ZooSpec, run: Run, zoo_dir: Path) -> int:
    """Exact steps per epoch of a pretraining run, from the engine's own data layout (depends on seed)."""
    if spec.pretrain.steps_per_epoch is not None:
        return spec.pretrain.steps_per_epoch
    from training.pretrain_args import parse_args
    from training.pretraining_phases import build_pretraining_data

    args = parse_args(pretrain_argv(spec, run, zoo_dir / "runs" / run.run_id, 1))  # passes --nsp/--no_nsp
    return build_pretraining_data(args, args.seq_length, "train").steps_per_epoch(args.batch_size)


def finetune_counts(spec: ZooSpec, task: str) -> tuple[dict, float]:
    """({split: examples}, tokens per example) of a task under the spec's split, estimated from word
    counts (the base tokenizer may not exist yet): words x subwords_per_word + specials, capped."""
    from finetune.glue import GLUE_TASKS, load_glue
    from finetune.squad import read_squad

    g, s, spw = spec.finetune[task], spec.split, spec.estimates.subwords_per_word
    data = resolve_path(g.data_dir) if g.data_dir else None
    if task == "squad":
        train = read_squad(resolve_path(g.train_file) if g.train_file else data / "train-v1.1.json")
        dev = read_squad(resolve_path(g.dev_file) if g.dev_file else data / "dev-v1.1.json")
        max_len = g.max_seq_length or 384

        def tokens(ex):  # windows of max_len over the context, 128 tokens apart
            q, c = min(64, len(ex.question.split()) * spw), len(ex.context.split()) * spw
            room = max_len - q - 3
            return (1 + math.ceil(max(0.0, c - room) / 128)) * min(max_len, q + c + 3)
    else:
        train, dev, _ = load_glue(
            GLUE_TASKS[task], data or Path(), resolve_path(g.train_file), resolve_path(g.dev_file)
        )
        max_len = g.max_seq_length or 128

        def tokens(ex):
            return min(max_len, sum(len(t.split()) for t in ex.texts) * spw + 1 + len(ex.texts))

    examples = train + dev
    per_example = sum(tokens(ex) for ex in examples) / max(len(examples), 1)
    if s.mode == "resplit":
        n = len({ex.texts for ex in examples})
        counts = dict(zip(("train", "validation", "test"), (round(n * f) for f in s.fractions)))
    else:
        held = round(len(train) * s.validation_fraction)
        counts = {"train": len(train) - held, "validation": held or len(dev), "test": len(dev)}
    if g.max_train_examples is not None:
        counts["train_used"] = min(counts["train"], g.max_train_examples)
    return counts, per_example


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def plan_report(spec: ZooSpec, runs: list[Run], zoo_dir: Path, problems: list[str]) -> str:
    """The text `zoo.py plan` prints."""
    config, source = base_config(spec)
    sizes = state_sizes(spec, config)
    nbytes = DTYPES[spec.storage.dtype]
    pt_runs = [r for r in runs if r.stage == "pretrain"]
    ft_runs = [r for r in runs if r.stage == "finetune"]
    lines = [
        f"zoo {spec.name} ({spec.source})",
        f"base model: {source} ({_human(sizes['pretrain'])} parameters)",
    ]
    lines += [f"warning: {p} (zoo.py run refuses until it is there)" for p in problems]
    by_task = {t: [r for r in ft_runs if r.task == t] for t in spec.finetune}
    tasks = ", ".join(f"{t} {len(v)}" for t, v in by_task.items())
    lines.append(
        f"runs: {len(runs)} ({len(pt_runs)} continued pretraining, {len(ft_runs)} fine-tuning: {tasks})"
    )
    n_states = sum(len(r.state_epochs) for r in runs)
    lines.append(
        f"model states: {n_states} (pretraining {sum(len(r.state_epochs) for r in pt_runs)}, "
        f"fine-tuning {sum(len(r.state_epochs) for r in ft_runs)})"
    )
    disk = sum(len(r.state_epochs) * sizes[r.task or "pretrain"] * nbytes for r in runs)
    lines.append(
        f"disk: {_human(disk, 'B')} of weights (parameters x {nbytes} B, {spec.storage.dtype}); "
        f"optimizer states {'kept' if spec.storage.keep_optimizer_state else 'deleted once a run completes'}"
    )
    flops, notes = {}, []
    if pt_runs:
        pt = spec.pretrain
        try:
            spe = pretrain_steps_per_epoch(spec, pt_runs[0], zoo_dir)
            how = "from the corpus" if pt.steps_per_epoch is None else "from the spec"
        except UserError:
            if spec.estimates.corpus_tokens is None:
                raise
            spe = max(1, int(spec.estimates.corpus_tokens / (pt.seq_length - 2) / pt.batch_size))
            how = "estimated from estimates.corpus_tokens"
        tokens = spe * pt.epochs * pt.batch_size * pt.seq_length
        val = pt.epochs * pt.validation_batches * pt.batch_size * pt.seq_length
        flops["pretraining"] = len(pt_runs) * (6 * tokens + 2 * val) * sizes["pretrain"]
        notes.append(
            f"  pretraining: {spe} steps/epoch ({how}) x {pt.epochs} epochs x {pt.batch_size} x "
            f"{pt.seq_length} tokens = {_human(tokens)} tokens per run"
        )
    for task, task_runs in by_task.items():
        if not task_runs:
            continue
        g = spec.finetune[task]
        counts, per = finetune_counts(spec, task)
        train = counts.get("train_used", counts["train"])
        evaluated = (g.eval_train_subset or counts["train"]) + counts["validation"] + counts["test"]
        per_run = (6 * train * g.epochs + 2 * evaluated * (g.epochs + 1)) * per * sizes[task]
        flops[task] = len(task_runs) * per_run
        notes.append(
            f"  {task}: train/validation/test {counts['train']}/{counts['validation']}/{counts['test']} "
            f"examples, ~{per:.0f} tokens each (word counts x {spec.estimates.subwords_per_word}); "
            f"{g.epochs} epochs, every split evaluated at epochs 0..{g.epochs}"
        )
    total = sum(flops.values())
    rate = spec.estimates.flops_per_second
    lines.append(
        f"compute: {total:.3g} FLOPs (6·N·tokens training + 2·N·tokens evaluation) = "
        f"{total / rate / 3600:.3g} device-hours at {rate:.3g} FLOP/s ({spec.estimates.device})"
    )
    lines += [
        f"{note}; {v:.3g} FLOPs = {v / rate / 3600:.3g} device-hours"
        for note, v in zip(notes, flops.values())
    ]
    lines.append("runs (id, stage, parent, states):")
    lines += [
        f"  {r.run_id}  {r.stage}  {r.parent or '-'}{'' if r.parent_epoch is None else f' e{r.parent_epoch}'}"
        f"  {len(r.state_epochs)}"
        for r in runs
    ]
    return "\n".join(lines)
