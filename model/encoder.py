"""The one encoder: embeddings -> the layer loop (with ELC-BERT layer mixing) -> output, for every backbone.

A backbone (model/bert.py, model/ltg.py) supplies its embeddings, its layer and its initialisation; this
file runs them. Every layer sees the same tensors in pretraining, fine-tuning and evaluation: x [B,S,H],
the key-padding mask [B,1,1,S] (or None) and the backbone's extra layer inputs. Changing attention or the
feed-forward of a backbone is an edit of that backbone's layer alone.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from model import bert, ltg
from model.common import EncoderOutput, check_length, key_padding_mask
from model.layer_weighting import LayerWeighting


@dataclass(frozen=True)
class Backbone:
    embeddings: Callable  # config -> module; forward(input_ids, token_type_ids) -> (x [B,S,H], layer inputs)
    layer: Callable  # (config, elc: bool) -> module; forward(x [B,S,H], mask, *layer inputs) -> [B,S,H]
    init: Callable  # (encoder, config) -> None, in place
    mlm_head: Callable  # config -> module; forward(h [B,P,H], word_embeddings [V,H]) -> [B,P,vocab_size]
    nsp_head: Callable  # config -> module; forward(pooled [B,H] or None, h [B,S,H]) -> [B,2]
    pooler: bool  # a tanh pooler on the first token (BERT), whose output EncoderOutput.pooled_output holds;
    # fine-tuning heads that do not read it drop it (model.heads.EncoderModel)


BACKBONES = {
    # BERT stores each layer's whole output, residual included, also under ELC mixing
    "bert": Backbone(bert.BertEmbeddings, lambda config, elc: bert.BertLayer(config), bert.init_bert_encoder,
                     bert.BertMLMHead, bert.BertNSPHead, pooler=True),
    # LTG under ELC stores its own contribution only: the mix of stored outputs is the residual
    "ltg": Backbone(ltg.LtgEmbeddings, lambda config, elc: ltg.LtgLayer(config, residual=not elc),
                    ltg.init_ltg_weights, ltg.LtgMLMHead, ltg.LtgNSPHead, pooler=False),
}  # fmt: skip


class Encoder(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        backbone = BACKBONES[config.backbone]
        elc = config.layer_weighting != "none"
        self.embeddings = backbone.embeddings(config)
        self.layers = nn.ModuleList([backbone.layer(config, elc) for _ in range(config.num_hidden_layers)])
        self.layer_weighting = LayerWeighting(config) if elc else None
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if backbone.pooler else None
        backbone.init(self, config)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def softmaxed_layer_weights(self) -> dict[str, torch.Tensor]:
        """Softmaxed ELC weights, for logging; empty without layer weighting."""
        return {} if self.layer_weighting is None else self.layer_weighting.softmaxed()

    def forward(
        self, input_ids, attention_mask=None, token_type_ids=None, output_hidden_states=False, pool=True
    ):
        # input_ids [B,S]; attention_mask [B,S] 1 = token, 0 = pad, None = no padding; token_type_ids [B,S]
        # or None (all segment A; ignored by backbones without token types)
        check_length(input_ids, self.config)
        x, layer_inputs = self.embeddings(input_ids, token_type_ids)  # [B,S,H], e.g. LTG's relative [R,H]
        mask = key_padding_mask(attention_mask)  # [B,1,1,S] or None
        weighting = self.layer_weighting
        states = [x]  # the embedding output and every layer's stored output, each [B,S,H]
        for i, layer in enumerate(self.layers):
            if weighting is not None:
                x = weighting.mix(weighting.layer_weights[i], states)
            x = layer(x, mask, *layer_inputs)
            if weighting is not None:
                x = weighting.store(x)
            states.append(x)
        if weighting is not None and weighting.output_weights is not None:
            x = weighting.mix(weighting.output_weights, states)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None and pool else None  # [B,H]
        return EncoderOutput(x, states if output_hidden_states else None, pooled)
