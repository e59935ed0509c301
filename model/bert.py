"""BERT (Devlin et al. 2019) as trained by MultiBERTs / EarlyBERTs: absolute positions, post-LayerNorm.

Numerically equal to Hugging Face's BertForPreTraining (see model/convert.py): exact-erf GELU, LayerNorm
after each residual, tanh pooler on the first token, MLM transform (dense, GELU, LayerNorm) and a decoder
tied to the word embeddings with its own bias. One deliberate difference: query, key and value are one
fused Linear of 3H (HF keeps three; import/export splits and concatenates them).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.common import zero_vocab_padding


@dataclass
class BertOptions:
    """BERT's own knobs: flat keys of ModelConfig, read here as config.<name> (the rule: model/config.py)."""

    type_vocab_size: int = 2  # token-type (segment) embeddings; 0 for ltg


class BertEmbeddings(nn.Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        # rows padded to pad_vocab_to_multiple_of; the extra rows are never looked up
        self.word_embeddings = nn.Embedding(config.padded_vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, h) if config.type_vocab_size > 0 else None
        )
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        """-> (x [B,S,H], the extra layer inputs: none for BERT)."""
        seq_len = input_ids.size(1)
        positions = torch.arange(seq_len, device=input_ids.device)  # [S]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)  # [B,S,H]
        if self.token_type_embeddings is not None:
            if token_type_ids is None:  # all segment A, as in HF
                x = x + self.token_type_embeddings.weight[0]
            else:
                x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.norm(x)), ()


class BertSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)  # fused query, key, value
        self.out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def project(self, x):
        """x [B,S,H] -> query, key, value [B,nh,S,hd] each, from the one fused projection."""
        B, S, H = x.shape
        return self.qkv(x).view(B, S, 3, self.num_heads, H // self.num_heads).permute(2, 0, 3, 1, 4)

    def forward(self, x, mask):
        # x [B,S,H]; mask bool [B,1,1,S] (True = attend) or None
        B, S, H = x.shape
        q, k, v = self.project(x)  # [B,nh,S,hd]; scale 1/sqrt(hd) is SDPA's default
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout_p if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, S, H)
        return self.out(y)  # [B,S,H]


class BertLayer(nn.Module):
    def __init__(self, config):
        super().__init__()
        h, eps = config.hidden_size, config.layer_norm_eps
        self.attention = BertSelfAttention(config)
        self.attention_norm = nn.LayerNorm(h, eps=eps)
        self.ffn_in = nn.Linear(h, config.intermediate_size)
        self.ffn_out = nn.Linear(config.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, mask):
        # post-LayerNorm: normalise after each residual sum; x [B,S,H]
        x = self.attention_norm(x + self.dropout(self.attention(x, mask)))
        x = self.ffn_norm(x + self.dropout(self.ffn_out(F.gelu(self.ffn_in(x)))))  # exact (erf) GELU
        return x


class BertMLMHead(nn.Module):
    """transform (dense, GELU, LayerNorm), then the decoder: word embeddings transposed + bias."""

    def __init__(self, config):
        super().__init__()
        self.vocab_size = config.vocab_size
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))
        self.apply(lambda m: init_bert_weights(m, config))

    def forward(self, h, word_embeddings):
        # h [B,P,H] (gathered positions) or [B,S,H]; word_embeddings [V_padded,H], tied decoder weight
        h = self.norm(F.gelu(self.dense(h)))
        logits = F.linear(h, word_embeddings, self.bias)  # [B,P,V_padded]
        return logits[..., : self.vocab_size]  # padded rows never reach the loss


class BertNSPHead(nn.Module):
    """Next-sentence prediction: a Linear on the pooled output (HF's cls.seq_relationship)."""

    def __init__(self, config):
        super().__init__()
        self.linear = nn.Linear(config.hidden_size, 2)
        self.apply(lambda m: init_bert_weights(m, config))

    def forward(self, pooled_output, last_hidden_state):
        return self.linear(pooled_output)  # [B,2]


@torch.no_grad()
def init_bert_weights(module: nn.Module, config) -> None:
    """BERT's initialisation: normal(0, initializer_range) weights, zero biases, unit LayerNorm."""
    if isinstance(module, nn.Linear):
        module.weight.normal_(0.0, config.initializer_range)
        if module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.normal_(0.0, config.initializer_range)
        if module.padding_idx is not None:
            module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm) and module.weight is not None:
        module.weight.fill_(1.0)
        module.bias.zero_()


@torch.no_grad()
def init_bert_encoder(encoder: nn.Module, config) -> None:
    encoder.apply(lambda m: init_bert_weights(m, config))
    zero_vocab_padding(encoder.embeddings.word_embeddings, config.vocab_size)
