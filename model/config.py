"""Model configuration: one dataclass, read from and written to JSON. Every knob of the model is a field.

Where a knob lives (config.json stays one flat object either way):
- a knob of one backbone is a field of that backbone's options dataclass, next to the code that reads it
  as `config.<name>`: BertOptions in model/bert.py, LtgOptions in model/ltg.py. ModelConfig inherits
  every options class, so the field is a key of ModelConfig and of config.json; nothing else to edit.
- a knob every backbone reads (sizes, dropout, ELC mixing, heads) is a field of ModelConfig below.
Give a new knob the default that reproduces the model without it: configs and checkpoints saved before
it lack the key and load with that default. An unknown key is refused (a misspelt knob never becomes a
silent default); a field's type is checked on load (bool, int, float, str).
"""

import dataclasses
from dataclasses import dataclass

from model.bert import BertOptions
from model.ltg import LtgOptions
from utils.errors import UserError
from utils.files import read_json, write_json_atomic

BACKBONES = ("bert", "ltg")
LAYER_WEIGHTINGS = ("none", "base", "zero", "normalized", "weighted_output", "base_residual")
BACKBONE_OPTIONS = (BertOptions, LtgOptions)


@dataclass
class ModelConfig(*BACKBONE_OPTIONS):
    backbone: str = "bert"  # "bert": Devlin et al. 2019; "ltg": LTG-BERT (relative positions, GEGLU)
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02  # bert's init and the fine-tuning heads'; ltg's encoder uses sqrt(2/(5H))
    # ELC-BERT layer mixing: none | base | zero | normalized | weighted_output (the reference files), or
    # base_residual (ours: base weights, layers stored as in zero; see model/layer_weighting.py)
    layer_weighting: str = "none"
    next_sentence_prediction: bool = True
    pad_vocab_to_multiple_of: int = 1  # pad embedding rows (e.g. 64) for faster matmuls; 1 = no padding
    pad_token_id: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self, source: str = "config") -> None:
        def bad(key, why):
            raise UserError(f"{source}: {key}={getattr(self, key)!r} {why}")

        if self.backbone not in BACKBONES:
            bad("backbone", f"is not one of {', '.join(BACKBONES)}")
        if self.layer_weighting not in LAYER_WEIGHTINGS:
            bad("layer_weighting", f"is not one of {', '.join(LAYER_WEIGHTINGS)}")
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                bad(key, "must be a positive integer")
        for key in ("intermediate_size", "max_position_embeddings", "pad_vocab_to_multiple_of"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                bad(key, "must be a positive integer")
        if self.hidden_size % self.num_attention_heads:
            bad("hidden_size", f"is not a multiple of num_attention_heads={self.num_attention_heads}")
        if self.backbone == "ltg" and self.type_vocab_size != 0:
            bad("type_vocab_size", "must be 0 for the ltg backbone (it has no token-type embedding)")
        if self.backbone == "bert" and self.type_vocab_size < 1 and self.next_sentence_prediction:
            bad("type_vocab_size", "must be >= 1 when next_sentence_prediction is on")
        if self.position_bucket_size < 2 or self.position_bucket_size % 2:
            bad("position_bucket_size", "must be an even number >= 2")
        if self.backbone == "ltg" and self.max_position_embeddings <= self.position_bucket_size // 2 + 1:
            bad("max_position_embeddings", "must exceed position_bucket_size / 2 + 1")
        if not 0 <= self.pad_token_id < self.vocab_size:
            bad("pad_token_id", f"must lie in [0, vocab_size={self.vocab_size})")

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_to_multiple_of
        return (self.vocab_size + m - 1) // m * m

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "ModelConfig":
        """A missing key takes its field's default (configs saved before a knob existed keep loading); an
        unknown key is an error, so a misspelt key never becomes a silent default."""
        if not isinstance(d, dict):
            raise UserError(f"{source}: expected a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise UserError(f"{source}: unknown key {unknown[0]!r} (known keys: {', '.join(fields)})")
        for name, value in d.items():
            kind = fields[name].type
            want = (int, float) if kind is float else kind
            if isinstance(value, bool) != (kind is bool) or not isinstance(value, want):
                raise UserError(f"{source}: key {name!r} must be {kind.__name__}, got {value!r}")
        config = cls.__new__(cls)
        for name, field in fields.items():
            value = d.get(name, field.default)
            setattr(config, name, float(value) if field.type is float else value)
        config.validate(source)
        return config

    @classmethod
    def from_json(cls, path) -> "ModelConfig":
        return cls.from_dict(read_json(path, "config file"), source=str(path))

    def to_json(self, path) -> None:
        write_json_atomic(path, self.to_dict())


def _check_knob_names() -> None:
    """Two declarations of one name would silently share a key: each knob is declared once."""
    seen: dict[str, str] = {}
    own = set(ModelConfig.__annotations__)
    for options in BACKBONE_OPTIONS:
        for field in dataclasses.fields(options):
            other = seen.get(field.name) or ("ModelConfig" if field.name in own else None)
            if other:
                raise TypeError(f"model knob {field.name!r} is declared by {options.__name__} and {other}")
            seen[field.name] = options.__name__


_check_knob_names()
