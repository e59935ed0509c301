"""Every layer sees the same tensors in every path: a BertLayer subclass that mixes tokens along the
sequence (a depthwise convolution, as a researcher might add) gives the same outputs when the encoder runs
inside pretraining (PretrainingData batches, padded to --seq_length, through PretrainingObjective) and inside
fine-tuning (finetune.batching.collate, padded to the longest input, through SequenceClassificationModel)."""

import torch
import torch.nn as nn

from finetune.batching import collate
from model import ModelConfig, PretrainingModel
from model.bert import BertLayer
from model.heads import ClassifierConfig, SequenceClassificationModel
from training.pretraining_objective import PretrainingObjective
from utils.paths import REPO_ROOT


class ConvBertLayer(BertLayer):
    """BertLayer, then a residual depthwise convolution (kernel 3) over the sequence of real tokens."""

    def __init__(self, config):
        super().__init__(config)
        h = config.hidden_size
        self.conv = nn.Conv1d(h, h, kernel_size=3, padding=1, groups=h)

    def forward(self, x, mask):
        x = super().forward(x, mask)  # [B,S,H]
        real = x if mask is None else x * mask[:, 0, 0, :, None]  # padding contributes nothing
        return x + self.conv(real.transpose(1, 2)).transpose(1, 2)


def conv_model(config) -> PretrainingModel:
    torch.manual_seed(0)
    model = PretrainingModel(config)
    model.encoder.layers = nn.ModuleList(ConvBertLayer(config) for _ in range(config.num_hidden_layers))
    return model.eval()


def test_token_mixing_layer_same_in_pretraining_and_finetuning():
    config = ModelConfig.from_json(REPO_ROOT / "configs" / "tiny.json")
    g = torch.Generator().manual_seed(1)
    lengths = [19, 32, 7, 25]
    sequences = [torch.randint(5, config.vocab_size, (n,), generator=g).tolist() for n in lengths]

    pretrain = conv_model(config)
    seen = {}
    pretrain.encoder.register_forward_hook(
        lambda m, args, out: seen.update(pretraining=out.last_hidden_state)
    )
    S = 64  # --seq_length: the pretraining batch is padded to it
    ids = torch.zeros(len(lengths), S, dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq)
    mask = (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).long()  # [B,S]
    positions = torch.tensor([[1, 2]] * len(lengths))  # [B,P]
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
             "masked_positions": positions, "masked_labels": ids.gather(1, positions),
             "nsp_labels": torch.zeros(len(lengths), dtype=torch.long)}  # fmt: skip
    with torch.no_grad():
        PretrainingObjective(nsp=True)(pretrain, batch)

    finetune = SequenceClassificationModel(conv_model(config).encoder, ClassifierConfig(num_labels=2)).eval()
    weights = {k: v for k, v in pretrain.encoder.state_dict().items() if not k.startswith("pooler.")}
    finetune.encoder.load_state_dict(weights)  # a cls-pooling classifier holds no pooler
    finetune.encoder.register_forward_hook(lambda m, args, out: seen.update(finetuning=out.last_hidden_state))
    features = [{"input_ids": s, "token_type_ids": [0] * len(s), "label": 0} for s in sequences]
    ft_batch = collate(features, pad_id=config.pad_token_id, label_keys=("label",))
    assert ft_batch["input_ids"].shape[1] < S  # padded differently: to the longest input, not to S
    with torch.no_grad():
        finetune(ft_batch["input_ids"], ft_batch["attention_mask"], ft_batch["token_type_ids"])

    for i, n in enumerate(lengths):
        a, b = seen["pretraining"][i, :n], seen["finetuning"][i, :n]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the convolution matters: without it the outputs differ
    plain = PretrainingModel(config).eval()
    plain.encoder.load_state_dict(pretrain.encoder.state_dict(), strict=False)
    with torch.no_grad():
        base = plain.encoder(ids, mask).last_hidden_state
    assert (base[0, :19] - seen["pretraining"][0, :19]).abs().max() > 1e-2
