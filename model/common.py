"""Pieces shared by both backbones: output containers, the attention-mask shape, unpadding, weight-decay
groups."""

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor  # [B,S,H]
    hidden_states: list[torch.Tensor] | None  # embedding output + every layer's output, each [B,S,H]
    pooled_output: torch.Tensor | None  # [B,H] (bert pooler: tanh(dense(h[:, 0]))), None for ltg


@dataclass
class PreTrainingOutput:
    mlm_logits: torch.Tensor  # [B,P,vocab_size] at masked_positions, or [B,S,vocab_size]
    nsp_logits: torch.Tensor | None  # [B,2], None without an NSP head


def key_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B,S] with 1 = token, 0 = pad  ->  bool [B,1,1,S], True = may be attended to (SDPA's convention).

    None stays None, so SDPA receives no mask and may pick the flash kernel.
    """
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()


@dataclass
class Unpadded:
    """Where a padded batch's real tokens are. Token-wise layers (projections, feed-forward, LayerNorm)
    then run on the T real tokens [T,H] only; attention scatters them back to [B,S] around SDPA.

    token_index [T]: flat positions (row * S + column) of the real tokens, ascending, made on the host
    (data.pretraining.with_token_index, in the loader thread) so that unpadding needs no device sync.
    """

    token_index: torch.Tensor  # [T]
    batch: int
    seq_len: int

    @staticmethod
    def of(x: torch.Tensor, attention_mask, token_index) -> "Unpadded | None":
        """For x [B,S,H]; None (run padded) unless the batch has both a mask and a token index."""
        if attention_mask is None or token_index is None:
            return None
        return Unpadded(token_index, x.size(0), x.size(1))

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1).index_select(0, self.token_index)  # [B,S,...] -> [T,...]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.batch * self.seq_len, *x.shape[1:])  # padding positions hold zeros
        return out.index_copy(0, self.token_index, x).view(self.batch, self.seq_len, *x.shape[1:])


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


def layer_weights_of(encoder: nn.Module) -> dict[str, torch.Tensor]:
    """Softmaxed ELC weights for logging; empty when the encoder has no layer weighting."""
    weighting = getattr(encoder, "layer_weighting", None)
    return {} if weighting is None else weighting.softmaxed()
