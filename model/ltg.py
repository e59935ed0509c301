"""LTG-BERT (Samuel et al. 2023), the backbone of ELC-BERT: no absolute positions, disentangled
relative-position attention, pre- and post-LayerNorm around attention, GEGLU feed-forward.

Reference: ltgoslo/ltg-bert training/model.py and ltgoslo/elc-bert models/*.py. Deliberate deviations:
- query/key/value are one Linear of 3H (the reference has in_proj_qk of 2H and in_proj_v of H; same init);
  the relative embedding goes through the query/key rows only, as in the reference.
- attention runs through scaled_dot_product_attention with the position terms as an additive bias.
- the NSP head (LTG's NextSentenceClassifier) gives 2 logits instead of 1, to match BERT's interface.
With ELC layer weighting a layer stores its own contribution (no residual), as in elc-bert: attn + ffn(attn)
under "base" (its base file), attn + ffn(x + attn) under zero/normalized/weighted_output (its other files)
and under our own "base_residual".
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.common import zero_vocab_padding


@dataclass
class LtgOptions:
    """LTG-BERT's own knobs: flat keys of ModelConfig, read here as config.<name> (rule: model/config.py)."""

    position_bucket_size: int = 32  # relative positions: exact within +-bucket/2, log-bucketed beyond


def make_log_bucket_position(relative_pos: torch.Tensor, bucket_size: int, max_position: int) -> torch.Tensor:
    """Relative distance -> bucket: exact within +-bucket_size/2, log-spaced buckets out to max_position."""
    sign = torch.sign(relative_pos)
    mid = bucket_size // 2
    abs_pos = torch.where(
        (relative_pos < mid) & (relative_pos > -mid),
        mid - 1,  # placeholder inside the exact range, keeps log() finite
        torch.abs(relative_pos).clamp(max=max_position - 1),
    )
    log_pos = (
        torch.ceil(torch.log(abs_pos / mid) / math.log((max_position - 1) / mid) * (mid - 1)).int() + mid
    )
    return torch.where(abs_pos <= mid, relative_pos, log_pos * sign).long()


def relative_position_indices(bucket_size: int, max_position: int) -> torch.Tensor:
    """[P,P] row index into the relative embedding table [2*bucket_size-1, H] for query i, key j."""
    pos = torch.arange(max_position)
    relative = pos[:, None] - pos[None, :]  # [P,P] = i - j
    return bucket_size - 1 + make_log_bucket_position(relative, bucket_size, max_position)


def ltg_std(hidden_size: int) -> float:
    return math.sqrt(2.0 / (5.0 * hidden_size))


def trunc_normal_(tensor: torch.Tensor, std: float) -> None:
    nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


class LtgEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, h)
        self.word_norm = nn.LayerNorm(h, eps=eps, elementwise_affine=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.relative_embedding = nn.Parameter(torch.empty(2 * config.position_bucket_size - 1, h))
        self.relative_norm = nn.LayerNorm(h, eps=eps)  # affine, as in the reference

    def forward(self, input_ids, token_type_ids=None):
        """-> (x [B,S,H], the extra layer inputs: the relative embedding [R,H], R = 2*bucket-1);
        token_type_ids is ignored (LTG has no token-type embedding)."""
        x = self.dropout(self.word_norm(self.word_embeddings(input_ids)))  # [B,S,H]
        return x, (self.relative_norm(self.relative_embedding),)


class LtgAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.num_heads, self.hidden_size = config.num_attention_heads, h
        self.qkv = nn.Linear(h, 3 * h)  # fused query, key, value
        self.out = nn.Linear(h, h)
        self.pre_norm = nn.LayerNorm(h, eps=eps, elementwise_affine=False)
        self.post_norm = nn.LayerNorm(h, eps=eps)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)
        self.scale = 1.0 / math.sqrt(3 * config.head_size)  # three score terms: c2c, c2p, p2c
        # derived from the config, so not saved in checkpoints
        indices = relative_position_indices(config.position_bucket_size, config.max_position_embeddings)
        self.register_buffer("position_indices", indices, persistent=False)

    def forward(self, x, mask, relative_embedding):
        # x [B,S,H]; mask bool [B,1,1,S] (True = attend) or None; relative_embedding [R,H]
        qkv = self.qkv(self.pre_norm(x))  # [B,S,3H]
        B, S, H = qkv.size(0), qkv.size(1), qkv.size(2) // 3
        nh, hd = self.num_heads, H // self.num_heads
        q, k, v = qkv.view(B, S, 3, nh, hd).permute(2, 0, 3, 1, 4)  # [B,nh,S,hd]
        # positions through the query/key projection (with its bias): [R,2H] -> [nh,R,hd] each
        pos = F.linear(self.dropout(relative_embedding), self.qkv.weight[: 2 * H], self.qkv.bias[: 2 * H])
        q_pos, k_pos = pos.view(-1, 2, nh, hd).permute(1, 2, 0, 3)
        index = self.position_indices[:S, :S].expand(B, nh, S, S)  # [B,nh,S,S] bucket of (i - j)
        c2p = (q @ k_pos.transpose(-1, -2)).gather(-1, index)  # [B,nh,S,S]: q_i . k_pos[idx(i,j)]
        p2c = (k @ q_pos.transpose(-1, -2)).transpose(-1, -2).gather(-2, index)  # k_j . q_pos[idx(i,j)]
        bias = (c2p + p2c) * self.scale  # [B,nh,S,S]
        if mask is not None:
            bias = bias.masked_fill(~mask, torch.finfo(bias.dtype).min)
        p = self.dropout.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p, scale=self.scale)
        y = y.transpose(1, 2).reshape(B, S, H)
        return self.dropout(self.post_norm(self.out(y)))  # [B,S,H]


class GeGLU(nn.Module):
    def forward(self, x):
        x, gate = x.chunk(2, dim=-1)
        return x * F.gelu(gate, approximate="tanh")


class LtgFeedForward(nn.Module):
    def __init__(self, config):
        super().__init__()
        h, i, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
        self.mlp = nn.Sequential(
            nn.LayerNorm(h, eps=eps, elementwise_affine=False),
            nn.Linear(h, 2 * i, bias=False),
            GeGLU(),
            nn.LayerNorm(i, eps=eps, elementwise_affine=False),  # on the intermediate activations
            nn.Linear(i, h, bias=False),
            nn.Dropout(config.hidden_dropout_prob),
        )

    def forward(self, x):
        return self.mlp(x)  # [B,S,H]


class LtgLayer(nn.Module):
    def __init__(self, config, residual: bool):
        super().__init__()
        self.attention = LtgAttention(config)
        self.ffn = LtgFeedForward(config)
        self.residual = residual  # False under ELC weighting: the mix of stored outputs is the residual
        # elc-bert's base file feeds the FFN the attention output alone; every other form x + attention
        self.ffn_sees_input = config.layer_weighting != "base"

    def forward(self, x, mask, relative_embedding):
        a = self.attention(x, mask, relative_embedding)
        out = a + self.ffn(x + a if self.ffn_sees_input else a)  # this layer's contribution
        return x + out if self.residual else out


class LtgMLMHead(nn.Module):
    """elc-bert's MaskClassifier: LN, dense, GELU, LN (both non-affine), dropout, tied decoder with bias."""

    def __init__(self, config):
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.vocab_size = config.vocab_size
        self.transform = nn.Sequential(
            nn.LayerNorm(h, eps=eps, elementwise_affine=False),
            nn.Linear(h, h),
            nn.GELU(),
            nn.LayerNorm(h, eps=eps, elementwise_affine=False),
            nn.Dropout(config.hidden_dropout_prob),  # after the LN: dropout's zeros reach the decoder
        )
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))
        trunc_normal_(self.transform[1].weight, ltg_std(h))
        nn.init.zeros_(self.transform[1].bias)

    def forward(self, h, word_embeddings):
        # h [B,P,H] or [B,S,H]; word_embeddings [V_padded,H]
        logits = F.linear(self.transform(h), word_embeddings, self.bias)
        return logits[..., : self.vocab_size]


class LtgNSPHead(nn.Module):
    """LTG's NextSentenceClassifier on the first token, with 2 outputs."""

    def __init__(self, config):
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.mlp = nn.Sequential(
            nn.LayerNorm(h, eps=eps, elementwise_affine=False),
            nn.Linear(h, h),
            nn.GELU(),
            nn.Dropout(config.hidden_dropout_prob),
            nn.LayerNorm(h, eps=eps, elementwise_affine=False),
            nn.Linear(h, 2),
        )
        for linear in (m for m in self.mlp if isinstance(m, nn.Linear)):
            trunc_normal_(linear.weight, ltg_std(h))
            nn.init.zeros_(linear.bias)

    def forward(self, pooled_output, last_hidden_state):
        return self.mlp(last_hidden_state[:, 0])  # [B,2]


@torch.no_grad()
def init_ltg_weights(encoder: nn.Module, config) -> None:
    """Truncated normal (std sqrt(2/(5H)), cut at +-2 std), zero biases; layer i's FFN scaled by
    sqrt(1/(2(i+1)))."""
    std = ltg_std(config.hidden_size)
    trunc_normal_(encoder.embeddings.word_embeddings.weight, std)
    zero_vocab_padding(encoder.embeddings.word_embeddings, config.vocab_size)
    trunc_normal_(encoder.embeddings.relative_embedding, std)
    for i, layer in enumerate(encoder.layers):
        for linear in (layer.attention.qkv, layer.attention.out):
            trunc_normal_(linear.weight, std)
            linear.bias.zero_()
        for linear in (m for m in layer.ffn.modules() if isinstance(m, nn.Linear)):  # in, then out
            trunc_normal_(linear.weight, std)
            linear.weight *= math.sqrt(1.0 / (2.0 * (i + 1)))
