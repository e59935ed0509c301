"""Dense-checkpoint presets give exactly the documented steps."""

import pytest

from training.checkpoint_steps import parse_checkpoint_steps
from utils.errors import UserError


def test_earlyberts():
    want = [10, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    want += list(range(2000, 20001, 1000)) + [40000]
    assert parse_checkpoint_steps("earlyberts", 10**9) == want
    assert len(want) == 31


def test_multiberts():
    got = parse_checkpoint_steps("multiberts", 2_000_000)
    want = [0] + [k * 20_000 for k in range(1, 11)] + [k * 100_000 for k in range(3, 21)]
    assert got == want
    assert len(got) == 29 and got[-1] == 2_000_000


def test_log():
    assert parse_checkpoint_steps("log:8", 40) == [0, 1, 2, 4, 8, 16, 24, 32, 40]
    got = parse_checkpoint_steps("log", 3000)
    assert got == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 3000]


def test_explicit_lists_and_ranges():
    assert parse_checkpoint_steps("0,10,100:1000:100", 10**6) == [0, 10] + list(range(100, 1001, 100))
    assert parse_checkpoint_steps("earlyberts,50000", 1000) == [10, *range(100, 1001, 100)]
    assert parse_checkpoint_steps("none", 100) == []


@pytest.mark.parametrize("spec", ["everyhour", "1:2", "10:0:-5", "-3"])
def test_bad_spec_names_the_item(spec):
    with pytest.raises(UserError, match="--checkpoint_steps"):
        parse_checkpoint_steps(spec, 100)
