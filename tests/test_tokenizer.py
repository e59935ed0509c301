"""Tokenizer: training, special ids, lowercase, transformers compatibility, vocab.txt conversion, CLI."""

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from data.cleaning import clean_documents, read_text
from data.sentences import split_sentences
from data.tokenization import (
    encode_words,
    f95,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    tokenizer_from_vocab,
    train_tokenizer,
    word_start_table,
)
from utils.errors import UserError
from utils.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "tokenizers" / "create_tokenizer.py"


@pytest.fixture(scope="module")
def dev_sentences(data_root) -> list[str]:
    """Sentences of a book the fixture tokenizer never saw."""
    book = data_root / "corpus" / "gutenberg" / "dev" / "Twain__The_Prince_and_the_Pauper.txt"
    docs = clean_documents(read_text(book)[0])
    return [s for doc in docs for p in doc for s in split_sentences(p)][:3000]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(proc, *needles):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert str(needle) in lines[0]


def test_vocabulary_size_special_ids_and_round_trip(tokenizer_path, dev_sentences):
    tok = load_tokenizer(tokenizer_path)
    assert tok.get_vocab_size() == 4096
    assert (tokenizer_path.parent / "vocab.txt").read_text().splitlines()[:5] == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    assert len((tokenizer_path.parent / "vocab.txt").read_text().splitlines()) == 4096
    assert special_ids(tok).to_dict() == {"pad": 0, "unk": 1, "cls": 2, "sep": 3, "mask": 4}
    unk = 0
    for sentence in dev_sentences:
        enc = tok.encode(sentence, add_special_tokens=False)
        assert [tok.token_to_id(t) for t in enc.tokens] == enc.ids
        if 1 in enc.ids:
            unk += 1
            continue
        # the pieces, "##" removed, spell out the normalised text exactly
        normalized = tok.normalizer.normalize_str(sentence)
        assert "".join(t.removeprefix("##") for t in enc.tokens) == "".join(normalized.split())
    assert unk / len(dev_sentences) < 0.01
    pair = tok.encode("The cat sat.", "It was happy.")
    assert pair.ids[0] == 2 and pair.ids.count(3) == 2 and pair.ids[-1] == 3
    assert pair.type_ids == [0] * (pair.ids.index(3) + 1) + [1] * (len(pair.ids) - pair.ids.index(3) - 1)


def test_lowercase_mode(tokenizer_path, fixture_books):
    uncased = load_tokenizer(tokenizer_path)
    assert uncased.encode("The QUEEN said Hello").ids == uncased.encode("the queen said hello").ids
    assert uncased.encode("café").ids == uncased.encode("cafe").ids  # accents stripped like bert-base-uncased
    texts = [p for doc in clean_documents(read_text(fixture_books[0])[0]) for p in doc]
    cased = train_tokenizer(texts, vocab_size=1000, lowercase=False)
    assert cased.encode("The Queen").ids != cased.encode("the queen").ids
    assert cased.get_vocab_size() == 1000 and special_ids(cased).mask == 4


def test_loads_in_transformers_fast_tokenizer(tokenizer_path, dev_sentences):
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(tokenizer_path)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path), unk_token="[UNK]", pad_token="[PAD]")
    for a, b in zip(dev_sentences[:200:2], dev_sentences[1:200:2]):
        ours = tok.encode(a, b)
        theirs = hf(a, b, return_token_type_ids=True)
        assert theirs["input_ids"] == ours.ids
        assert theirs["token_type_ids"] == ours.type_ids


def test_vocab_txt_conversion_tokenizes_like_bert_wordpiece(tokenizer_path, dev_sentences, tmp_path):
    from transformers import BertTokenizer  # the slow, pure-Python reference implementation

    vocab_txt = tokenizer_path.parent / "vocab.txt"
    converted, lowercase = tokenizer_from_vocab(vocab_txt)
    assert lowercase  # detected: the vocabulary has no capitals
    reference = BertTokenizer(str(vocab_txt), do_lower_case=True)
    for sentence in dev_sentences[:1000]:
        assert converted.encode(sentence).ids == reference(sentence)["input_ids"], sentence
    # the CLI writes the same tokenizer, and the file round-trips
    proc = run_cli(SCRIPT, "--from_vocab", vocab_txt, "--output_path", tmp_path / "tokenizer.json")
    assert proc.returncode == 0, proc.stderr
    reloaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert reloaded.encode(dev_sentences[0]).ids == reference(dev_sentences[0])["input_ids"]
    assert (tmp_path / "vocab.txt").read_text() == vocab_txt.read_text()


def test_encode_words_equals_encoding_every_sentence(tokenizer_path, dev_sentences, fixture_books):
    texts = [p for doc in clean_documents(read_text(fixture_books[1])[0]) for p in doc]
    byte_level = train_tokenizer(texts, vocab_size=2000, byte_level=True, elc_tokens=True)
    for tok in (load_tokenizer(tokenizer_path), byte_level):
        ids, lengths = encode_words(tok, dev_sentences)
        reference = [e.ids for e in tok.encode_batch(dev_sentences, add_special_tokens=False)]
        assert lengths.tolist() == [len(r) for r in reference]
        assert ids.tolist() == [i for r in reference for i in r]
    # F95 from word counts equals counting every encoded subword
    counts = Counter(i for e in byte_level.encode_batch(texts, add_special_tokens=False) for i in e.ids)
    ranked = counts.most_common()
    assert f95(byte_level, texts) == ranked[len(ranked) * 95 // 100][1]


def test_byte_level_option(fixture_books):
    texts = [p for doc in clean_documents(read_text(fixture_books[2])[0]) for p in doc]
    tok = train_tokenizer(texts, vocab_size=1500, byte_level=True, elc_tokens=True)
    assert [tok.id_to_token(i) for i in range(7)] == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "[PAR]",
        "[TAB]",
    ]
    enc = tok.encode("Marley was dead: to begin with.", add_special_tokens=False)
    assert tok.decode(enc.ids).strip() == "Marley was dead: to begin with."
    starts = word_start_table(tok)[enc.ids]
    # every whitespace-separated word starts with a "Ġ" piece; ":" and "." continue their word
    assert starts.sum() == 6 and all(t.startswith("\u0120") == s for t, s in zip(enc.tokens, starts))


def test_cli_trains_and_prints_f95(fixture_books, tmp_path):
    out = tmp_path / "tok" / "my.json"
    proc = run_cli(SCRIPT, "--input_path", fixture_books[0], "--vocab_size", 800, "--output_path", out)
    assert proc.returncode == 0, proc.stderr
    f95_line = [line for line in proc.stdout.splitlines() if line.startswith("F_95%")]
    assert len(f95_line) == 1 and int(f95_line[0].split()[2]) >= 1
    tok = load_tokenizer(out)
    assert tok.get_vocab_size() == 800 and (tmp_path / "tok" / "my.vocab.txt").is_file()
    assert json.loads(out.read_text())["model"]["type"] == "WordPiece"


def test_cli_bad_input(tmp_path):
    out = tmp_path / "tokenizer.json"
    out.write_text("precious")
    assert_one_line_error(run_cli(SCRIPT, "--input_path", tmp_path / "nope", "--output_path", out), "nope")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("Caf\xe9 au lait, mon ami.\n".encode("latin-1"))
    assert_one_line_error(run_cli(SCRIPT, "--input_path", bad, "--output_path", out), "latin1.txt", "UTF-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("\n\n   \n")
    assert_one_line_error(run_cli(SCRIPT, "--input_path", empty, "--output_path", out), str(empty))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\n[UNK]\nhello\n")
    assert_one_line_error(run_cli(SCRIPT, "--from_vocab", vocab, "--output_path", out), "vocab.txt", "[CLS]")
    assert out.read_text() == "precious"  # nothing overwritten
    with pytest.raises(UserError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")


def test_save_is_atomic_and_sorted(tmp_path, tokenizer_path):
    tok = load_tokenizer(tokenizer_path)
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    assert not list(tmp_path.glob("*.tmp"))
    learned = [tok.id_to_token(i) for i in range(5, tok.get_vocab_size())]
    assert learned == sorted(learned)  # ids do not depend on the trainer's tie-breaking
    assert np.all(word_start_table(tok)[:5])
