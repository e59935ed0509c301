"""From-scratch BERT / LTG-BERT / ELC-BERT models. See model/README section in the repository README."""

from model.common import EncoderOutput, PretrainingOutput
from model.config import ModelConfig
from model.pretraining_model import PretrainingModel

__all__ = ["EncoderOutput", "ModelConfig", "PretrainingModel", "PretrainingOutput"]
