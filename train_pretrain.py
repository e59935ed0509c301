"""Pretrain BERT / LTG-BERT / ELC-BERT with masked language modelling (and NSP).

    python train_pretrain.py --config_file configs/bert_small.json --input_path PROCESSED \
        --vocab_path tokenizer.json --output_dir runs/x --seq_length 128 --batch_size 64 --max_steps 1000
    torchrun --nproc_per_node 8 train_pretrain.py ...        (--batch_size is the global batch)

Writes OUTPUT_DIR/run_args.json, metrics.jsonl, tensorboard/, checkpoints/step_N/. Run again with the
same arguments to resume from the newest checkpoint, or name one with --checkpoint_path.
Set up (everything that can refuse the run, then the run's record), loop over the phases' steps, save.
The optimizer step is training/loop.py's (shared with fine-tuning); the run configuration is
training/pretrain_args.py's PretrainConfig.
"""

import dataclasses
from pathlib import Path

from data.pretraining import resolve_layout
from model.io import load_any
from training.checkpoint import (
    CheckpointWriter,
    fit_legacy_pooler,
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from training.checkpoint_steps import parse_checkpoint_steps
from training.cli import run_distributed
from training.distributed import DistInfo, barrier, broadcast_object
from training.loop import Trainer, TrainerConfig, TrainingDiverged
from training.metrics import MetricsLogger, close_run
from training.optim import optimizer_from_args, resolve_param_rule
from training.precision import resolve
from training.pretrain_args import PretrainConfig, parse_args
from training.pretraining_objective import PretrainingObjective
from training.pretraining_phases import build_pretraining_data, phase_at, phases
from training.run_config import record, resume_differences, with_legacy_values
from training.schedules import build_schedule
from utils.errors import UserError, run_cli
from utils.files import check_output_dir, read_json, write_json_atomic
from utils.repro import set_seed


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    check_output_dir(config.output_dir)  # a file, or not writable: refused before any work
    run_distributed(train, config)


def train(config: PretrainConfig, info: DistInfo) -> None:
    # ---- set up: everything that can refuse the run comes before anything is written
    model, state, resume, config = setup(config, info)
    out = Path(config.output_dir)
    all_phases = phases(config.max_steps, config.seq_length, config.batch_size, config.long_after)
    trainer = build_trainer(model, config, info, state)
    phase = phase_at(all_phases, trainer.step)
    data = build_pretraining_data(config, phase.seq_length, "train")
    data.steps_per_epoch(phase.batch_size)  # a corpus smaller than one batch: refused now
    validation = held_out_data(config, phase)  # seq_length -> held-out PretrainingData, built when needed
    run_record = record(config)
    if info.is_main:  # the run's record once everything that can refuse it has passed
        write_json_atomic(out / "run_args.json", {**run_record, "world_size": info.world_size})
    kept = set(parse_checkpoint_steps(config.checkpoint_steps, config.max_steps)) | {config.max_steps}
    writer = None
    if info.is_main:
        tokenizer_json = Path(config.vocab_path).read_text() if config.vocab_path.endswith(".json") else None
        writer = CheckpointWriter(
            out, config.keep_last, dense=config.dense_checkpoints, tokenizer_json=tokenizer_json
        )
    logger = MetricsLogger(out, info.is_main, trainer.step, config.max_steps, tensorboard=config.tensorboard)
    logger.message(
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, world size {info.world_size}, "
        f"{config.mixed_precision} precision, step {trainer.step} of {config.max_steps}"
        + (f" (resumed from {resume})" if resume else "")
    )

    # ---- the loop: the phases' steps (--long_after switches length and batch once)
    try:
        if trainer.step == 0 and 0 in kept:  # the initialisation
            full = config.dense_checkpoints == "full"
            save(writer, trainer, phase, info, run_record, kept, 0, resumable=full)
        for phase in all_phases:
            if trainer.step >= phase.end:
                continue
            if data.seq_length != phase.seq_length:
                data = build_pretraining_data(config, phase.seq_length, "train")
            if run_phase(trainer, data, phase, config, info, logger, writer, run_record, kept, validation):
                break  # --stop_at_step
    except TrainingDiverged as err:
        if writer is not None:
            writer.wait()
        raise UserError(f"{err}; last good checkpoint: {latest_checkpoint(out) or 'none'}") from None
    finally:
        close_run(writer, logger)

    # ---- done
    barrier(info)
    if info.is_main:
        print(
            f"done at step {trainer.step}: checkpoints in {out / 'checkpoints'}, "
            f"tensorboard --logdir {out / 'tensorboard'}, metrics in {out / 'metrics.jsonl'}"
        )


def held_out_data(config: PretrainConfig, phase) -> dict:
    """{seq_length: the validation split's PretrainingData} for the first phase; a held-out split too
    small for one batch (one document with NSP) is refused now, not at the first validation."""
    if not config.validation_every:
        return {}
    try:
        data = build_pretraining_data(config, phase.seq_length, "validation")
        data.steps_per_epoch(phase.batch_size)
    except UserError as err:
        raise UserError(f"--validation_every {config.validation_every}: {err}") from None
    return {phase.seq_length: data}


def run_phase(trainer, data, phase, config, info, logger, writer, run_record, kept, validation) -> bool:
    """Train one phase's remaining steps, logging, validating and saving after each step; True when
    --stop_at_step ended it."""
    from data.loader import PretrainingLoader

    trainer.model.train()
    loader = PretrainingLoader(
        data,
        phase.batch_size,
        info.rank,
        info.world_size,
        config.gradient_accumulation,
        start_step=trainer.step,
        pin_memory=info.device.type == "cuda",
        max_steps=phase.end,
    )
    with loader:
        for micro_batches in loader:
            trainer.train_step(micro_batches)
            step = trainer.step
            stop = config.stop_at_step is not None and step >= config.stop_at_step
            log_step(
                trainer, logger, phase, step, stop or step % config.log_freq == 0 or step == config.max_steps
            )
            if config.validation_every and step % config.validation_every == 0:
                validate(trainer, logger, config, info, phase, step, validation)
            rolling = (
                (config.save_every and step % config.save_every == 0) or stop or step == config.max_steps
            )
            if step in kept or rolling:
                resumable = rolling or config.dense_checkpoints == "full"
                save(writer, trainer, phase, info, run_record, kept, step, resumable)
            if stop:
                return True
            if step >= phase.end:
                break
    return False


def log_step(trainer: Trainer, logger: MetricsLogger, phase, step: int, full: bool) -> None:
    """Training metrics and the softmaxed ELC layer weights at logging steps; the progress bar always."""
    if not full:
        logger.progress(step)
        return
    values = {**trainer.collect_metrics(), "seq_length": phase.seq_length}
    logger.log(step, values)
    weights = {
        f"{name}_{i}": w
        for name, softmaxed in trainer.model.softmaxed_layer_weights().items()
        for i, w in enumerate(softmaxed.detach().float().flatten().tolist())
    }
    logger.scalars(step, weights, "layer_weights")
    logger.progress(step, values)


def validate(trainer: Trainer, logger: MetricsLogger, config, info: DistInfo, phase, step, cache) -> None:
    if phase.seq_length not in cache:
        cache[phase.seq_length] = build_pretraining_data(config, phase.seq_length, "validation")
    data, accum = cache[phase.seq_length], config.gradient_accumulation
    batches = (
        data.batch(i, phase.batch_size, info.rank, info.world_size, m, accum)
        for i in range(config.validation_batches)
        for m in range(accum)
    )
    logger.log(step, trainer.evaluate(batches), prefix="val_")


def save(
    writer, trainer, phase, info: DistInfo, run_record: dict, kept: set, step: int, resumable=True
) -> None:
    """Checkpoint `step` on rank 0; resumable False: weights only (--dense_checkpoints weights)."""
    if writer is None:  # not rank 0
        return
    full = None
    if resumable:
        full = {
            "trainer": trainer.state_dict(),
            "rng": rng_state(),
            "seq_length": phase.seq_length,
            "batch_size": phase.batch_size,
            "world_size": info.world_size,
        }
    summary = {"tokens_seen": trainer.tokens_seen, "seq_length": phase.seq_length}
    writer.save(step, trainer.model, full, run_record, step in kept, summary)


def build_trainer(model, config: PretrainConfig, info: DistInfo, state: dict | None) -> Trainer:
    model.to(info.device)
    optimizer = optimizer_from_args(
        model, config, max_trust_ratio=config.max_trust_ratio, rule=config.param_groups
    )
    schedule = build_schedule(
        config.scheduler, optimizer, config.max_steps, config.warmup_steps, config.min_lr_factor
    )
    objective = PretrainingObjective(config.label_smoothing, config.nsp)
    trainer_config = TrainerConfig(
        precision=config.mixed_precision,
        max_gradient=config.max_gradient,
        max_skipped_steps=config.max_skipped_steps,
        seed=config.seed,
        compile=config.compile,
    )
    trainer = Trainer(model, optimizer, schedule, objective, dist=info, config=trainer_config)
    if state is not None:
        fit_legacy_pooler(state["trainer"], model, optimizer, config.weight_decay)
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["rng"])
    return trainer


def setup(config: PretrainConfig, info: DistInfo):
    """(model, training state or None, the checkpoint resumed or None, the resolved run configuration);
    refuses a resume or a reused output folder whose run differs (the one resume rule:
    training.run_config.resume_differences)."""
    from model.config import ModelConfig

    out = Path(config.output_dir)
    resume = broadcast_object(config.checkpoint_path or (str(latest_checkpoint(out) or "") or None), info)
    file_config = ModelConfig.from_json(config.model_config_path) if config.model_config_path else None
    model, state, saved = None, None, None
    if resume:
        model, state, saved = load_checkpoint(Path(resume))
    elif config.init_from:
        model = load_any(config.init_from, "--init_from")
        if file_config is not None and file_config.to_dict() != model.config.to_dict():
            diff = next(k for k, v in file_config.to_dict().items() if model.config.to_dict()[k] != v)
            raise UserError(
                f"--config_file {config.config_file} differs from --init_from's config in {diff!r}"
            )
    model_config = file_config or model.config
    previous = saved if saved is not None else read_json_or_none(out / "run_args.json")
    if previous is not None:
        config = with_legacy_values(config, previous)  # a flag added since: the value the old run used
    # resolved values are what is saved and compared
    config = dataclasses.replace(
        config,
        nsp=model_config.next_sentence_prediction if config.nsp is None else config.nsp,
        mixed_precision=resolve(config.mixed_precision, info.device),
        param_groups=resolve_param_rule(config.param_groups, model_config.backbone),
        model_config=model_config.to_dict(),
    )
    layout, dupe = resolve_layout(config.instance_layout, config.nsp, config.dupe_factor)
    config = dataclasses.replace(config, instance_layout=layout, dupe_factor=dupe)
    if previous is not None and not config.allow_override:
        diffs = resume_differences(previous, config)
        if diffs:
            what = (
                f"checkpoint {resume}: this run"
                if saved is not None
                else f"--output_dir {out} holds a different run: it"
            )
            shown = "; ".join(f"{k}: {previous.get(k)!r} -> {getattr(config, k)!r}" for k in diffs[:4])
            raise UserError(
                f"{what} differs in {', '.join(diffs)} ({shown}); pass --allow_override to continue anyway"
            )
    check_inputs(config, model_config, info.world_size)
    if model is None:
        set_seed(config.init_seed)
        from model import PretrainingModel

        model = PretrainingModel(model_config)
    return model, state, resume, config


def read_json_or_none(path: Path) -> dict | None:
    try:
        return read_json(path)
    except UserError:
        return None


def check_inputs(config: PretrainConfig, model_config, world: int) -> None:
    from data.corpus import check_tokenizer_matches, read_meta

    if not (Path(config.input_path) / "meta.json").is_file():
        raise UserError(f"--input_path {config.input_path}: no processed corpus there (meta.json missing)")
    check_tokenizer_matches(config.input_path, config.vocab_path)
    vocab = read_meta(config.input_path)["tokenizer"]["vocab_size"]
    if vocab > model_config.vocab_size:
        raise UserError(
            f"--vocab_path {config.vocab_path} has {vocab} tokens, more than the model's "
            f"vocab_size {model_config.vocab_size}"
        )
    if config.nsp and not model_config.next_sentence_prediction:
        raise UserError("--nsp: the model config has next_sentence_prediction false (no NSP head)")
    for ph in phases(config.max_steps, config.seq_length, config.batch_size, config.long_after):
        flag = "--seq_length" if ph.seq_length == config.seq_length else "--long_after (4 x --seq_length)"
        if ph.seq_length > model_config.max_position_embeddings:
            raise UserError(
                f"{flag}: {ph.seq_length} exceeds the model's max_position_embeddings "
                f"{model_config.max_position_embeddings}"
            )
        per = world * config.gradient_accumulation
        if ph.batch_size < 1 or ph.batch_size % per or (ph.start > 0 and config.batch_size % 4):
            which = "the global batch" + " (and its quarter after --long_after)" * (ph.start > 0)
            raise UserError(
                f"--batch_size {config.batch_size}: {which} must divide by world size {world} x "
                f"--gradient_accumulation {config.gradient_accumulation}"
            )
    parse_checkpoint_steps(config.checkpoint_steps, config.max_steps)


if __name__ == "__main__":
    run_cli(main)
