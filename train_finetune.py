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
The optimizer step is training/loop.py's (shared with pretraining); this file wires fine-tuning to it.
"""

import json
import os
from pathlib import Path

import numpy as np

from finetune.args import differing_args, parse_args
from finetune.batching import collate, length_grouped_batches, micro_batches
from finetune.evaluate import evaluate_split, json_safe
from finetune.modeling import (
    build_model,
    check_vocabulary,
    freeze,
    load_finetuned,
    load_pretrained,
    shadow_builder,
)
from finetune.splits import build_splits, load_split, save_split
from finetune.tasks import build_task
from model.heads import ClassifierConfig
from training.checkpoint import CheckpointWriter, latest_checkpoint, load_checkpoint, rng_state, set_rng_state
from training.cli import run_distributed
from training.distributed import DistInfo, barrier
from training.loop import Trainer, TrainerConfig
from training.metrics import MetricsLogger
from training.optim import optimizer_from_args
from training.precision import resolve
from training.schedules import build_schedule
from utils.errors import UserError, run_cli


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


def make_splits(args, task, out: Path, resuming: bool) -> dict:
    train, dev, extra = task.load(args.data_dir, args.train_file, args.dev_file)
    ids = [e.id for e in train + dev + [e for v in extra.values() for e in v]]
    if len(set(ids)) != len(ids):
        raise UserError("example ids repeat across the train / dev files (give them different names)")
    reuse = out / "split.json" if resuming else (Path(args.split_file) if args.split_file else None)
    if reuse is not None:
        splits, record = load_split(reuse, task.name, train + dev + [e for v in extra.values() for e in v])
    else:
        splits, record = build_splits(
            task.name,
            train,
            dev,
            extra,
            args.split,
            args.split_fractions,
            args.split_seed,
            args.validation_fraction,
            group_of=task.group_of,
        )
    empty = [name for name, examples in splits.items() if not examples]
    if empty:
        raise UserError(f"split {empty[0]!r} is empty: use more data or other --split_fractions")
    splits["train"] = seeded_subset(splits["train"], args.max_train_examples, args.split_seed)
    return splits, record


def setup(args, info: DistInfo):
    """Everything that can refuse the run, before anything is written."""
    out = Path(args.output_dir)
    resume = latest_checkpoint(out, prefix="epoch") if args.resume else None
    started = (out / "metrics.jsonl").exists()
    # --resume of a run that stopped before its first checkpoint was in place starts it over
    if args.resume and resume is None and not started:
        raise UserError(f"--resume: no checkpoints/epoch_E in {out}")
    if not args.resume and started:
        raise UserError(f"--output_dir {out} already holds a run: pass --resume or choose another folder")
    if resume is None and args.checkpoint_path is None:
        raise UserError(f"--checkpoint_path is required: {out} has no checkpoint yet to --resume from")
    args.mixed_precision = resolve(args.mixed_precision, info.device)  # saved and compared resolved
    tokenizer, special = load_vocab(args.vocab_path)
    task = build_task(args.task, tokenizer, special, args)
    splits, record = make_splits(args, task, out, resuming=resume is not None)
    state = None
    if resume is not None:
        model, state, saved = load_checkpoint(resume, load=load_finetuned)
        args.checkpoint_path = args.checkpoint_path or saved.get("checkpoint_path")
        diffs = differing_args(saved, vars(args))
        if diffs:
            raise UserError(f"--resume: this run differs from {resume} in {', '.join(diffs)}")
    else:
        encoder = load_pretrained(args.checkpoint_path)
        check_vocabulary(tokenizer, encoder.config, args.vocab_path, args.checkpoint_path)
        head = ClassifierConfig(
            task.num_labels, args.pooling, args.head_hidden_sizes, args.head_activation, args.head_dropout
        )
        model = build_model(args.task, encoder, head, args.head_seed)
    freeze(model, args.freeze_encoder, args.freeze_layers)
    if args.max_seq_length > model.config.max_position_embeddings:
        raise UserError(
            f"--max_seq_length {args.max_seq_length} exceeds the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}"
        )
    if args.batch_size % (info.world_size * args.gradient_accumulation):
        raise UserError(
            f"--batch_size {args.batch_size} must divide by world size {info.world_size} x "
            f"--gradient_accumulation {args.gradient_accumulation}"
        )
    task.use_token_types = model.config.type_vocab_size > 0
    train_features = task.featurize(splits["train"])
    if len(train_features) < args.batch_size:
        raise UserError(
            f"the train split has {len(train_features)} inputs, fewer than --batch_size {args.batch_size}"
        )
    return task, special, splits, record, train_features, model, state, resume


def main(argv=None) -> None:
    run_distributed(finetune, parse_args(argv))


def finetune(args, info: DistInfo) -> None:
    task, special, splits, record, train_features, model, state, resume = setup(args, info)
    out = Path(args.output_dir)
    if info.is_main:
        if state is None:  # records of a run that stopped before its first checkpoint: redone below
            (out / "metrics.jsonl").unlink(missing_ok=True)
        save_split(record, out / "split.json")
        write_atomic(out / "run_args.json", json.dumps(vars(args), indent=2, sort_keys=True))
    lengths = np.array([len(f["input_ids"]) for f in train_features])
    steps_per_epoch = len(lengths) // args.batch_size  # the partial last batch is dropped
    total_steps = steps_per_epoch * args.epochs

    model.to(info.device)
    head_prefixes = {
        f"{name}.": args.head_learning_rate for name, _ in model.named_children() if name != "encoder"
    }
    optimizer = optimizer_from_args(model, args, lr_overrides=head_prefixes)
    warmup = int(total_steps * args.warmup_proportion)
    schedule = build_schedule(args.scheduler, optimizer, total_steps, warmup, args.min_lr_factor)
    config = TrainerConfig(
        precision=args.mixed_precision, max_gradient=args.max_gradient, seed=args.seed, compile=args.compile
    )
    trainer = Trainer(model, optimizer, schedule, task, dist=info, config=config)
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        set_rng_state(state["rng"])
    start_epoch = state["epoch"] if state is not None else 0  # the last epoch recorded

    # evaluation sets: the held-out splits whole, train capped by --eval_train_subset (a fixed subset)
    evaluated = {"train": seeded_subset(splits["train"], args.eval_train_subset, args.split_seed)}
    evaluated.update({name: examples for name, examples in splits.items() if name != "train"})
    eval_features = (
        {name: task.featurize(examples) for name, examples in evaluated.items()} if info.is_main else {}
    )

    writer = CheckpointWriter(out, prefix="epoch", build=shadow_builder(model.config, model.finetune_info))
    writer = writer if info.is_main else None
    logger = MetricsLogger(out, info.is_main, trainer.step, total_steps, tensorboard=args.tensorboard)
    logger.message(
        f"{args.task}: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} examples; "
        f"{steps_per_epoch} steps per epoch, world size {info.world_size}, {args.mixed_precision} precision"
        + (f" (resumed from {resume})" if resume else "")
    )

    def records(epoch: int) -> None:
        """Evaluate every split, write metrics line + predictions, then the checkpoint (rank 0)."""
        if info.is_main:
            line = {"epoch": epoch}
            for name, examples in evaluated.items():
                scores, preds = evaluate_split(
                    trainer.model,
                    task,
                    examples,
                    eval_features[name],
                    args.eval_batch_size,
                    info.device,
                    args.mixed_precision,
                    special.pad,
                )
                line[name] = json_safe(scores)
                logger.scalars(trainer.step, scores, f"eval_{name}")
                if name != "train":
                    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in preds)
                    write_atomic(out / "predictions" / f"epoch_{epoch}_{name}.jsonl", text)
                    if task.name == "squad":  # the official format: {question id: answer text}
                        official = {r["id"]: r["prediction"] for r in preds}
                        write_atomic(out / "predictions" / f"epoch_{epoch}_{name}.json", json.dumps(official))
            logger.log(trainer.step, line)
            logger.message(json.dumps(line))
            full = {
                "trainer": trainer.state_dict(),
                "rng": rng_state(),
                "epoch": epoch,
                "world_size": info.world_size,
            }
            summary = {"epoch": epoch, "optimizer_steps": trainer.step, "finetune": model.finetune_info}
            writer.save(epoch, trainer.model, full, vars(args), True, summary)
        barrier(info)

    def after_step(t: Trainer) -> None:
        if t.step % args.log_freq == 0 or t.step % steps_per_epoch == 0:
            values = t.collect_metrics()
            logger.scalars(t.step, {k: v for k, v in values.items() if k != "step"}, "train")
            logger.progress(t.step, values)
        else:
            logger.progress(t.step)

    def epoch_batches(epoch: int):
        """This rank's micro-batches of every step of `epoch` (a pure function of --seed and epoch)."""
        parts = info.world_size * args.gradient_accumulation
        for batch in length_grouped_batches(
            lengths, args.batch_size, [args.seed, epoch], args.bucket_batches
        ):
            mine = micro_batches(batch, parts)[info.rank * args.gradient_accumulation :][
                : args.gradient_accumulation
            ]
            yield [collate([train_features[i] for i in m], special.pad, task.label_keys) for m in mine]

    try:
        if state is None:
            records(0)
        for epoch in range(start_epoch + 1, args.epochs + 1):
            if args.stop_at_epoch is not None and epoch > args.stop_at_epoch:
                break  # as if the job's time ran out: --resume continues from here
            trainer.fit(epoch_batches(epoch), epoch * steps_per_epoch, callbacks=[after_step])
            records(epoch)
    finally:
        if writer is not None:
            writer.wait()
        logger.close()
    if info.is_main:
        print(
            f"done: {out / 'metrics.jsonl'}, predictions in {out / 'predictions'}, checkpoints in "
            f"{out / 'checkpoints'}"
        )


if __name__ == "__main__":
    run_cli(main)
