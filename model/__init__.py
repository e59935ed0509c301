"""From-scratch BERT / LTG-BERT / ELC-BERT models. See model/README section in the repository README."""

from model.common import EncoderOutput, PreTrainingOutput
from model.config import ModelConfig
from model.pretraining import PreTrainingModel

__all__ = ["EncoderOutput", "ModelConfig", "PreTrainingModel", "PreTrainingOutput"]
