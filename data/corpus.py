"""Reader of a processed corpus folder written by data/preprocess.py (arrays are memory-mapped).

However many shards and machines produced it, a corpus is one set of arrays: `data/preprocess.py --merge`
joins the shards' parts into them (see data/shards.py), so readers never see the shards.
"""

import json
from functools import cached_property
from pathlib import Path

import numpy as np

from data.tokenization import SpecialIds, load_tokenizer, tokenizer_hash
from utils.errors import UserError

SPLITS = ("train", "validation")


def read_meta(corpus_dir) -> dict:
    path = Path(corpus_dir) / "meta.json"
    if not path.is_file() and (Path(corpus_dir) / "shards" / "job.json").is_file():
        raise UserError(
            f"{corpus_dir} holds shards not merged yet: run data/preprocess.py --merge --output_dir DIR"
        )
    if not path.is_file():
        raise UserError(f"{path} not found: --input_path must be a folder written by data/preprocess.py")
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None


def check_tokenizer_matches(corpus_dir, tokenizer_path) -> None:
    """UserError unless the tokenizer file is the one the corpus was tokenised with."""
    meta = read_meta(corpus_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.get_vocab_size() != meta["tokenizer"]["vocab_size"]:
        raise UserError(
            f"{tokenizer_path} has {tokenizer.get_vocab_size()} tokens but {corpus_dir} was made with a "
            f"vocabulary of {meta['tokenizer']['vocab_size']}"
        )
    if tokenizer_hash(tokenizer) != meta["tokenizer"]["sha256"]:
        raise UserError(f"{tokenizer_path} is not the tokenizer {corpus_dir} was made with (sha256 differs)")


class ProcessedCorpus:
    """One split: tokens [n_tokens], sentence offsets [n_sent+1] (tokens), documents [n_doc+1] (sentences)."""

    def __init__(self, corpus_dir, split: str = "train"):
        if split not in SPLITS:
            raise UserError(f"split {split!r} must be one of {', '.join(SPLITS)}")
        self.dir = Path(corpus_dir)
        self.split = split
        self.meta = read_meta(self.dir)

        def load(name):
            path = self.dir / f"{split}.{name}.npy"
            if not path.is_file():
                raise UserError(f"{path} not found: the processed corpus is incomplete")
            return np.load(path, mmap_mode="r")

        self.tokens = load("tokens")
        self.sentence_offsets = np.asarray(load("sentences"))  # small: read into memory
        self.document_offsets = np.asarray(load("documents"))
        self.document_sources = np.asarray(load("document_sources"))
        self.special_ids = SpecialIds(**self.meta["special_ids"])
        self.vocab_size = int(self.meta["tokenizer"]["vocab_size"])

    @property
    def n_documents(self) -> int:
        return len(self.document_offsets) - 1

    @property
    def n_sentences(self) -> int:
        return len(self.sentence_offsets) - 1

    @cached_property
    def sentence_lengths(self) -> np.ndarray:
        return np.diff(self.sentence_offsets)

    @cached_property
    def sentence_documents(self) -> np.ndarray:
        """[n_sentences] the document of each sentence."""
        return np.repeat(np.arange(self.n_documents), np.diff(self.document_offsets))

    def sentence(self, i: int) -> np.ndarray:
        return self.tokens[self.sentence_offsets[i] : self.sentence_offsets[i + 1]]

    def tokenizer(self):
        """The tokenizer copied beside the corpus: the exact one its ids come from."""
        return load_tokenizer(self.dir / self.meta["tokenizer"]["file"])
