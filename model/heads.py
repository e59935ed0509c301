"""Fine-tuning heads on top of either backbone encoder: sequence classification and extractive QA."""

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from model.common import no_weight_decay_names
from utils.errors import UserError

POOLINGS = ("cls", "pooler", "mean")
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


@dataclass
class ClassifierConfig:
    num_labels: int
    pooling: str = "cls"  # cls: first token; pooler: BERT's tanh pooler; mean: mean over non-pad tokens
    hidden_sizes: list[int] = field(default_factory=list)  # [] = one Linear; else an MLP with these widths
    activation: str = "gelu"  # between the MLP's layers
    dropout: float = 0.1  # before every Linear

    def __post_init__(self):
        if not isinstance(self.num_labels, int) or self.num_labels < 1:
            raise UserError(f"classifier: num_labels={self.num_labels!r} must be a positive integer")
        if self.pooling not in POOLINGS:
            raise UserError(f"classifier: pooling={self.pooling!r} is not one of {', '.join(POOLINGS)}")
        if self.activation not in ACTIVATIONS:
            raise UserError(
                f"classifier: activation={self.activation!r} is not one of {', '.join(ACTIVATIONS)}"
            )
        if any(not isinstance(h, int) or h < 1 for h in self.hidden_sizes):
            raise UserError(f"classifier: hidden_sizes={self.hidden_sizes!r} must be positive integers")
        if not 0 <= self.dropout < 1:
            raise UserError(f"classifier: dropout={self.dropout!r} must lie in [0, 1)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "classifier") -> "ClassifierConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"{source}: unknown key {unknown[0]!r} (known keys: {', '.join(sorted(known))})")
        if "num_labels" not in d:
            raise UserError(f"{source}: missing key 'num_labels'")
        return cls(**d)


class EncoderModel(nn.Module):
    """Shared by the fine-tuning models: the encoder, its config, ELC weights and weight-decay groups."""

    def __init__(self, encoder: nn.Module, uses_pooler: bool = False):
        super().__init__()
        if not uses_pooler:
            encoder.pooler = None  # no gradient would reach it; the pretrained checkpoint keeps its weights
        self.encoder = encoder
        self.config = encoder.config  # the backbone's ModelConfig

    def softmaxed_layer_weights(self) -> dict[str, torch.Tensor]:
        return self.encoder.softmaxed_layer_weights()

    def no_weight_decay(self) -> set[str]:
        return no_weight_decay_names(self)


@torch.no_grad()
def init_head(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, std)
            m.bias.zero_()


def mlp(width: int, cfg: ClassifierConfig) -> nn.Sequential:
    """width -> *cfg.hidden_sizes -> cfg.num_labels: dropout before every Linear, the activation between."""
    layers = []
    for h in cfg.hidden_sizes:
        layers += [nn.Dropout(cfg.dropout), nn.Linear(width, h), ACTIVATIONS[cfg.activation]()]
        width = h
    return nn.Sequential(*layers, nn.Dropout(cfg.dropout), nn.Linear(width, cfg.num_labels))


class SequenceClassificationModel(EncoderModel):
    def __init__(self, encoder: nn.Module, cfg: ClassifierConfig):
        if cfg.pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise UserError(
                f"classifier: pooling='pooler' needs a bert backbone, got {encoder.config.backbone!r}"
            )
        super().__init__(encoder, uses_pooler=cfg.pooling == "pooler")
        self.classifier_config = cfg
        self.classifier = mlp(self.config.hidden_size, cfg)
        init_head(self.classifier, self.config.initializer_range)

    def pool(self, out, attention_mask) -> torch.Tensor:
        pooling = self.classifier_config.pooling
        if pooling == "pooler":
            return out.pooled_output  # [B,H]
        h = out.last_hidden_state  # [B,S,H]
        if pooling == "cls":
            return h[:, 0]
        if attention_mask is None:
            return h.mean(1)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # [B,S,1]
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # mean over real tokens, no host sync

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.pool(out, attention_mask))  # [B,num_labels]


class QuestionAnsweringModel(EncoderModel):
    """Extractive QA: a start and an end logit for every token, from one Linear (cfg None, as BERT's QA
    head) or from the MLP of a ClassifierConfig with num_labels 2 (its pooling is unused)."""

    def __init__(self, encoder: nn.Module, cfg: ClassifierConfig | None = None):
        super().__init__(encoder)
        if cfg is not None and cfg.num_labels != 2:
            raise UserError(f"question answering head: num_labels={cfg.num_labels} must be 2 (start, end)")
        width = self.config.hidden_size
        self.qa_outputs = nn.Linear(width, 2) if cfg is None else mlp(width, cfg)
        init_head(self.qa_outputs, self.config.initializer_range)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.encoder(input_ids, attention_mask, token_type_ids).last_hidden_state  # [B,S,H]
        start, end = self.qa_outputs(h).unbind(-1)  # [B,S] each
        return start, end
