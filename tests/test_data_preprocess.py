"""Cleaning, sentence splitting and preprocessing on the real Gutenberg corpus; CLI bad input."""

import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from data.cleaning import clean_documents, read_text
from data.corpus import ProcessedCorpus
from data.formats import read_piece
from data.sentences import split_sentences
from data.shards import is_validation
from data.tokenization import encode_words, load_tokenizer
from utils.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "data" / "preprocess.py"
BOILERPLATE = re.compile(r"(?i:gutenberg|\betexts?\b)|\*\*\* ?(START|END) OF|SMALL PRINT|Small Print!")


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    assert all(str(n) in lines[0] for n in needles), lines[0]


def arrays(corpus_dir):
    return {p.name: np.load(p) for p in sorted(corpus_dir.glob("*.npy"))}


def test_every_book_is_cleaned(data_root):
    books = sorted((data_root / "corpus" / "gutenberg").rglob("*.txt"))
    assert len(books) == 87
    for book in books:
        raw = read_text(book)[0]
        assert "\r" in raw and BOILERPLATE.search(raw)  # the raw books do have both
        docs = clean_documents(raw)
        assert docs, book.name
        text = "\x00".join(p for doc in docs for p in doc)  # one scan per book, paragraphs kept apart
        assert "\r" not in text and "\n" not in text and "  " not in text, book.name
        found = BOILERPLATE.search(text)
        assert found is None, (book.name, text[max(0, found.start() - 100) : found.end() + 100])
    # chapters are documents: Alice has 12 chapters (a poem's caption and the title page add two)
    alice = clean_documents(
        read_text(data_root / "corpus/gutenberg/train/Carroll__Alice_s_Adventures_in_Wonderland.txt")[0]
    )
    assert 12 <= len(alice) <= 14
    assert alice[1][0].startswith("'Curiouser and curiouser!' cried Alice")  # chapter II, heading gone
    # hard-wrapped lines are joined: the first paragraph of chapter I is one line
    assert any(
        p.startswith("Alice was beginning to get very tired of sitting by her sister on the bank")
        and len(p) > 300
        for p in alice[0]
    )


def test_sentence_splitting():
    text = (
        'Mr. Holmes said "Come in!" He entered. Dr. J. H. Watson replied... I think not. '
        '"Well?" asked he. It was 3 p.m. Then St. Paul\'s bell rang... The end.'
    )
    assert split_sentences(text) == [
        'Mr. Holmes said "Come in!"',
        "He entered.",
        "Dr. J. H. Watson replied... I think not.",
        '"Well?" asked he.',
        "It was 3 p.m.",
        "Then St. Paul's bell rang...",
        "The end.",
    ]
    assert split_sentences("'Stop!' cried the Queen. 'Off with her head!'") == [
        "'Stop!' cried the Queen.",
        "'Off with her head!'",
    ]


def test_processed_corpus_layout(processed_corpus, fixture_books, tokenizer_path):
    meta = json.loads((processed_corpus / "meta.json").read_text())
    assert meta["special_ids"] == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    assert meta["tokenizer"]["vocab_size"] == 4096 and meta["token_dtype"] == "uint16"
    assert [s["sha256"] for s in meta["sources"]] == [
        hashlib.sha256(f.read_bytes()).hexdigest() for f in fixture_books
    ]
    train, val = ProcessedCorpus(processed_corpus, "train"), ProcessedCorpus(processed_corpus, "validation")
    assert train.tokens.dtype == np.uint16 and isinstance(train.tokens, np.memmap)
    n_docs = train.n_documents + val.n_documents
    assert 0 < val.n_documents < 0.15 * n_docs and meta["splits"]["train"]["tokens"] == len(train.tokens)
    for split in (train, val):
        assert split.sentence_offsets[0] == 0 and split.sentence_offsets[-1] == len(split.tokens)
        assert np.all(np.diff(split.sentence_offsets) > 0) and np.all(np.diff(split.document_offsets) > 0)
    # each book's documents, train and validation together and in order, are exactly its token ids, and a
    # document is in validation exactly when its hash says so
    tokenizer = load_tokenizer(tokenizer_path)
    opts = {**meta["options"], "min_document_words": None, "max_document_words": None}
    for source, book in enumerate(fixture_books):
        piece = {"start": 0, "end": book.stat().st_size}
        docs = list(read_piece(book, "gutenberg", piece, opts, hashlib.sha256()))
        docs_of = {
            split: iter(np.flatnonzero(split.document_sources == source).tolist()) for split in (train, val)
        }
        for doc in docs:
            ids, lens = encode_words(tokenizer, doc)
            split = val if is_validation(" ".join(" ".join(doc).split()), 0.05, 0) else train
            d = next(docs_of[split])
            s0, s1 = split.document_offsets[d], split.document_offsets[d + 1]
            assert np.array_equal(split.tokens[split.sentence_offsets[s0] : split.sentence_offsets[s1]], ids)
            assert np.array_equal(np.diff(split.sentence_offsets[s0 : s1 + 1]), lens[lens > 0])
        assert all(next(it, None) is None for it in docs_of.values())  # no document left over
    # validation documents are not in the training split
    train_docs = {
        train.tokens[
            train.sentence_offsets[train.document_offsets[d]] : train.sentence_offsets[
                train.document_offsets[d + 1]
            ]
        ].tobytes()
        for d in range(train.n_documents)
    }
    for d in range(val.n_documents):
        doc = val.tokens[
            val.sentence_offsets[val.document_offsets[d]] : val.sentence_offsets[val.document_offsets[d + 1]]
        ]
        assert doc.tobytes() not in train_docs


def test_cli_parallel_rerun_and_overwrite(processed_corpus, fixture_books, tokenizer_path, tmp_path):
    out = tmp_path / "corpus"
    common = ["--input_path", *fixture_books, "--vocab_path", tokenizer_path, "--output_dir", out]
    proc = run(*common, "--validation_fraction", 0.05, "--seed", 0, "--workers", 2)
    assert proc.returncode == 0, proc.stderr
    # two processes produce exactly what one did (the session fixture)
    a, b = arrays(out), arrays(processed_corpus)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    meta = (out / "meta.json").read_text()
    again = run(*common, "--validation_fraction", 0.05, "--seed", 0)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    refused = run(*common, "--validation_fraction", 0.05, "--seed", 1)
    assert_one_line_error(refused, str(out), "--overwrite")
    assert (out / "meta.json").read_text() == meta
    small = ["--input_path", fixture_books[2], "--vocab_path", tokenizer_path, "--output_dir", out]
    assert run(*small, "--seed", 1, "--overwrite", "--workers", 1).returncode == 0
    new = json.loads((out / "meta.json").read_text())
    assert new["options"]["seed"] == 1 and len(new["sources"]) == 1
    assert not list(tmp_path.glob(".corpus*"))  # no temporary folders left


def test_cli_bad_input(tokenizer_path, fixture_books, tmp_path):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("\n \n")
    assert_one_line_error(
        run("--input_path", empty, "--vocab_path", tokenizer_path, "--output_dir", out), "empty"
    )
    latin = tmp_path / "latin" / "book.txt"
    latin.parent.mkdir()
    latin.write_bytes("Il \xe9tait une fois une princesse.\n".encode("latin-1"))
    proc = run(
        "--input_path",
        fixture_books[0],
        latin,
        "--vocab_path",
        tokenizer_path,
        "--output_dir",
        out,
        "--workers",
        2,
    )
    assert_one_line_error(proc, "book.txt", "UTF-8")
    missing = tmp_path / "no_tokenizer.json"
    assert_one_line_error(
        run("--input_path", fixture_books[0], "--vocab_path", missing, "--output_dir", out),
        "no_tokenizer.json",
    )
    assert_one_line_error(
        run("--input_path", tmp_path / "nowhere", "--vocab_path", tokenizer_path, "--output_dir", out),
        "nowhere",
    )
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    # an existing folder with other files is never written into
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(
        run("--input_path", fixture_books[2], "--vocab_path", tokenizer_path, "--output_dir", out),
        "--overwrite",
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # a failed --overwrite of a finished corpus leaves that corpus whole, and nothing of the failed job
    corpus = tmp_path / "corpus"
    assert (
        run(
            "--input_path", fixture_books[2], "--vocab_path", tokenizer_path, "--output_dir", corpus
        ).returncode
        == 0
    )
    before = {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()}
    bad = run("--input_path", latin, "--vocab_path", tokenizer_path, "--output_dir", corpus, "--overwrite")
    assert_one_line_error(bad, "book.txt", "UTF-8")
    assert {p.name: p.read_bytes() for p in corpus.iterdir() if p.is_file()} == before
    assert not (corpus / "shards").exists()


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5])
def test_validation_split_by_document_hash(fraction):
    docs = [f"document number {i} says something" for i in range(4000)]
    is_val = np.array([is_validation(d, fraction, seed=3) for d in docs])
    sd = (fraction * (1 - fraction) * len(docs)) ** 0.5
    assert abs(is_val.sum() - fraction * len(docs)) <= 4 * sd  # a Binomial(4000, fraction) count
    # whitespace does not matter (the words decide), the seed does
    assert is_validation("  ".join(docs[0].split()), fraction, 3) == is_val[0]
    if fraction:
        assert not np.array_equal(is_val, [is_validation(d, fraction, seed=4) for d in docs])
