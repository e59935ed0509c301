"""Save and load our checkpoints: a folder with model.safetensors + config.json, nothing else needed."""

import json
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from model.config import ModelConfig
from model.pretraining_model import PretrainingModel
from utils.errors import UserError
from utils.files import atomic_write

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def save_model(model: nn.Module, directory) -> None:
    """Write model.safetensors and config.json into directory (created if needed), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    weights = save(state, metadata={"format": "pt"})  # bytes
    atomic_write(directory / WEIGHTS_NAME, lambda f: f.write(weights))
    model.config.to_json(directory / CONFIG_NAME)


def read_safetensors(path, device="cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (never runs code); a missing or corrupt file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError) as err:
        raise UserError(f"{path}: cannot read safetensors weights ({err})") from None


# weights that checkpoints saved before 2026-12-01 hold and today's model may lack: BERT's pooler where no
# head reads it (a fine-tuning head other than pooling='pooler', or no NSP head; it was never trained);
# dropped on load
UNUSED_BEFORE = ("encoder.pooler.",)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load that reports the first missing, unexpected or misshapen key in one line."""
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(UNUSED_BEFORE)}
    for key, value in state.items():
        if key not in own:
            raise UserError(f"{source}: unexpected weight {key!r}")
        if own[key].shape != value.shape:
            want = list(own[key].shape)
            raise UserError(
                f"{source}: weight {key!r} has shape {list(value.shape)}, the config needs {want}"
            )
    missing = [key for key in own if key not in state]
    if missing:
        raise UserError(f"{source}: missing weight {missing[0]!r}")
    model.load_state_dict(state, strict=True)


def load_model(directory, device="cpu") -> PretrainingModel:
    """Rebuild a PretrainingModel from directory/config.json alone and load directory/model.safetensors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"checkpoint folder not found: {directory}")
    config = ModelConfig.from_json(directory / CONFIG_NAME)
    state = read_safetensors(directory / WEIGHTS_NAME, device)
    with torch.device(device):
        model = PretrainingModel(config)
    load_state(model, state, str(directory / WEIGHTS_NAME))
    return model


def load_any(directory, flag: str = "") -> PretrainingModel:
    """One of our checkpoint folders (config.json has "backbone") or a Hugging Face BERT folder (converted
    with model.convert.load_hf_bert). Errors name `flag` (the command-line flag that gave the folder)."""
    from model.convert import load_hf_bert  # model.convert imports this module

    directory = Path(directory)
    where = f"{flag} {directory}".lstrip()
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        raise UserError(
            f"{where}: no readable {CONFIG_NAME} (one of our checkpoints or a Hugging Face BERT folder)"
        ) from None
    if isinstance(config, dict) and "backbone" in config:
        return load_model(directory)
    return load_hf_bert(directory)
