"""Shared fixtures. Real data comes from one data root ($BERT_DATA_ROOT, default ../shared/data)."""

import json
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from utils.paths import data_root as _data_root  # noqa: E402

# One intra-op thread per test process: tiny models gain nothing from more, and subprocess tests
# (torchrun ranks, killed runs) would otherwise spin-wait on each other's cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = _data_root()
    if not (root / "corpus" / "gutenberg").is_dir():
        pytest.fail(f"real data not found under {root}: set BERT_DATA_ROOT to the shared data folder")
    return root


# ---- single-threaded torch for tiny-model tests ----
# With other processes on the 2 cores, 2 intra-op threads made tiny forward/backward passes up to
# 100x slower (threads spin-waiting on each other); one thread is faster for hidden-64 models.
@pytest.fixture
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---- data fixtures ----------------------------------------------------------------------------------
# A handful of real Gutenberg books (~1.9 MB, ~450k tokens): small enough to train a tokenizer and
# preprocess once per test session in a few seconds.
FIXTURE_BOOKS = [
    "Carroll__Alice_s_Adventures_in_Wonderland.txt",
    "Carroll__Through_the_Looking_Glass.txt",
    "Dickens__A_Christmas_Carol.txt",
    "Stevenson__The_Strange_Case_of_Dr_Jekyll_and_Mr_Hyde.txt",
    "London__The_Call_of_the_Wild.txt",
    "Barrie__Peter_Pan.txt",
    "Doyle__The_Sign_of_the_Four.txt",
    "Wells__The_Invisible_Man_A_Grotesque_Romance.txt",
]


@pytest.fixture(scope="session")
def fixture_books(data_root) -> list[Path]:
    return [data_root / "corpus" / "gutenberg" / "train" / name for name in FIXTURE_BOOKS]


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> Path:
    """An uncased BERT WordPiece tokenizer, vocabulary 4096, trained on the fixture books by
    data.tokenization.train_tokenizer (min_frequency 2) and kept in tests/fixtures: the saved runs there
    were trained with it (by the trainer of that day, which broke ties by chance; today's is deterministic),
    and the learning thresholds were set on it."""
    from data.tokenization import load_tokenizer, save_tokenizer

    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    kept = REPO_ROOT / "tests" / "fixtures" / "run_2026_12_01" / "tokenizer.json"
    save_tokenizer(load_tokenizer(kept), path)  # also writes vocab.txt beside it
    return path


@pytest.fixture(scope="session")
def processed_corpus(fixture_books, tokenizer_path, tmp_path_factory) -> Path:
    """The fixture books preprocessed with `tokenizer_path`, 5% of documents held out (has meta.json)."""
    from data.preprocess import main as preprocess

    out = tmp_path_factory.mktemp("corpus") / "processed"
    args = ["--input_path", *map(str, fixture_books), "--vocab_path", str(tokenizer_path)]
    preprocess(
        [*args, "--output_dir", str(out), "--validation_fraction", "0.05", "--seed", "0", "--workers", "1"]
    )
    return out


# ---- end of data fixtures ---------------------------------------------------------------------------


# ---- a small pretrained model (for fine-tuning and the zoo tests) -----------------------------------
@pytest.fixture(scope="session")
def pretrained_tiny(processed_corpus, tokenizer_path, tmp_path_factory) -> Path:
    """configs/tiny.json (bert, hidden 64, 2 layers, 128 positions, NSP) pretrained with train_pretrain.py
    for 150 steps (batch 16, length 128) on the fixture books; the checkpoints/step_150 folder."""
    import train_pretrain

    out = tmp_path_factory.mktemp("pretrained_tiny")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest single-threaded on the shared cores
    try:
        args = {
            "config_file": REPO_ROOT / "configs" / "tiny.json", "input_path": processed_corpus,
            "vocab_path": tokenizer_path, "output_dir": out, "seq_length": 128, "batch_size": 16,
            "max_steps": 150, "learning_rate": 2e-3, "warmup_steps": 10, "save_every": 0, "log_freq": 50,
            "device": "cpu", "mixed_precision": "no", "seed": 0,
            # the fine-tuning thresholds were set on this layout's model (either is on the unigram plateau)
            "instance_layout": "fixed_chunks",
        }  # fmt: skip
        train_pretrain.main([x for k, v in args.items() for x in (f"--{k}", str(v))])
    finally:
        torch.set_num_threads(n)
    return out / "checkpoints" / "step_150"


# ---- end of the small pretrained model --------------------------------------------------------------


def micro_pretrain_flags(tmp: Path, processed_corpus, tokenizer_path, **flags) -> list[str]:
    """train_pretrain.py flags of a 30k-parameter BERT (configs/tiny.json at hidden 32, 64 positions) on
    the fixture corpus: 8 x 64 tokens, AdamW 1e-3, on the CPU; `flags` add or override."""
    config = json.loads((REPO_ROOT / "configs" / "tiny.json").read_text())
    config.update(hidden_size=32, intermediate_size=64, max_position_embeddings=64)
    (tmp / "micro.json").write_text(json.dumps(config))
    base = {
        "config_file": tmp / "micro.json", "input_path": processed_corpus, "vocab_path": tokenizer_path,
        "seq_length": 64, "batch_size": 8, "save_every": 0, "device": "cpu", "mixed_precision": "no",
        "learning_rate": 1e-3,
    }  # fmt: skip
    return [x for k, v in {**base, **flags}.items() for x in (f"--{k}", str(v))]
