"""Fine-tune a pretrained model on a GLUE task or SQuAD v1.1, recording every epoch.

    python train_finetune.py --task sst2 --data_dir DATA/sst2 --checkpoint_path runs/x/checkpoints/step_N \
        --vocab_path tokenizer.json --output_dir runs/x_sst2 --epochs 3
    torchrun --nproc_per_node 4 train_finetune.py ...             (--batch_size is the global batch)

At epoch 0 (before training) and after every epoch: checkpoints/epoch_E/ (model with head, config,
args, code version, optimizer state), one metrics.jsonl line {"epoch", "step", "train": {"loss", ...},
"validation": {...}, "test": {...}}, and predictions/epoch_E_{split}.jsonl for every held-out split
(SQuAD also predictions/epoch_E_{split}.json in the official format). split.json records the split.
An epoch's metrics line and predictions are written before its checkpoint is renamed into place, and
--resume drops the records after the newest checkpoint: each epoch stays in metrics.jsonl exactly once.
Set up (everything that can refuse the run, then its record), loop over the epochs, record each. The
optimizer step is training/loop.py's (shared with pretraining); the run configuration is
finetune/args.py's FinetuneConfig.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from finetune.args import FinetuneConfig, parse_args
from finetune.batching import collate, length_grouped_batches, micro_batches
from finetune.evaluate import evaluate_split, json_safe
from finetune.modeling import (
    build_model,
    check_vocabulary,
    finetune_record,
    freeze,
    load_finetuned,
    load_pretrained,
    read_finetune_record,
    shadow_builder,
)
from finetune.splits import build_splits, load_split, save_split
from finetune.tasks import build_task
from model.heads import ClassifierConfig
from training.checkpoint import CheckpointWriter, latest_checkpoint, load_checkpoint, rng_state, set_rng_state
from training.cli import run_distributed
from training.distributed import DistInfo, barrier
from training.loop import Trainer, TrainerConfig
from training.metrics import MetricsLogger, close_run
from training.optim import optimizer_from_args
from training.precision import resolve
from training.run_config import record, resume_differences
from training.schedules import build_schedule
from utils.errors import UserError, run_cli
from utils.files import check_output_dir, write_json_atomic, write_text_atomic


def main(argv=None) -> None:
    config = parse_args(argv)
    check_output_dir(config.output_dir)  # a file, or not writable: refused before any work
    run_distributed(finetune, config)


def finetune(config: FinetuneConfig, info: DistInfo) -> None:
    # ---- set up: everything that can refuse the run comes before anything is written
    run = setup(config, info)
    config, out = run.config, Path(run.config.output_dir)
    lengths = np.array([len(f["input_ids"]) for f in run.train_features])
    steps_per_epoch = len(lengths) // config.batch_size  # the partial last batch is dropped
    trainer = build_trainer(run, config, info, steps_per_epoch * config.epochs)
    evaluated = evaluation_sets(run, config, info)
    if info.is_main:  # the run's records once everything that can refuse it has passed
        if run.state is None:  # records of a run that stopped before its first checkpoint: redone below
            (out / "metrics.jsonl").unlink(missing_ok=True)
        save_split(run.split_record, out / "split.json")
        write_json_atomic(out / "run_args.json", record(config))
    tokenizer_json = Path(config.vocab_path).read_text() if config.vocab_path.endswith(".json") else None
    writer = CheckpointWriter(
        out,
        prefix="epoch",
        build=shadow_builder(run.model.config, run.head_record),
        tokenizer_json=tokenizer_json or load_vocab(config.vocab_path)[0].to_str(),
    )
    writer = writer if info.is_main else None
    logger = MetricsLogger(
        out, info.is_main, trainer.step, steps_per_epoch * config.epochs, config.tensorboard
    )
    logger.message(
        f"{config.task}: {', '.join(f'{k} {len(v)}' for k, v in run.splits.items())} examples; "
        f"{steps_per_epoch} steps per epoch, world size {info.world_size}, {config.mixed_precision} precision"
        + (f" (resumed from {run.resume})" if run.resume else "")
    )

    # ---- the loop: one record (metrics, predictions, checkpoint) before training and after every epoch
    def after_step(t: Trainer) -> None:
        if t.step % config.log_freq == 0 or t.step % steps_per_epoch == 0:
            values = t.collect_metrics()
            logger.scalars(t.step, {k: v for k, v in values.items() if k != "step"}, "train")
            logger.progress(t.step, values)
        else:
            logger.progress(t.step)

    try:
        if run.state is None:
            record_epoch(0, trainer, run, evaluated, info, logger, writer)
        for epoch in range(run.start_epoch + 1, config.epochs + 1):
            if config.stop_at_epoch is not None and epoch > config.stop_at_epoch:
                break  # as if the job's time ran out: --resume continues from here
            batches = epoch_batches(run, config, info, lengths, epoch)
            trainer.fit(batches, epoch * steps_per_epoch, callbacks=[after_step])
            record_epoch(epoch, trainer, run, evaluated, info, logger, writer)
    finally:
        close_run(writer, logger)

    # ---- done
    if info.is_main:
        print(
            f"done: {out / 'metrics.jsonl'}, predictions in {out / 'predictions'}, checkpoints in "
            f"{out / 'checkpoints'}"
        )


@dataclasses.dataclass
class Run:
    """What setup() resolved: the run configuration and everything built before training."""

    config: FinetuneConfig
    task: object  # finetune.tasks.ClassificationTask | SquadTask
    special: object  # data.tokenization special ids
    splits: dict  # split name -> examples
    split_record: dict  # split.json
    train_features: list
    model: object  # encoder + head
    head_record: dict  # finetune.modeling.finetune_record
    state: dict | None  # training state of the checkpoint resumed, else None
    resume: Path | None
    start_epoch: int  # the last epoch recorded (0 before any)


def setup(config: FinetuneConfig, info: DistInfo) -> Run:
    """Everything that can refuse the run, before anything is written; the one resume rule is
    training.run_config.resume_differences."""
    out = Path(config.output_dir)
    resume = latest_checkpoint(out, prefix="epoch") if config.resume else None
    started = (out / "metrics.jsonl").exists()
    # --resume of a run that stopped before its first checkpoint was in place starts it over
    if config.resume and resume is None and not started:
        raise UserError(f"--resume: no checkpoints/epoch_E in {out}")
    if not config.resume and started:
        raise UserError(f"--output_dir {out} already holds a run: pass --resume or choose another folder")
    if resume is None and config.checkpoint_path is None:
        raise UserError(f"--checkpoint_path is required: {out} has no checkpoint yet to --resume from")
    config = dataclasses.replace(config, mixed_precision=resolve(config.mixed_precision, info.device))
    tokenizer, special = load_vocab(config.vocab_path)
    task = build_task(config.task, tokenizer, special, config)
    splits, split_record = make_splits(config, task, out, resuming=resume is not None)
    state = None
    if resume is not None:
        model, state, saved = load_checkpoint(resume, load=load_finetuned)
        config = dataclasses.replace(
            config, checkpoint_path=config.checkpoint_path or saved.get("checkpoint_path")
        )
        diffs = resume_differences(saved, config)
        if diffs:
            raise UserError(f"--resume: this run differs from {resume} in {', '.join(diffs)}")
        head_record = read_finetune_record(resume)
    else:
        encoder = load_pretrained(config.checkpoint_path)
        check_vocabulary(tokenizer, encoder.config, config.vocab_path, config.checkpoint_path)
        head = ClassifierConfig(
            task.num_labels,
            config.pooling,
            config.head_hidden_sizes,
            config.head_activation,
            config.head_dropout,
        )
        model = build_model(config.task, encoder, head, config.head_seed)
        head_record = finetune_record(config.task, head)
    freeze(model, config.freeze_encoder, config.freeze_layers)
    check_sizes(config, model, info)
    train_features = task.featurize(splits["train"])
    if len(train_features) < config.batch_size:
        raise UserError(
            f"the train split has {len(train_features)} inputs, fewer than --batch_size {config.batch_size}"
        )
    start_epoch = state["epoch"] if state is not None else 0
    return Run(
        config,
        task,
        special,
        splits,
        split_record,
        train_features,
        model,
        head_record,
        state,
        resume,
        start_epoch,
    )


def check_sizes(config: FinetuneConfig, model, info: DistInfo) -> None:
    if config.max_seq_length > model.config.max_position_embeddings:
        raise UserError(
            f"--max_seq_length {config.max_seq_length} exceeds the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}"
        )
    if config.batch_size % (info.world_size * config.gradient_accumulation):
        raise UserError(
            f"--batch_size {config.batch_size} must divide by world size {info.world_size} x "
            f"--gradient_accumulation {config.gradient_accumulation}"
        )


def build_trainer(run: Run, config: FinetuneConfig, info: DistInfo, total_steps: int) -> Trainer:
    model = run.model.to(info.device)
    head_prefixes = {
        f"{name}.": config.head_learning_rate for name, _ in model.named_children() if name != "encoder"
    }
    optimizer = optimizer_from_args(model, config, lr_overrides=head_prefixes)
    warmup = int(total_steps * config.warmup_proportion)
    schedule = build_schedule(config.scheduler, optimizer, total_steps, warmup, config.min_lr_factor)
    trainer_config = TrainerConfig(
        precision=config.mixed_precision,
        max_gradient=config.max_gradient,
        seed=config.seed,
        compile=config.compile,
    )
    trainer = Trainer(model, optimizer, schedule, run.task, dist=info, config=trainer_config)
    if run.state is not None:
        trainer.load_state_dict(run.state["trainer"])
        set_rng_state(run.state["rng"])
    return trainer


def evaluation_sets(run: Run, config: FinetuneConfig, info: DistInfo) -> dict:
    """split -> (examples, features), rank 0 only: the held-out splits whole, train capped by
    --eval_train_subset (a fixed subset)."""
    if not info.is_main:
        return {}
    chosen = {"train": seeded_subset(run.splits["train"], config.eval_train_subset, config.split_seed)}
    chosen.update({name: examples for name, examples in run.splits.items() if name != "train"})
    return {name: (examples, run.task.featurize(examples)) for name, examples in chosen.items()}


def record_epoch(epoch: int, trainer: Trainer, run: Run, evaluated: dict, info, logger, writer) -> None:
    """Evaluate every split, write the metrics line and predictions, then the checkpoint (rank 0)."""
    if info.is_main:
        config, out, line = run.config, Path(run.config.output_dir), {"epoch": epoch}
        for name, (examples, features) in evaluated.items():
            scores, preds = evaluate_split(
                trainer.model,
                run.task,
                examples,
                features,
                config.eval_batch_size,
                info.device,
                config.mixed_precision,
                run.special.pad,
            )
            line[name] = json_safe(scores)
            logger.scalars(trainer.step, scores, f"eval_{name}")
            if name != "train":
                text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in preds)
                write_text_atomic(out / "predictions" / f"epoch_{epoch}_{name}.jsonl", text)
                if run.task.name == "squad":  # the official format: {question id: answer text}
                    official = {r["id"]: r["prediction"] for r in preds}
                    write_text_atomic(
                        out / "predictions" / f"epoch_{epoch}_{name}.json", json.dumps(official)
                    )
        logger.log(trainer.step, line)
        logger.message(json.dumps(line))
        full = {
            "trainer": trainer.state_dict(),
            "rng": rng_state(),
            "epoch": epoch,
            "world_size": info.world_size,
        }
        summary = {"epoch": epoch, "optimizer_steps": trainer.step, "finetune": run.head_record}
        writer.save(epoch, trainer.model, full, record(config), True, summary)
    barrier(info)


def epoch_batches(run: Run, config: FinetuneConfig, info: DistInfo, lengths, epoch: int):
    """This rank's micro-batches of every step of `epoch` (a pure function of --seed and epoch)."""
    parts = info.world_size * config.gradient_accumulation
    for batch in length_grouped_batches(
        lengths, config.batch_size, [config.seed, epoch], config.bucket_batches
    ):
        mine = micro_batches(batch, parts)[info.rank * config.gradient_accumulation :][
            : config.gradient_accumulation
        ]
        yield [
            collate([run.train_features[i] for i in m], run.special.pad, run.task.label_keys) for m in mine
        ]


def load_vocab(path: str):
    from data.tokenization import load_tokenizer, special_ids, tokenizer_from_vocab

    tokenizer = tokenizer_from_vocab(path)[0] if path.endswith(".txt") else load_tokenizer(path)
    return tokenizer, special_ids(tokenizer)


def seeded_subset(examples: list, n: int | None, seed: int) -> list:
    """At most n examples: a fixed seeded choice, kept in split order."""
    if n is None or n >= len(examples):
        return examples
    keep = np.sort(np.random.default_rng(seed).permutation(len(examples))[:n])
    return [examples[i] for i in keep]


def make_splits(config: FinetuneConfig, task, out: Path, resuming: bool) -> tuple[dict, dict]:
    train, dev, extra = task.load(config.data_dir, config.train_file, config.dev_file)
    every = train + dev + [e for v in extra.values() for e in v]
    ids = [e.id for e in every]
    if len(set(ids)) != len(ids):
        raise UserError("example ids repeat across the train / dev files (give them different names)")
    reuse = out / "split.json" if resuming else (Path(config.split_file) if config.split_file else None)
    if reuse is not None:
        splits, split_record = load_split(reuse, task.name, every)
    else:
        splits, split_record = build_splits(
            task.name,
            train,
            dev,
            extra,
            config.split,
            config.split_fractions,
            config.split_seed,
            config.validation_fraction,
            group_of=task.group_of,
        )
    empty = [name for name, examples in splits.items() if not examples]
    if empty:
        raise UserError(f"split {empty[0]!r} is empty: use more data or other --split_fractions")
    splits["train"] = seeded_subset(splits["train"], config.max_train_examples, config.split_seed)
    return splits, split_record


if __name__ == "__main__":
    run_cli(main)
