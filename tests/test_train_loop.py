"""The generic Trainer on toy problems: normalisation by global counts, skipping, precision, state."""

import math

import pytest
import torch
from torch import nn

from training.loop import Trainer, TrainerConfig, TrainingDiverged
from training.optim import build_optimizer
from training.schedules import build_schedule


class Regression:
    """Squared error summed over the examples where mask == 1; counts = #examples with mask 1."""

    metric_terms = {"mse_small": "mse"}

    def __init__(self, poison_steps=()):
        self.poison_steps = set(poison_steps)
        self.calls = 0

    def counts(self, batch):
        return {"mse": batch["mask"].sum()}

    def __call__(self, model, batch):
        err = (model(batch["x"]).squeeze(-1) - batch["y"]) ** 2 * batch["mask"]
        total = err.sum()
        if batch["step"] in self.poison_steps:
            total = total * math.inf
        return {"mse": total}, {"mse_small": ((err < 0.1) & (batch["mask"] > 0)).sum()}


def _data(steps, micro, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, generator=g)
    for step in range(steps):
        out = []
        for _ in range(micro):
            x = torch.randn(size, 3, generator=g)
            mask = (torch.rand(size, generator=g) > 0.3).float()  # uneven counts per micro-batch
            out.append({"x": x, "y": x @ w, "mask": mask, "step": step})
        yield out


def _trainer(objective, precision="no", max_skipped=10, opt="adamw", lr=0.05):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = build_optimizer(model, opt, lr, 0.0)
    sched = build_schedule("constant", optimizer, 100)
    cfg = TrainerConfig(precision=precision, max_gradient=0.0, max_skipped_steps=max_skipped)
    return Trainer(model, optimizer, sched, objective, config=cfg)


def test_loss_is_normalised_by_the_total_count_not_per_micro_batch():
    trainer = _trainer(Regression())
    [micro] = list(_data(1, 3, 8))
    ref = nn.Linear(3, 1)
    ref.load_state_dict(trainer.model.state_dict())
    x = torch.cat([b["x"] for b in micro])
    y = torch.cat([b["y"] for b in micro])
    mask = torch.cat([b["mask"] for b in micro])
    loss = ((ref(x).squeeze(-1) - y) ** 2 * mask).sum() / mask.sum()
    loss.backward()
    want = loss.item()
    trainer.train_step(micro)
    got = trainer.collect_metrics()
    assert got["loss"] == pytest.approx(want, rel=1e-6)
    assert got["mse_loss"] == pytest.approx(want, rel=1e-6)
    grad_norm = torch.cat([p.grad.flatten() for p in ref.parameters()]).norm().item()
    assert got["grad_norm"] == pytest.approx(grad_norm, rel=1e-5)
    small = sum(
        ((((ref(b["x"]).squeeze(-1) - b["y"]) ** 2 * b["mask"]) < 0.1) & (b["mask"] > 0)).sum() for b in micro
    )
    assert got["mse_small"] == pytest.approx(small.item() / mask.sum().item())


def test_one_batch_of_24_equals_three_micro_batches_of_8():
    big = _trainer(Regression())
    small = _trainer(Regression())
    for micro in _data(5, 3, 8):
        joined = {k: torch.cat([b[k] for b in micro]) if k != "step" else micro[0]["step"] for k in micro[0]}
        big.train_step([joined])
        small.train_step(micro)
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("opt", ["adamw", "lamb"])
def test_non_finite_step_is_skipped_and_counted(opt):
    trainer = _trainer(Regression(poison_steps={2}), opt=opt)
    batches = list(_data(4, 2, 8))
    for micro in batches[:2]:
        trainer.train_step(micro)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train_step(batches[2])
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    trainer.train_step(batches[3])
    metrics = trainer.collect_metrics()
    assert metrics["skipped_steps"] == 1 and trainer.step == 4
    assert math.isfinite(metrics["loss"])  # the skipped step is left out of the averages
    assert not all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_too_many_skips_in_a_row_stop_the_run():
    trainer = _trainer(Regression(poison_steps=range(3, 100)), max_skipped=4)
    with pytest.raises(TrainingDiverged, match=r"step 8: 5 steps in a row.*--max_skipped_steps 4"):
        trainer.fit(_data(20, 1, 8), 20, callbacks=[lambda t: t.step % 2 == 0 and t.collect_metrics()])
    assert trainer.step == 8  # steps 4-7 are the 4 skips; noticed at the next check


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_cpu(precision):
    trainer = _trainer(Regression(), precision=precision)
    losses = []
    trainer.fit(_data(60, 1, 32), 60, callbacks=[lambda t: losses.append(t.collect_metrics()["loss"])])
    # fp16: the first steps overflow and are skipped (NaN windows) while the scale backs off from 2**16
    assert all(math.isfinite(v) for v in losses[20:])
    assert sum(losses[-5:]) < 0.2 * sum(losses[20:25])
    assert (trainer.scaler is not None) == (precision == "fp16")


def test_state_dict_round_trip_includes_the_grad_scaler():
    trainer = _trainer(Regression(poison_steps={1}), precision="fp16")
    trainer.fit(_data(5, 1, 8), 5)
    state = trainer.state_dict()
    # every skipped step (the poisoned one, plus any fp16 overflow) halves the scale once
    assert trainer.skipped_steps >= 1
    assert state["scaler"]["scale"] == trainer.scaler.get_scale() == 2.0**16 / 2**trainer.skipped_steps
    other = _trainer(Regression(), precision="fp16")
    other.load_state_dict(state)
    assert other.scaler.state_dict() == trainer.scaler.state_dict()
    assert (other.step, other.skipped_steps) == (5, trainer.skipped_steps)


@pytest.mark.parametrize("backbone", ["bert", "ltg"])
def test_mlm_only_on_a_model_with_an_nsp_head_freezes_exactly_that_head(backbone, capsys):
    from model import ModelConfig, PretrainingModel
    from training.pretraining_objective import PretrainingObjective

    config = ModelConfig(backbone=backbone, vocab_size=64, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                         type_vocab_size=2 if backbone == "bert" else 0)  # fmt: skip
    torch.manual_seed(0)
    model = PretrainingModel(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_optimizer(model, "adamw", 1e-2, 0.1)  # weight decay: it would shrink a stepped head
    trainer = Trainer(
        model, optimizer, build_schedule("constant", optimizer, 10), PretrainingObjective(nsp=False)
    )
    head = [n for n, _ in model.named_parameters() if n.startswith(("nsp_head.", "encoder.pooler."))]
    assert trainer.frozen == head and len(head) == 4  # BERT: pooler + linear; LTG: its MLP's two Linears
    assert "frozen, not trained by this objective: " + ", ".join(head) in capsys.readouterr().out
    g = torch.Generator().manual_seed(1)
    batch = {"input_ids": torch.randint(5, 64, (4, 12), generator=g), "attention_mask": torch.ones(4, 12),
             "masked_positions": torch.randint(0, 12, (4, 3), generator=g),
             "masked_labels": torch.randint(5, 64, (4, 3), generator=g)}  # fmt: skip
    with torch.no_grad():
        assert model(**{k: v for k, v in batch.items() if k != "masked_labels"}, nsp=False).nsp_logits is None
    trainer.train_step([batch])
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    trained = {n for n, p in model.named_parameters() if n not in head}
    assert changed == trained  # every other parameter trained, the head and pooler untouched
    assert all(not p.requires_grad and p.grad is None for n, p in model.named_parameters() if n in head)
    assert len(optimizer.state) == len(trained)  # no moments for the frozen head
