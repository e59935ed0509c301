"""Pretrain BERT / LTG-BERT / ELC-BERT with masked language modelling (and NSP).

    python train_pretrain.py --config_file configs/bert_small.json --input_path PROCESSED \
        --vocab_path tokenizer.json --output_dir runs/x --seq_length 128 --batch_size 64 --max_steps 1000
    torchrun --nproc_per_node 8 train_pretrain.py ...        (--batch_size is the global batch)

Writes OUTPUT_DIR/run_args.json, metrics.jsonl, tensorboard/, checkpoints/step_N/. Run again with the
same arguments to resume from the newest checkpoint, or name one with --checkpoint_path.
The step logic is training/loop.py (shared with fine-tuning); this file wires pretraining to it.
"""

import json
import os
from pathlib import Path

from model.io import load_any
from training.checkpoint import (
    CheckpointWriter,
    latest_checkpoint,
    load_checkpoint,
    parse_checkpoint_steps,
    rng_state,
    set_rng_state,
)
from training.cli import run_distributed
from training.distributed import DistInfo, barrier, broadcast_object
from training.loop import Trainer, TrainerConfig, TrainingDiverged
from training.metrics import MetricsLogger
from training.optim import optimizer_from_args, resolve_param_rule
from training.precision import resolve
from training.pretrain_args import differing_args, parse_args
from training.pretraining import PretrainingObjective, build_pretraining_data, phase_at, phases
from training.schedules import build_schedule
from utils.errors import UserError, run_cli
from utils.repro import set_seed


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _refuse(what: str, diffs: list[str], saved: dict, current: dict) -> None:
    shown = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diffs[:4])
    raise UserError(
        f"{what} differs in {', '.join(diffs)} ({shown}); pass --allow_override to continue anyway"
    )


def _check_inputs(args, config, nsp: bool, world: int) -> None:
    from data.corpus import check_tokenizer_matches, read_meta

    if not (Path(args.input_path) / "meta.json").is_file():
        raise UserError(f"--input_path {args.input_path}: no processed corpus there (meta.json missing)")
    check_tokenizer_matches(args.input_path, args.vocab_path)
    vocab = read_meta(args.input_path)["tokenizer"]["vocab_size"]
    if vocab > config.vocab_size:
        raise UserError(
            f"--vocab_path {args.vocab_path} has {vocab} tokens, more than the model's "
            f"vocab_size {config.vocab_size}"
        )
    if nsp and not config.next_sentence_prediction:
        raise UserError("--nsp: the model config has next_sentence_prediction false (no NSP head)")
    for ph in phases(args.max_steps, args.seq_length, args.batch_size, args.long_after):
        flag = "--seq_length" if ph.seq_length == args.seq_length else "--long_after (4 x --seq_length)"
        if ph.seq_length > config.max_position_embeddings:
            raise UserError(
                f"{flag}: {ph.seq_length} exceeds the model's max_position_embeddings "
                f"{config.max_position_embeddings}"
            )
        per = world * args.gradient_accumulation
        if ph.batch_size < 1 or ph.batch_size % per or (ph.start > 0 and args.batch_size % 4):
            which = "the global batch" + " (and its quarter after --long_after)" * (ph.start > 0)
            raise UserError(
                f"--batch_size {args.batch_size}: {which} must divide by world size {world} x "
                f"--gradient_accumulation {args.gradient_accumulation}"
            )


def _setup(args, info: DistInfo):
    """Everything that can refuse the run, before anything is written: (model, config, resume state)."""
    from model.config import ModelConfig

    out = Path(args.output_dir)
    resume = args.checkpoint_path or (str(latest_checkpoint(out) or "") or None)
    resume = broadcast_object(resume, info)
    file_config = ModelConfig.from_json(args.model_config_path) if args.model_config_path else None
    state, saved = None, None
    if resume:
        model, state, saved = load_checkpoint(Path(resume))
        config = model.config
    elif args.init_from:
        model = load_any(args.init_from, "--init_from")
        config = model.config
        if file_config is not None and file_config.to_dict() != config.to_dict():
            diff = next(k for k, v in file_config.to_dict().items() if config.to_dict()[k] != v)
            raise UserError(f"--config_file {args.config_file} differs from --init_from's config in {diff!r}")
    else:
        model, config = None, file_config
    args.nsp = config.next_sentence_prediction if args.nsp is None else args.nsp
    args.mixed_precision = resolve(args.mixed_precision, info.device)  # saved and compared resolved
    # saved and compared resolved; a run saved before --param_groups existed used the bert rule
    old_run = saved is not None and "param_groups" not in saved and args.param_groups == "auto"
    args.param_groups = "bert" if old_run else resolve_param_rule(args.param_groups, config.backbone)
    current = {**vars(args), "model_config": (file_config or config).to_dict()}
    if saved is not None and not args.allow_override:
        diffs = differing_args(saved, current)
        if diffs:
            _refuse(f"checkpoint {resume}: this run", diffs, saved, current)
    previous = _read_json(out / "run_args.json")
    if saved is None and previous is not None and not args.allow_override:
        diffs = differing_args(previous, current)
        if diffs:
            _refuse(f"--output_dir {out} holds a different run: it", diffs, previous, current)
    _check_inputs(args, config, args.nsp, info.world_size)
    parse_checkpoint_steps(args.checkpoint_steps, args.max_steps)
    if model is None:
        set_seed(args.init_seed)
        from model import PreTrainingModel

        model = PreTrainingModel(config)
    return model, config, state, current, resume


def main(argv: list[str] | None = None) -> None:
    run_distributed(_train, parse_args(argv))


def _train(args, info: DistInfo) -> None:
    from data.loader import PretrainingLoader

    model, config, state, run_args, resume = _setup(args, info)
    out = Path(args.output_dir)
    all_phases = phases(args.max_steps, args.seq_length, args.batch_size, args.long_after)
    step = int(state["trainer"]["step"]) if state is not None else 0
    phase = phase_at(all_phases, step)
    data = build_pretraining_data(args, phase.seq_length, "train")  # may still refuse the run: before writing
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / ".run_args.json.tmp"
        tmp.write_text(json.dumps({**run_args, "world_size": info.world_size}, indent=2, sort_keys=True))
        os.replace(tmp, out / "run_args.json")

    model.to(info.device)
    optimizer = optimizer_from_args(model, args, max_trust_ratio=args.max_trust_ratio, rule=args.param_groups)
    schedule = build_schedule(
        args.scheduler, optimizer, args.max_steps, args.warmup_steps, args.min_lr_factor
    )
    objective = PretrainingObjective(args.label_smoothing, args.nsp, token_types=config.type_vocab_size > 0)
    trainer_config = TrainerConfig(
        precision=args.mixed_precision,
        max_gradient=args.max_gradient,
        max_skipped_steps=args.max_skipped_steps,
        seed=args.seed,
        compile=args.compile,
        # without an NSP head, BERT's pooler gets no gradient; DDP must be told
        find_unused_parameters=config.backbone == "bert" and not config.next_sentence_prediction,
    )
    trainer = Trainer(model, optimizer, schedule, objective, dist=info, config=trainer_config)
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["rng"])

    kept = set(parse_checkpoint_steps(args.checkpoint_steps, args.max_steps)) | {args.max_steps}
    writer = CheckpointWriter(out, keep_last=args.keep_last) if info.is_main else None
    logger = MetricsLogger(out, info.is_main, trainer.step, args.max_steps, tensorboard=args.tensorboard)
    n_params = sum(p.numel() for p in model.parameters())
    logger.message(
        f"{n_params / 1e6:.1f}M parameters, world size {info.world_size}, {args.mixed_precision} precision, "
        f"step {trainer.step} of {args.max_steps}" + (f" (resumed from {resume})" if resume else "")
    )

    def save(step: int) -> None:
        if writer is None:
            return
        full = {
            "trainer": trainer.state_dict(),
            "rng": rng_state(),
            "seq_length": phase.seq_length,
            "batch_size": phase.batch_size,
            "world_size": info.world_size,
        }
        summary = {"tokens_seen": trainer.tokens_seen, "seq_length": phase.seq_length}
        writer.save(step, trainer.model, full, run_args, step in kept, summary)

    val_data = None

    def validate(step: int) -> None:
        nonlocal val_data
        if val_data is None or val_data.seq_length != phase.seq_length:
            val_data = build_pretraining_data(args, phase.seq_length, "validation")
        accum = args.gradient_accumulation
        batches = (
            val_data.batch(i, phase.batch_size, info.rank, info.world_size, m, accum)
            for i in range(args.validation_batches)
            for m in range(accum)
        )
        logger.log(step, trainer.evaluate(batches), prefix="val_")

    def after_step(t: Trainer) -> None:
        s = t.step
        stop = args.stop_at_step is not None and s >= args.stop_at_step
        if s % args.log_freq == 0 or s == args.max_steps or stop:
            values = {**t.collect_metrics(), "seq_length": phase.seq_length}
            logger.log(s, values)
            weights = {
                f"{name}_{i}": w
                for name, vec in t.model.layer_weights().items()
                for i, w in enumerate(vec.detach().float().flatten().tolist())
            }
            logger.scalars(s, weights, "layer_weights")
            logger.progress(s, values)
        else:
            logger.progress(s)
        if args.validation_every and s % args.validation_every == 0:
            validate(s)
        if s in kept or (args.save_every and s % args.save_every == 0) or stop:
            save(s)
        t.should_stop = stop

    try:
        if trainer.step == 0 and 0 in kept:
            save(0)
        for ph in all_phases:
            if trainer.step >= ph.end or trainer.should_stop:
                continue
            if ph != phase:
                phase, data = ph, build_pretraining_data(args, ph.seq_length, "train")
            cuda = info.device.type == "cuda"
            with PretrainingLoader(
                data,
                ph.batch_size,
                info.rank,
                info.world_size,
                args.gradient_accumulation,
                start_step=trainer.step,
                pin_memory=cuda,
                max_steps=ph.end,
                unpad=args.unpad,
            ) as loader:
                trainer.fit(loader, ph.end, callbacks=[after_step])
            if trainer.should_stop:
                break
    except TrainingDiverged as err:
        if writer is not None:
            writer.wait()
        last = latest_checkpoint(out)
        raise UserError(f"{err}; last good checkpoint: {last or 'none'}") from None
    finally:
        if writer is not None:
            writer.wait()
        logger.close()
    barrier(info)
    if info.is_main:
        print(
            f"done at step {trainer.step}: checkpoints in {out / 'checkpoints'}, "
            f"tensorboard --logdir {out / 'tensorboard'}, metrics in {out / 'metrics.jsonl'}"
        )


if __name__ == "__main__":
    run_cli(main)
