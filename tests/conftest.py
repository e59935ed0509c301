"""Shared fixtures. Real data comes from one data root ($BERT_DATA_ROOT, default ../shared/data)."""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from utils.paths import data_root as _data_root  # noqa: E402

# Two cores: keep each test process from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "corpus" / "gutenberg").is_dir():
        pytest.fail(f"real data not found under {root}: set BERT_DATA_ROOT to the shared data folder")
    return root
