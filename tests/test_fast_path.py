"""The fast path changes no numbers: 20 training steps on real corpus batches through the training loop,
fast vs plain, per-step losses within 1e-4 (fp32, CPU, dropout on: both paths draw the same masks).

fast:  masked-only MLM head, vocabulary padded to 64, fused/foreach AdamW or foreach LAMB, no attention
       mask for batches without padding.
plain: logits at every position + ignore_index loss, unpadded vocabulary holding the same weights,
       per-parameter optimizer loop (torch's AdamW for-loop, benchmarks.reference.LoopLamb), an explicit
       attention mask on every batch.
"""

import pytest
import torch

from benchmarks.batches import corpus_batches
from benchmarks.reference import FullLogitObjective, LoopLamb, with_config
from model import ModelConfig, PretrainingModel
from training.loop import Trainer, TrainerConfig
from training.optim import build_optimizer, param_groups
from training.pretraining_objective import PretrainingObjective
from training.schedules import build_schedule
from utils.paths import REPO_ROOT

STEPS, BATCH, SEQ = 20, 8, 64
LR = {"adamw": 2e-3, "lamb": 1e-2}


@pytest.fixture(scope="module")
def batches(processed_corpus):
    return corpus_batches(processed_corpus, STEPS, BATCH, SEQ, seed=3)


def _config() -> ModelConfig:
    d = ModelConfig.from_json(REPO_ROOT / "configs" / "tiny.json").to_dict()
    # 4099 rows (tokenizer: 4096) so that padding to 64 really adds rows: 4160
    return ModelConfig.from_dict({**d, "vocab_size": 4099, "pad_vocab_to_multiple_of": 64})


def _optimizer(model, kind: str):
    """adamw_fused / lamb: training.optim.build_optimizer; adamw_foreach / adamw_loop: torch's AdamW
    implementations over the same groups; lamb_loop: the per-parameter reference."""
    if kind == "lamb_loop":
        return LoopLamb(param_groups(model, 0.01), lr=LR["lamb"], eps=1e-6)
    if kind in ("adamw_fused", "lamb"):
        name = kind.split("_")[0]
        return build_optimizer(model, name, LR[name], 0.01, eps=1e-6, fused=kind == "adamw_fused")
    groups = [{k: v for k, v in g.items() if k != "trust_ratio"} for g in param_groups(model, 0.01)]
    foreach = kind == "adamw_foreach"
    return torch.optim.AdamW(groups, lr=LR["adamw"], eps=1e-6, foreach=foreach, fused=False)


def _losses(model, optimizer, objective, batches) -> list[float]:
    schedule = build_schedule("linear", optimizer, STEPS, warmup_steps=2)
    config = TrainerConfig(precision="no", max_gradient=1.0, seed=0)
    trainer = Trainer(model, optimizer, schedule, objective, config=config)
    losses = []
    for batch in batches:
        trainer.train_step([batch])
        losses.append(trainer.collect_metrics()["loss"])
    return losses


@pytest.mark.parametrize(
    "fast_opt, plain_opt",
    [("adamw_fused", "adamw_loop"), ("adamw_foreach", "adamw_loop"), ("lamb", "lamb_loop")],
)
def test_fast_path_losses_equal_plain_path(batches, fast_opt, plain_opt):
    padded = [not bool(b["attention_mask"].all()) for b in batches]
    assert any(padded) and not all(padded)  # both the mask and the no-mask path are taken

    torch.manual_seed(0)
    fast = PretrainingModel(_config())
    plain = with_config(fast, pad_vocab_to_multiple_of=1)
    assert fast.encoder.word_embeddings.weight.shape[0] == 4160
    assert plain.encoder.word_embeddings.weight.shape[0] == 4099

    fast_losses = _losses(fast, _optimizer(fast, fast_opt), PretrainingObjective(nsp=True), batches)
    plain_losses = _losses(
        plain, _optimizer(plain, plain_opt), FullLogitObjective(nsp=True, explicit_mask=True), batches
    )
    assert max(abs(a - b) for a, b in zip(fast_losses, plain_losses)) < 1e-4, (fast_losses, plain_losses)
    assert fast_losses[-1] < fast_losses[0] - 0.15  # the runs trained: the weights moved far enough to matter
    # the padded rows never moved, so they could not shift LAMB's trust ratio of the embedding matrix
    assert fast.encoder.word_embeddings.weight[4099:].abs().max() == 0
