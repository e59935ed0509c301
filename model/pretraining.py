"""The pretraining model: a backbone encoder with its MLM head (on masked positions only) and NSP head."""

import torch
import torch.nn as nn

from model.bert import BertEncoder, BertMLMHead, BertNSPHead
from model.common import PreTrainingOutput, layer_weights_of, no_weight_decay_names
from model.config import ModelConfig
from model.ltg import LtgEncoder, LtgMLMHead, LtgNSPHead

BACKBONE_CLASSES = {  # backbone -> (encoder, MLM head, NSP head)
    "bert": (BertEncoder, BertMLMHead, BertNSPHead),
    "ltg": (LtgEncoder, LtgMLMHead, LtgNSPHead),
}


class PreTrainingModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        encoder_cls, mlm_cls, nsp_cls = BACKBONE_CLASSES[config.backbone]
        self.encoder = encoder_cls(config)
        self.mlm_head = mlm_cls(config)
        self.nsp_head = nsp_cls(config) if config.next_sentence_prediction else None

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None, token_index=None
    ):
        # input_ids [B,S]; attention_mask [B,S] (1 = token) or None; masked_positions [B,P] or None;
        # token_index [T] or None: the real tokens, so that the layers skip padding (model.common.Unpadded)
        out = self.encoder(input_ids, attention_mask, token_type_ids, token_index=token_index)
        h = out.last_hidden_state  # [B,S,H]
        if masked_positions is not None:
            # gather the fixed-shape [B,P] positions before the head: BERT would otherwise compute
            # vocab-size logits for every token; no boolean indexing, so no host sync
            index = masked_positions.unsqueeze(-1).expand(-1, -1, h.size(-1))  # [B,P,H]
            h = torch.gather(h, 1, index)  # [B,P,H]
        mlm_logits = self.mlm_head(h, self.encoder.word_embeddings.weight)  # [B,P or S,vocab_size]
        nsp_logits = None
        if self.nsp_head is not None:
            nsp_logits = self.nsp_head(out.pooled_output, out.last_hidden_state)  # [B,2]
        return PreTrainingOutput(mlm_logits, nsp_logits)

    def layer_weights(self) -> dict[str, torch.Tensor]:
        return layer_weights_of(self.encoder)

    def no_weight_decay(self) -> set[str]:
        return no_weight_decay_names(self)
