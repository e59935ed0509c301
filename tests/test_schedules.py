"""Learning-rate schedules at known points, and the scheduler object following the same function."""

import pytest
import torch

from training.schedules import build_schedule, lr_factor
from utils.errors import UserError


@pytest.mark.parametrize(
    "name,step,want",
    [
        ("linear", 0, 0.0),
        ("linear", 5, 0.5),
        ("linear", 10, 1.0),
        ("linear", 55, 0.5),
        ("linear", 100, 0.0),
        ("linear", 150, 0.0),
        ("cosine", 5, 0.5),
        ("cosine", 10, 1.0),
        ("cosine", 55, 0.55),  # halfway: 0.1 + 0.9 * 0.5
        ("cosine", 100, 0.1),  # ELC-BERT's floor
        ("cosine", 150, 0.1),
        ("constant", 0, 1.0),
        ("constant", 99, 1.0),
    ],
)
def test_lr_factor_known_points(name, step, want):
    assert lr_factor(name, step, total_steps=100, warmup_steps=10, min_factor=0.1) == pytest.approx(
        want, abs=1e-12
    )


def test_cosine_quarter_point():
    # progress 0.25: 0.1 + 0.9 * (1 + cos(pi/4)) / 2
    assert lr_factor("cosine", 30, 90, 10, 0.1) == pytest.approx(0.1 + 0.45 * (1 + 2**-0.5))


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_scheduler_follows_factor(name):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_schedule(name, opt, total_steps=20, warmup_steps=4)
    for step in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * lr_factor(name, step, 20, 4))
        opt.step()
        sched.step()


def test_unknown_schedule_is_a_user_error():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(UserError, match="--scheduler"):
        build_schedule("cosine_restarts", opt, 10)
