"""ELC-BERT layer weighting (Charpentier & Samuel 2023), shared by both backbones.

Every layer's input is a softmax-weighted sum of the embedding output and all earlier layer outputs.
Variants (config.layer_weighting):
  base             layer i's weights start at 0 except the previous layer's at 1
  zero             all weights start at 0 (a uniform mix)
  normalized       as zero, and every layer output passes a non-affine LayerNorm before it is stored
  weighted_output  as zero, plus one more softmax mix over the embedding and all layers as final output
  base_residual    ours, not in the reference: base's weights, but on the LTG backbone a layer stores
                   attn + ffn(x + attn) as in the other three (what "base" meant here before)
On the LTG backbone a layer stores attn + ffn(attn) under base (the reference's base file) and
attn + ffn(x + attn) under the others, x being the mixed input (model/ltg.py, LtgLayer).
Reference: ltgoslo/elc-bert models/model_elc_bert_{base,zero,normalized,weighted_output}.py.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerWeighting(nn.Module):
    def __init__(self, config):
        super().__init__()
        variant, n_layers = config.layer_weighting, config.num_hidden_layers
        self.variant = variant
        self.eps = config.layer_norm_eps
        weights = []
        for i in range(n_layers):  # layer i mixes i + 1 stored states: the embedding and layers 0..i-1
            w = torch.zeros(i + 1)
            if variant in ("base", "base_residual"):
                w[-1] = 1.0
            weights.append(nn.Parameter(w))
        self.layer_weights = nn.ParameterList(weights)  # logits (softmaxed in mix); a checkpoint name
        # weighted_output: one more mix (logits) over the embedding and all n_layers outputs, starting uniform
        self.output_weights = (
            nn.Parameter(torch.zeros(n_layers + 1)) if variant == "weighted_output" else None
        )

    @staticmethod
    def mix(weights: torch.Tensor, states: list[torch.Tensor]) -> torch.Tensor:
        w = torch.softmax(weights, dim=0)  # [n], n = len(states)
        out = w[0] * states[0]  # [B,S,H]
        for j in range(1, len(states)):
            out = out + w[j] * states[j]
        return out

    def store(self, x: torch.Tensor) -> torch.Tensor:
        """What a layer's output becomes before later layers see it."""
        if self.variant == "normalized":
            return F.layer_norm(x, x.shape[-1:], eps=self.eps)
        return x

    def softmaxed(self) -> dict[str, torch.Tensor]:
        """Detached softmax weights for logging: {"layer_i": [i+1], "output": [L+1]}."""
        out = {f"layer_{i}": torch.softmax(w.detach(), 0) for i, w in enumerate(self.layer_weights)}
        if self.output_weights is not None:
            out["output"] = torch.softmax(self.output_weights.detach(), 0)
        return out
