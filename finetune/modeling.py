"""The fine-tuning model: a pretrained encoder (ours or Hugging Face) plus a freshly seeded task head.

A fine-tuning checkpoint (checkpoints/epoch_E/) is a training/checkpoint.py folder: model.safetensors
holds encoder + head, config.json the encoder's ModelConfig, checkpoint.json {"finetune": {"task",
"head"}} the head. `load_finetuned(dir)` rebuilds it.
"""

import json
from pathlib import Path

import torch

from model.config import ModelConfig
from model.encoder import Encoder
from model.heads import ClassifierConfig, QuestionAnsweringModel, SequenceClassificationModel
from model.io import CONFIG_NAME, WEIGHTS_NAME, load_any, load_state, read_safetensors
from utils.errors import UserError


def load_pretrained(path) -> torch.nn.Module:
    """The encoder of one of our checkpoints or a Hugging Face BERT folder (model.io.load_any), or of a
    fine-tuned epoch_E folder (intermediate-task transfer)."""
    path = Path(path)
    if (path / "checkpoint.json").is_file() and "finetune" in (path / "checkpoint.json").read_text():
        return load_finetuned(path).encoder
    return load_any(path, "--checkpoint_path").encoder


def check_vocabulary(tokenizer, config: ModelConfig, vocab_path, checkpoint_path) -> None:
    """The tokenizer must be the one the checkpoint names in its args.json (pretraining records it);
    without that record (e.g. a Hugging Face folder), its size must equal the model's vocab_size."""
    from data.tokenization import load_tokenizer, tokenizer_hash

    size = tokenizer.get_vocab_size()
    recorded = None
    try:
        recorded = json.loads((Path(checkpoint_path) / "args.json").read_text()).get("vocab_path")
    except (OSError, ValueError, AttributeError):
        pass
    if recorded and Path(recorded).is_file() and Path(recorded).suffix == ".json":
        trained_with = load_tokenizer(recorded)
        if tokenizer_hash(trained_with) != tokenizer_hash(tokenizer):
            raise UserError(
                f"--vocab_path {vocab_path} ({size} tokens) is not the tokenizer {checkpoint_path} was "
                f"trained with ({recorded}, {trained_with.get_vocab_size()} tokens)"
            )
    elif size != config.vocab_size:
        raise UserError(
            f"--vocab_path {vocab_path} has {size} tokens but --checkpoint_path {checkpoint_path} "
            f"expects a vocabulary of {config.vocab_size}"
        )


def build_model(task, encoder, head: ClassifierConfig | None, head_seed: int) -> torch.nn.Module:
    """Encoder + task head; the head's random init depends only on head_seed (not on what ran before).
    SQuAD: head None is one Linear (checkpoints from before SQuAD had an MLP option record None)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(head_seed)
        if task == "squad":
            model = QuestionAnsweringModel(encoder, head)
        else:
            model = SequenceClassificationModel(encoder, head)
    return model


def finetune_record(task: str, head: ClassifierConfig | None) -> dict:
    """What rebuilds a fine-tuned model besides its encoder config: checkpoint.json's "finetune" entry."""
    return {"task": task, "head": head.to_dict() if head is not None else None}


def read_finetune_record(directory) -> dict:
    """The "finetune" entry of a fine-tuning checkpoint's checkpoint.json (see finetune_record)."""
    try:
        return json.loads((Path(directory) / "checkpoint.json").read_text())["finetune"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"{directory}: not a fine-tuning checkpoint (checkpoint.json without 'finetune')"
        ) from None


def freeze(model, freeze_encoder: bool, freeze_layers: int) -> None:
    """--freeze_encoder: train the head only; --freeze_layers N: embeddings and the first N layers fixed."""
    encoder = model.encoder
    n_layers = len(encoder.layers)
    if freeze_layers > n_layers:
        raise UserError(f"--freeze_layers {freeze_layers}: the encoder has only {n_layers} layers")
    if freeze_encoder:
        encoder.requires_grad_(False)
    elif freeze_layers > 0:
        encoder.embeddings.requires_grad_(False)
        for layer in encoder.layers[:freeze_layers]:
            layer.requires_grad_(False)


def shadow_builder(config: ModelConfig, info: dict):
    """A CPU twin factory for training/checkpoint.py's writer (it copies the weights into the twin)."""

    def build():
        encoder = Encoder(config)
        head = ClassifierConfig.from_dict(info["head"]) if info["head"] is not None else None
        return build_model(info["task"], encoder, head, head_seed=0)

    return build


def load_finetuned(directory, device="cpu") -> torch.nn.Module:
    """A fine-tuned model from checkpoints/epoch_E/ (encoder + head)."""
    directory = Path(directory)
    info = read_finetune_record(directory)
    config = ModelConfig.from_json(directory / CONFIG_NAME)
    with torch.device(device):
        model = shadow_builder(config, info)()
    load_state(model, read_safetensors(directory / WEIGHTS_NAME, device), str(directory / WEIGHTS_NAME))
    return model
