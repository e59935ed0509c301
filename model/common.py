"""Pieces shared by both backbones: output containers, the attention-mask shape, vocabulary padding, the
length check, weight-decay groups."""

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # [B,S,H]
    hidden_states: list[torch.Tensor] | None  # embedding output + every layer's output, each [B,S,H]
    pooled_output: torch.Tensor | None  # [B,H] (bert pooler: tanh(dense(h[:, 0]))), None for ltg


@dataclass
class PretrainingOutput:
    mlm_logits: torch.Tensor  # [B,P,vocab_size] at masked_positions, or [B,S,vocab_size]
    nsp_logits: torch.Tensor | None  # [B,2], None without an NSP head


def key_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B,S] with 1 = token, 0 = pad  ->  bool [B,1,1,S], True = may be attended to (SDPA's convention).

    None stays None, so SDPA receives no mask and may pick the flash kernel.
    """
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()


@torch.no_grad()
def zero_vocab_padding(embedding: nn.Embedding, vocab_size: int) -> None:
    """Rows past vocab_size (pad_vocab_to_multiple_of) start at 0 and, never looked up nor scored, stay 0
    with AdamW and LAMB alike: the whole-matrix norm in LAMB's trust ratio then equals the unpadded one."""
    embedding.weight[vocab_size:].zero_()


def check_length(input_ids: torch.Tensor, config) -> None:
    """A shape check (no host sync): longer inputs would index past the position tables."""
    if input_ids.size(1) > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {input_ids.size(1)} > max_position_embeddings={config.max_position_embeddings}"
        )


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """Parameters without weight decay: biases, LayerNorm weights, ELC layer weights (all the 1-D ones)."""
    return {name for name, p in module.named_parameters() if p.ndim < 2 or "layer_weighting" in name}
