"""Tokenizer: training, special ids, lowercase, transformers compatibility, vocab.txt conversion, CLI."""

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from tokenizers import Tokenizer, models, trainers

from data.cleaning import clean_documents, read_text
from data.sentences import split_sentences
from data.tokenization import (
    SPECIAL_TOKENS,
    _pipeline,
    encode_words,
    f95,
    load_tokenizer,
    save_tokenizer,
    special_ids,
    tokenizer_from_vocab,
    tokenizer_hash,
    train_tokenizer,
    word_start_table,
)
from data.wordpiece_training import continuing_symbols, count_words, train_wordpiece_vocab
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


# ---- the default ## WordPiece: tokenizers' trainer made deterministic (data/wordpiece_training.py) -------
def hf_wordpiece(texts, vocab_size: int, lowercase: bool = True) -> set[str]:
    """The vocabulary tokenizers' own "##" WordPiece trainer learns with our settings (ties by chance)."""
    tok = _pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")), lowercase, byte_level=False)
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##", limit_alphabet=1000, show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    return set(tok.get_vocab())


@pytest.fixture(scope="module")
def alice_2000(fixture_books) -> list[str]:
    """2000 sentences on which the "##" trainer breaks ties by chance at vocabulary 2048 (4 to 7 distinct
    vocabularies in 8 trainings, up to 9 tokens apart)."""
    return [
        s for doc in clean_documents(read_text(fixture_books[0])[0]) for p in doc for s in split_sentences(p)
    ][:2000]


def test_wordpiece_training_is_deterministic(alice_2000, tmp_path):
    (tmp_path / "text.txt").write_text("\n".join(alice_2000))
    code = (
        "import sys; from pathlib import Path; from data.tokenization import save_tokenizer as save, "
        "train_tokenizer as train; t = Path(sys.argv[1]).read_text().split('\\n'); "
        "save(train(t, 2048, 2, True), sys.argv[2])"
    )
    for run in ("a", "b"):  # separate processes: tokenizers' hash maps are seeded per process
        subprocess.run(
            [sys.executable, "-c", code, tmp_path / "text.txt", tmp_path / run], cwd=REPO_ROOT, check=True
        )
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    here = tmp_path / "here.json"
    save_tokenizer(train_tokenizer(alice_2000, 2048, 2, lowercase=True), here)
    assert here.read_bytes() == (tmp_path / "a").read_bytes()


def test_wordpiece_training_equals_tokenizers_trainer_up_to_ties(fixture_books, dev_sentences):
    texts = [
        s
        for f in fixture_books
        for d in clean_documents(read_text(f)[0])
        for p in d
        for s in split_sentences(p)
    ]
    # where the trainer meets no tie (30 of 30 trainings identical) ours is its vocabulary
    assert set(train_tokenizer(texts, 512, 2, lowercase=True).get_vocab()) == hf_wordpiece(texts, 512)
    # at 2048 its trainings differ by 0 or 3 tokens (10 of 16 are ours); held out, 988 or 1000 of 1000 agree
    ours = train_tokenizer(texts, 2048, 2, lowercase=True)
    held_out = [ours.encode(s, add_special_tokens=False).tokens for s in dev_sentences[:1000]]
    for vocab in [hf_wordpiece(texts, 2048) for _ in range(3)]:
        assert len(set(ours.get_vocab()) ^ vocab) // 2 <= 6
        tok = _pipeline(
            Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]")), True, False
        )
        same = sum(e.tokens == t for e, t in zip(tok.encode_batch(dev_sentences[:1000]), held_out))
        assert same >= 0.95 * len(held_out)
    # the measures tell apart a tokenizer of half the text
    half = set(train_tokenizer(texts[: len(texts) // 2], 2048, 2, lowercase=True).get_vocab())
    assert len(set(ours.get_vocab()) ^ half) // 2 > 50


def test_wordpiece_alphabet_is_the_trainers():
    """limit_alphabet=1000 as the trainer applies it: the rarest characters dropped, and a character after
    a dropped first one still continues its word ("##z"); characters beyond the BMP are kept too."""
    letters = [c for c in map(chr, [*range(0x100, 0x800), *range(0x10428, 0x10450)]) if c.isalpha()][:1100]
    texts = [" ".join([c + c] * (k + 1)) for k, c in enumerate(letters)]  # counts 2, 4, ..., 2200
    texts += ["z " * 5000, letters[0] + "z"]  # "z" once after the dropped letters[0]
    expected = {*SPECIAL_TOKENS, "z", "##z"} | {p + c for c in letters[101:] for p in ("", "##")}
    assert hf_wordpiece(texts, len(expected), lowercase=False) == expected  # no merge: the alphabet alone
    assert set(train_tokenizer(texts, len(expected), 2).get_vocab()) == expected
    # private-use characters (the normaliser drops them, count_words' callers may not) never collide
    pua = "\U000f0000"
    assert pua not in continuing_symbols(["a", pua]).values()
    vocab = train_wordpiece_vocab(Counter({"ab" + pua: 3}), 12, 2, SPECIAL_TOKENS)
    assert vocab == SPECIAL_TOKENS + ["a", "b", pua, "##b", "##" + pua, "ab", "ab" + pua]


def test_count_words_equals_pre_tokenizing_every_text(fixture_books):
    texts = [p for doc in clean_documents(read_text(fixture_books[3])[0]) for p in doc]
    texts += ["Tab\there\x1cjoined ΣΑΣ naïve 中文字 x\u00a0y", "  ", "İstanbul’s ﬁne"]
    for lowercase in (True, False):
        tok = _pipeline(Tokenizer(models.WordPiece(unk_token="[UNK]")), lowercase, byte_level=False)
        each = Counter(
            w for t in texts for w, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(t))
        )
        assert count_words(iter(texts), tok, batch=7) == each


# ---- every corpus format preprocess reads ---------------------------------------------------------------
def create(*args) -> tuple[int, str]:
    """(exit code, stderr) of create_tokenizer's main, run as its command runs it (in-process: fast)."""
    import importlib.util

    from utils.errors import run_cli as run_main

    spec = importlib.util.spec_from_file_location("create_tokenizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        run_main(lambda: module.main([str(a) for a in args]))
    except SystemExit as exit_:
        return exit_.code, ""
    return 0, ""


@pytest.fixture(scope="module")
def one_book_formats(data_root, tmp_path_factory) -> dict:
    """One Gutenberg book and its sentences written as babylm, lines, jsonl (field "body") and parquet
    (column "content"): {format: path}, plus "sentences" (the book's sentences, in order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("formats")
    book = data_root / "corpus" / "gutenberg" / "train" / "Dickens__A_Christmas_Carol.txt"
    docs = [[s for p in doc for s in split_sentences(p)] for doc in clean_documents(read_text(book)[0])]
    (tmp / "babylm").mkdir()
    blocks = "".join("\n".join(doc) + "\n\n" for doc in docs)
    (tmp / "babylm" / "carol.train").write_text(blocks)  # BabyLM's default rule: a blank line ends a doc
    (tmp / "book.lines").write_text(blocks)
    rows = [{"title": f"D{i}", "body": "\n".join(doc)} for i, doc in enumerate(docs)]
    (tmp / "book.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = pa.table({"id": list(range(len(docs))), "content": ["\n".join(doc) for doc in docs]})
    pq.write_table(table, tmp / "book.parquet", row_group_size=16)
    return {
        "gutenberg": book, "babylm": tmp / "babylm", "lines": tmp / "book.lines",
        "jsonl": tmp / "book.jsonl", "parquet": tmp / "book.parquet",
        "sentences": [s for doc in docs for s in doc],
    }  # fmt: skip


FLAGS = {"jsonl": ["--text_field", "body"], "parquet": ["--text_field", "content"]}


def test_every_format_trains_the_same_tokenizer(one_book_formats, tmp_path):
    def train(fmt, explicit, *extra):
        out = tmp_path / f"{fmt}-{explicit}-{len(extra)}" / "tokenizer.json"
        fmt_flags = ["--format", fmt] if explicit or fmt == "lines" else []
        args = ["--input_path", one_book_formats[fmt], *fmt_flags, *FLAGS.get(fmt, []), *extra]
        assert create(*args, "--vocab_size", 512, "--lowercase", "--output_path", out)[0] == 0
        return out

    sentences = one_book_formats["sentences"]
    # both trainers are deterministic: byte-identical files for every format, auto or named, equal to the
    # tokenizer of the book's sentences trained here
    for flags in (["--byte_level"], []):
        reference = tmp_path / f"reference{len(flags)}.json"
        save_tokenizer(train_tokenizer(sentences, 512, 2, lowercase=True, byte_level=bool(flags)), reference)
        for fmt in ("gutenberg", "babylm", "lines", "jsonl", "parquet"):
            for explicit in (False, True):
                assert train(fmt, explicit, *flags).read_bytes() == reference.read_bytes(), (fmt, flags)


def test_gutenberg_tokenizer_is_todays(fixture_books, tmp_path):
    """The gutenberg path (sentences from data/formats.py) trains on today's paragraphs' words: the same
    tokenizer as the code before --format (data.tokenization.train_tokenizer over its paragraph list)."""
    books = fixture_books[:3]
    paragraphs = [p for f in books for doc in clean_documents(read_text(f)[0]) for p in doc]  # today's texts
    for flags in (["--byte_level"], ["--byte_level", "--elc_tokens", "--lowercase"]):
        out = tmp_path / f"{len(flags)}.json"
        assert create("--input_path", *books, "--vocab_size", 700, *flags, "--output_path", out)[0] == 0
        today = tmp_path / f"today{len(flags)}.json"
        options = {"byte_level": True, "elc_tokens": "--elc_tokens" in flags, "lowercase": len(flags) > 1}
        save_tokenizer(train_tokenizer(paragraphs, 700, 2, **options), today)
        assert out.read_bytes() == today.read_bytes(), flags
    # the default WordPiece (deterministic too)
    out = tmp_path / "wordpiece.json"
    assert create("--input_path", *books, "--vocab_size", 700, "--output_path", out)[0] == 0
    assert tokenizer_hash(load_tokenizer(out)) == tokenizer_hash(train_tokenizer(paragraphs, 700, 2))


def test_babylm_tokenizer_then_preprocess(one_book_formats, tmp_path):
    """A BabyLM folder (children_stories [TAB] lines too) -> an --elc_tokens tokenizer -> preprocess."""
    from data.corpus import ProcessedCorpus
    from data.preprocess import main as preprocess

    folder = tmp_path / "babylm"
    folder.mkdir()
    sentences = one_book_formats["sentences"][:1500]
    (folder / "carol.train").write_text("\n".join(sentences[:1000]) + "\n")
    # children_stories: a line indented by 4 spaces starts with [TAB], a special token with --elc_tokens
    story = [("    " if i % 5 == 0 else "") + s for i, s in enumerate(sentences[1000:])]
    (folder / "children_stories.train").write_text("\n".join(story[:250]) + "\n\n" + "\n".join(story[250:]))
    tok_path = tmp_path / "tok" / "tokenizer.json"
    flags = ["--vocab_size", 512, "--elc_tokens", "--byte_level", "--output_path", tok_path]
    assert create("--input_path", folder, *flags)[0] == 0
    # trained on the text without the [PAR] / [TAB] markers (as ELC-BERT trains its tokenizer)
    expected = train_tokenizer(sentences, 512, 2, byte_level=True, elc_tokens=True)
    assert tokenizer_hash(load_tokenizer(tok_path)) == tokenizer_hash(expected)
    preprocess(["--input_path", str(folder), "--vocab_path", str(tok_path), "--output_dir",
                str(tmp_path / "corpus"), "--workers", "1", "--validation_fraction", "0"])  # fmt: skip
    tokens = np.asarray(ProcessedCorpus(tmp_path / "corpus", "train").tokens)
    tok = load_tokenizer(tok_path)
    assert len(tokens) > 20_000
    assert (tokens == tok.token_to_id("[UNK]")).mean() < 0.01
    assert (tokens == tok.token_to_id("[PAR]")).sum() == 1500  # one per line: every line a paragraph
    assert (tokens == tok.token_to_id("[TAB]")).sum() == 100


def test_cli_bad_corpus_input(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = tmp_path / "tokenizer.json"
    out.write_text("precious")
    (tmp_path / "a.jsonl").write_text('{"text": "Fine text here."}\n{"body": "No text field."}\n')
    pq.write_table(pa.table({"body": ["Some text."]}), tmp_path / "a.parquet")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.train").write_text("\n\n  \n")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "a.jsonl").write_text("{}\n")
    cases = [
        (["--input_path", tmp_path / "a.jsonl", "--format", "xml"], "--format 'xml' must be one of"),
        (["--input_path", tmp_path / "a.jsonl"], "a.jsonl: byte 28: no field 'text' (pass --text_field)"),
        (["--input_path", tmp_path / "a.parquet"], "a.parquet has no column 'text' (columns: body)"),
        (["--input_path", tmp_path / "none", "--format", "babylm"], f"train files under {tmp_path / 'none'}"),
        (["--input_path", tmp_path / "empty"], f"no text left after reading {tmp_path / 'empty'} as babylm"),
    ]  # fmt: skip
    for args, message in cases:
        capsys.readouterr()
        code, _ = create(*args, "--output_path", out)
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, (message, err)
    assert out.read_text() == "precious" and not (tmp_path / "vocab.txt").exists()
    written = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert written == ["a.jsonl", "a.parquet", "tokenizer.json"]  # no vocab.txt, no .tmp
