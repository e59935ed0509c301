"""Unpadding (model.common.Unpadded, data.pretraining.with_token_index, --no_unpad) changes no numbers:
the token-wise layers see only real tokens, attention still sees the padded batch.

Checked on real corpus batches with dropout off (with dropout on, the two paths draw their masks over
different shapes): outputs and gradients of both backbones and the ELC variants, and 20 training steps
through the loader and the loop.
"""

import pytest
import torch

from data.loader import PretrainingLoader
from data.masking import build_masking
from data.pretraining import PretrainingData, with_token_index
from model import ModelConfig, PreTrainingModel
from training.loop import Trainer, TrainerConfig
from training.optim import build_optimizer
from training.pretraining import PretrainingObjective
from training.schedules import build_schedule
from utils.paths import REPO_ROOT


def _config(name: str, **changes) -> ModelConfig:
    d = ModelConfig.from_json(REPO_ROOT / "configs" / name).to_dict()
    changes = {
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "next_sentence_prediction": True,
        **changes,
    }
    return ModelConfig.from_dict({**d, **changes})


@pytest.fixture(scope="module")
def data(processed_corpus):
    masking = build_masking("subword")
    return PretrainingData(processed_corpus, 64, True, masking, False, 5, layout="fixed_chunks")


def _padded_batch(data) -> dict:
    """The first batch of 16 with padding (short_p 0.1, NSP pairs cut at document ends)."""
    return next(
        b for b in (data.batch(step, 16) for step in range(100)) if not bool(b["attention_mask"].all())
    )


def test_token_index_lists_the_real_tokens(data):
    batch = _padded_batch(data)
    mask = batch["attention_mask"]
    index = with_token_index(batch)["token_index"]
    assert index.tolist() == [r * 64 + c for r in range(16) for c in range(64) if mask[r, c]]
    full = {**batch, "attention_mask": torch.ones_like(mask)}
    assert "token_index" not in with_token_index(full)  # nothing to skip: the batch runs padded


@pytest.mark.parametrize(
    "config_file, layer_weighting",
    [("tiny.json", "none"), ("tiny.json", "normalized"), ("tiny_elc.json", "zero"),
     ("tiny_elc.json", "weighted_output")],
)  # fmt: skip
def test_unpadded_forward_and_backward_equal_padded(data, config_file, layer_weighting):
    config = _config(config_file, layer_weighting=layer_weighting)
    batch = with_token_index(_padded_batch(data))
    torch.manual_seed(0)
    model = PreTrainingModel(config)
    token_types = batch["token_type_ids"] if config.type_vocab_size > 0 else None
    inputs = dict(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=token_types
    )

    def run(token_index):
        model.zero_grad()
        out = model(**inputs, masked_positions=batch["masked_positions"], token_index=token_index)
        (out.mlm_logits.square().mean() + out.nsp_logits.square().mean()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        hidden = model.encoder(**inputs, output_hidden_states=True, token_index=token_index).hidden_states
        return out, grads, hidden

    padded, unpadded = run(None), run(batch["token_index"])
    torch.testing.assert_close(unpadded[0].mlm_logits, padded[0].mlm_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(unpadded[0].nsp_logits, padded[0].nsp_logits, atol=1e-5, rtol=0)
    assert unpadded[1].keys() == padded[1].keys()
    for name, grad in padded[1].items():
        scale = grad.abs().max().item()
        assert (unpadded[1][name] - grad).abs().max().item() <= 1e-5 * scale + 1e-9, name
    real = batch["attention_mask"].bool()  # [B,S]; padding positions are zeros when unpadded
    for a, b in zip(unpadded[2], padded[2]):
        torch.testing.assert_close(a[real], b[real], atol=1e-5, rtol=0)
        assert a[~real].abs().max() == 0


@pytest.mark.parametrize("config_file", ["tiny.json", "tiny_elc.json"])
def test_training_with_unpadding_matches_padded_training(data, config_file):
    """20 steps through PretrainingLoader (token index made in its thread) and the loop, with and
    without unpadding: per-step losses within 1e-4."""
    config = _config(config_file)

    def losses(unpad: bool) -> list[float]:
        torch.manual_seed(0)
        model = PreTrainingModel(config)
        optimizer = build_optimizer(model, "lamb", 1e-2, 0.01)
        trainer = Trainer(
            model,
            optimizer,
            build_schedule("linear", optimizer, 20, warmup_steps=2),
            PretrainingObjective(nsp=True, token_types=config.type_vocab_size > 0),
            config=TrainerConfig(precision="no", max_gradient=1.0, seed=0),
        )
        out, indexed = [], 0
        with PretrainingLoader(data, 16, accumulation=2, max_steps=20, unpad=unpad) as loader:
            for micro_batches in loader:
                indexed += sum("token_index" in b for b in micro_batches)
                trainer.train_step(micro_batches)
                out.append(trainer.collect_metrics()["loss"])
        assert (indexed > 0) == unpad  # with unpad, the padded micro-batches took the unpadded path
        return out

    padded, unpadded = losses(False), losses(True)
    assert max(abs(a - b) for a, b in zip(padded, unpadded)) < 1e-4, (padded, unpadded)
    assert unpadded[-1] < unpadded[0] - 0.25  # it trained: the weights moved far enough to matter
