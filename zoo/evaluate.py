"""Re-evaluate a stored model state with the engines' own code, rebuilt from the run's run_args.json:
fine-tuned states on a split of their saved split.json (finetune.evaluate.evaluate_split), pretrained
states on the validation batches their run logged (training.loop.Trainer.evaluate). Used to check that
a checkpoint reproduces its recorded metrics, and to score sparse twins."""

from functools import lru_cache
from pathlib import Path

import torch

from utils.files import read_json


def _finetune_config(run_folder: Path):
    """The fine-tuning run's configuration, rebuilt from its run_args.json."""
    from finetune.args import FinetuneConfig
    from training.run_config import from_record

    return from_record(FinetuneConfig, read_json(Path(run_folder) / "run_args.json", "run record"))


def _pretrain_config(run_folder: Path):
    from training.pretrain_args import PretrainConfig
    from training.run_config import from_record

    return from_record(PretrainConfig, read_json(Path(run_folder) / "run_args.json", "run record"))


@lru_cache(maxsize=8)
def _finetune_data(run_folder: str, split: str):
    """(task, special ids, examples, features) of one split of a fine-tuning run (cached: sparse twins of
    one run share them)."""
    import train_finetune
    from finetune.tasks import build_task

    args = _finetune_config(Path(run_folder))
    tokenizer, special = train_finetune.load_vocab(args.vocab_path)
    task = build_task(args.task, tokenizer, special, args)
    splits, _ = train_finetune.make_splits(args, task, Path(run_folder), resuming=True)
    examples = splits[split]
    if split == "train":  # the engine scores a fixed subset of train
        examples = train_finetune.seeded_subset(examples, args.eval_train_subset, args.split_seed)
    return task, special, examples, task.featurize(examples)


def evaluate_finetuned(run_folder, model, split: str = "validation", device: str = "cpu"):
    """({"loss", metrics...}, per-example records) of a fine-tuned model on a split of its run."""
    from finetune.evaluate import evaluate_split

    args = _finetune_config(Path(run_folder))
    task, special, examples, features = _finetune_data(str(Path(run_folder).resolve()), split)
    precision = args.mixed_precision if torch.device(device).type == "cuda" else "no"
    model.to(device)
    return evaluate_split(
        model, task, examples, features, args.eval_batch_size, torch.device(device), precision, special.pad
    )


def evaluate_pretrained(run_folder, model, device: str = "cpu") -> dict:
    """{"loss", "mlm_loss", "mlm_acc", ...} over the validation batches the run logged every epoch."""
    from training.distributed import DistInfo
    from training.loop import Trainer, TrainerConfig
    from training.pretraining_objective import PretrainingObjective
    from training.pretraining_phases import build_pretraining_data

    args = _pretrain_config(Path(run_folder))

    data = build_pretraining_data(args, args.seq_length, "validation")
    objective = PretrainingObjective(args.label_smoothing, args.nsp)
    precision = args.mixed_precision if torch.device(device).type == "cuda" else "no"
    no_update = torch.optim.SGD(model.parameters(), lr=0.0)  # Trainer wants one; evaluate never steps
    trainer = Trainer(
        model,
        no_update,
        None,
        objective,
        DistInfo(device=torch.device(device)),
        TrainerConfig(precision=precision),
    )
    accum = args.gradient_accumulation
    batches = (
        data.batch(i, args.batch_size, 0, 1, m, accum)
        for i in range(args.validation_batches)
        for m in range(accum)
    )
    return trainer.evaluate(batches)


def load_state_model(zoo_dir, row: dict, device: str = "cpu"):
    """The model of a manifest row: PretrainingModel (pretraining) or encoder + head (fine-tuned, sparse)."""
    from finetune.modeling import load_finetuned
    from model.io import load_model

    path = Path(zoo_dir) / row["checkpoint"]
    return load_model(path, device) if row["stage"] == "pretrain" else load_finetuned(path, device)


def reproduce(zoo_dir, row: dict, device: str = "cpu") -> dict:
    """The validation metrics of a manifest row, recomputed from its checkpoint (same keys as metric.*)."""
    model = load_state_model(zoo_dir, row, device)
    folder = Path(zoo_dir) / "runs" / row["run_id"]
    if row["stage"] == "pretrain":
        return evaluate_pretrained(folder, model, device)
    return evaluate_finetuned(folder, model, "validation", device)[0]
