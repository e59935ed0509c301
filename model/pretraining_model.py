"""The pretraining model: a backbone encoder with its MLM head (on masked positions only) and NSP head."""

import torch
import torch.nn as nn

from model.common import PretrainingOutput, no_weight_decay_names
from model.config import ModelConfig
from model.encoder import BACKBONES, Encoder


class PretrainingModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        backbone = BACKBONES[config.backbone]
        self.encoder = Encoder(config)
        self.mlm_head = backbone.mlm_head(config)
        self.nsp_head = backbone.nsp_head(config) if config.next_sentence_prediction else None
        if self.nsp_head is None:  # BERT's pooler feeds only its NSP head: without one, no parameter
            self.encoder.pooler = None  # goes untrained (built first: the seeded init of the rest is kept)

    def nsp_parameter_names(self) -> list[str]:
        """The parameters that only next-sentence prediction trains: the NSP head and BERT's pooler."""
        return [n for n, _ in self.named_parameters() if n.startswith(("nsp_head.", "encoder.pooler."))]

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None, nsp=True):
        # input_ids [B,S]; attention_mask [B,S] (1 = token) or None; masked_positions [B,P] or None;
        # nsp False: the NSP head (and the pooler) are not computed, nsp_logits is None
        nsp = nsp and self.nsp_head is not None
        out = self.encoder(input_ids, attention_mask, token_type_ids, pool=nsp)
        h = out.last_hidden_state  # [B,S,H]
        if masked_positions is not None:
            # gather the fixed-shape [B,P] positions before the head: BERT would otherwise compute
            # vocab-size logits for every token; no boolean indexing, so no host sync
            index = masked_positions.unsqueeze(-1).expand(-1, -1, h.size(-1))  # [B,P,H]
            h = torch.gather(h, 1, index)  # [B,P,H]
        mlm_logits = self.mlm_head(h, self.encoder.word_embeddings.weight)  # [B,P or S,vocab_size]
        nsp_logits = self.nsp_head(out.pooled_output, out.last_hidden_state) if nsp else None  # [B,2]
        return PretrainingOutput(mlm_logits, nsp_logits)

    def softmaxed_layer_weights(self) -> dict[str, torch.Tensor]:
        return self.encoder.softmaxed_layer_weights()

    def no_weight_decay(self) -> set[str]:
        return no_weight_decay_names(self)
