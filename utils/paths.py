"""Where the public datasets live: one configurable data root for tests, examples and benchmarks."""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """$BERT_DATA_ROOT if set, else ../shared/data beside the repository."""
    return Path(os.environ.get("BERT_DATA_ROOT", REPO_ROOT.parent / "shared" / "data")).resolve()
