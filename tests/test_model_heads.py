"""Fine-tuning heads: pooling choices, MLP shapes, QA logits, errors; checked against direct computation."""

import pytest
import torch
import torch.nn as nn

from model import ModelConfig, PretrainingModel
from model.heads import ClassifierConfig, QuestionAnsweringModel, SequenceClassificationModel
from utils.errors import UserError
from utils.paths import REPO_ROOT

pytestmark = pytest.mark.usefixtures("single_thread")


def encoder(name="tiny"):
    torch.manual_seed(0)
    return PretrainingModel(ModelConfig.from_json(REPO_ROOT / "configs" / f"{name}.json")).encoder.eval()


def batch():
    ids = torch.randint(5, 4096, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


@pytest.mark.parametrize("pooling", ["cls", "pooler", "mean"])
def test_classifier_pooling(pooling):
    enc = encoder()
    model = SequenceClassificationModel(enc, ClassifierConfig(num_labels=3, pooling=pooling)).eval()
    ids, mask = batch()
    with torch.no_grad():
        logits = model(ids, mask)
        out = enc(ids, mask)
        h = out.last_hidden_state
        pooled = {
            "cls": h[:, 0],
            "pooler": out.pooled_output,
            "mean": torch.stack([h[b, : int(mask[b].sum())].mean(0) for b in range(3)]),
        }[pooling]
        want = model.classifier[-1](pooled)
    assert logits.shape == (3, 3)
    torch.testing.assert_close(logits, want, atol=1e-6, rtol=0)


def test_classifier_mlp_and_training_step():
    enc = encoder("tiny_elc")
    cfg = ClassifierConfig(
        num_labels=2, pooling="mean", hidden_sizes=[32, 16], activation="tanh", dropout=0.0
    )
    model = SequenceClassificationModel(enc, cfg)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 2)]
    assert sum(isinstance(m, nn.Tanh) for m in model.classifier) == 2
    ids, mask = batch()
    labels = torch.tensor([0, 1, 1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):  # a few steps on one batch must overfit it
        loss = nn.functional.cross_entropy(model(ids, mask), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert "encoder.layer_weighting.layer_weights.1" in model.no_weight_decay()
    assert set(model.softmaxed_layer_weights()) == {"layer_0", "layer_1"}


def test_question_answering_logits():
    enc = encoder()
    model = QuestionAnsweringModel(enc).eval()
    ids, mask = batch()
    with torch.no_grad():
        start, end = model(ids, mask)
        h = enc(ids, mask).last_hidden_state
    assert start.shape == end.shape == (3, 12)
    torch.testing.assert_close(start, h @ model.qa_outputs.weight[0] + model.qa_outputs.bias[0])
    torch.testing.assert_close(end, h @ model.qa_outputs.weight[1] + model.qa_outputs.bias[1])


def test_question_answering_mlp_head():
    enc = encoder("tiny_elc")
    cfg = ClassifierConfig(num_labels=2, hidden_sizes=[32], activation="tanh", dropout=0.0)
    model = QuestionAnsweringModel(enc, cfg).eval()
    linears = [m for m in model.qa_outputs if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 2)]
    ids, mask = batch()
    with torch.no_grad():
        start, end = model(ids, mask)
        h = enc(ids, mask).last_hidden_state
        want = linears[1](torch.tanh(linears[0](h)))  # [B,S,2]
    assert start.shape == end.shape == (3, 12)
    torch.testing.assert_close(torch.stack([start, end], -1), want)
    with pytest.raises(UserError, match="num_labels=3 must be 2"):
        QuestionAnsweringModel(enc, ClassifierConfig(num_labels=3))


def test_classifier_config_errors():
    with pytest.raises(UserError, match="pooling"):
        ClassifierConfig(num_labels=2, pooling="max")
    with pytest.raises(UserError, match="activation"):
        ClassifierConfig(num_labels=2, activation="swish")
    with pytest.raises(UserError, match="hiden_sizes"):
        ClassifierConfig.from_dict({"num_labels": 2, "hiden_sizes": [8]})
    with pytest.raises(UserError, match="pooler"):  # ltg has no pooler
        SequenceClassificationModel(encoder("tiny_elc"), ClassifierConfig(num_labels=2, pooling="pooler"))
