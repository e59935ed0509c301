"""Input formats on a Wikipedia-style corpus made here (lines, jsonl, parquet): one document per article,
the same tokens in every form, NSP negatives only from other articles; BabyLM's ELC-BERT segmentation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data import babylm
from data.corpus import ProcessedCorpus
from data.formats import plan_pieces
from data.masking import SubwordMasking
from data.pretraining import PretrainingData
from data.shards import is_validation
from data.tokenization import encode_words, load_tokenizer
from utils.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "data" / "preprocess.py"
WORDS = """the of and river city war king church school music film team born village island station railway
county league album north south was is has had which first after during""".split()


def make_articles(n=60, seed=0) -> list[list[list[str]]]:
    """Articles -> paragraphs -> sentences of random words; lengths from 1 sentence to ~12,000 words."""
    rng = np.random.default_rng(seed)
    articles = []
    for a in range(n):
        n_sent = 1 if a % 17 == 3 else 1500 if a == 7 else int(rng.integers(2, 40))
        sents = []
        for _ in range(n_sent):
            words = list(rng.choice(WORDS, size=int(rng.integers(3, 15))))
            sents.append(" ".join([f"Article{a}", *words]).capitalize() + ".")
        cuts = sorted(set(rng.integers(1, n_sent, size=n_sent // 5))) if n_sent > 1 else []
        articles.append([sents[i:j] for i, j in zip([0, *cuts], [*cuts, n_sent])])
    return articles


def write_lines(path: Path, articles) -> Path:
    path.write_text("".join("\n".join(s for p in art for s in p) + "\n\n" for art in articles))
    return path


def write_jsonl(path: Path, articles) -> Path:
    rows = [{"title": f"A{i}", "text": "\n".join(" ".join(p) for p in art)} for i, art in enumerate(articles)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def preprocess(inp, tok, out, *extra):
    args = [sys.executable, SCRIPT, "--input_path", inp, "--vocab_path", tok, "--output_dir", out]
    proc = subprocess.run([*map(str, args), *map(str, extra)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def wiki(tmp_path_factory, tokenizer_path):
    tmp = tmp_path_factory.mktemp("wiki")
    articles = make_articles()
    lines = write_lines(tmp / "wiki.txt", articles)
    jsonl = write_jsonl(tmp / "wiki.jsonl", articles)
    common = ["--validation_fraction", 0.2, "--workers", 1]
    return {
        "articles": articles,
        "lines": preprocess(
            lines, tokenizer_path, tmp / "lines", "--format", "lines", "--piece_mb", 0.01, *common
        ),
        "jsonl": preprocess(jsonl, tokenizer_path, tmp / "jsonl", *common),
        "tmp": tmp,
    }


def documents(corpus_dir):
    """{split: [(tokens, sentence lengths)] per document}."""
    out = {}
    for split in ("train", "validation"):
        c = ProcessedCorpus(corpus_dir, split)
        docs = []
        for d in range(c.n_documents):
            s0, s1 = c.document_offsets[d], c.document_offsets[d + 1]
            docs.append(
                (
                    np.asarray(c.tokens[c.sentence_offsets[s0] : c.sentence_offsets[s1]]),
                    c.sentence_lengths[s0:s1],
                )
            )
        out[split] = docs
    return out


def test_one_document_per_article_same_tokens_in_lines_and_jsonl(wiki, tokenizer_path):
    tokenizer = load_tokenizer(tokenizer_path)
    expected = {"train": [], "validation": []}
    for art in wiki["articles"]:  # each article whole: the 1-sentence ones not merged, the long one not cut
        sents = [s for p in art for s in p]
        split = "validation" if is_validation(" ".join(" ".join(sents).split()), 0.2, 42) else "train"
        expected[split].append(encode_words(tokenizer, sents))
    assert 5 <= len(expected["validation"]) <= 25
    for form in ("lines", "jsonl"):
        got = documents(wiki[form])
        for split in expected:
            assert len(got[split]) == len(expected[split]), (form, split)
            for (ids, lens), (want_ids, want_lens) in zip(got[split], expected[split]):
                assert np.array_equal(ids, want_ids)
                assert np.array_equal(lens, want_lens)  # lines are the sentences; jsonl re-splits the same
    a, b = (json.loads((wiki[f] / "meta.json").read_text()) for f in ("lines", "jsonl"))
    assert (
        a["arrays_sha256"] == b["arrays_sha256"] and a["sources"][0]["pieces"] > 3
    )  # many pieces, one corpus


def test_nsp_negatives_come_from_other_articles(wiki):
    data = PretrainingData(
        wiki["lines"], 64, nsp=True, masking=SubwordMasking(), static_masking=True, data_seed=1
    )
    inst = data.build(np.arange(len(data)), 0)
    offsets = data.corpus.sentence_offsets[data.corpus.document_offsets]  # token offset of each document
    doc_of_token = lambda t: np.searchsorted(offsets, t, side="right") - 1  # noqa: E731
    a_doc, b_doc = doc_of_token(inst["a_start"]), doc_of_token(inst["b_start"])
    rand = inst["is_random_next"]
    assert 0.4 < rand.mean() < 0.6
    assert np.all(a_doc == inst["document"]) and np.all(a_doc[rand] != b_doc[rand])
    assert np.all(a_doc[~rand] == b_doc[~rand])


def test_parquet_matches_jsonl(wiki, tokenizer_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": i, "text": "\n".join(" ".join(p) for p in art)} for i, art in enumerate(wiki["articles"])]
    path = wiki["tmp"] / "wiki.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    assert len(plan_pieces(0, path, "parquet", piece_bytes=20_000)) > 2
    out = preprocess(
        path, tokenizer_path, wiki["tmp"] / "parquet", "--validation_fraction", 0.2, "--piece_mb", 0.02
    )
    a, b = (json.loads((d / "meta.json").read_text()) for d in (out, wiki["jsonl"]))
    assert a["arrays_sha256"] == b["arrays_sha256"] and a["splits"] == b["splits"]


def test_lines_pieces_end_at_blank_lines(tmp_path):
    path = write_lines(tmp_path / "w.txt", make_articles(30))
    pieces = plan_pieces(0, path, "lines", piece_bytes=3000)
    raw = path.read_bytes()
    assert pieces[0]["start"] == 0 and pieces[-1]["end"] == len(raw) and len(pieces) > 5
    for p, q in zip(pieces, pieces[1:]):
        assert p["end"] == q["start"] and raw[p["end"] - 2 : p["end"]] == b"\n\n"


def segment(name, text, par=False):
    return list(babylm.documents(Path(name), text.split("\n"), par))


def test_babylm_segmentation_as_elc_bert():
    # gutenberg: wrapped lines joined; two blank lines after a multi-line paragraph end a document
    text = "Title line\n\nIt was a\ndark night.\n\n\nNext one\nbegins. Here.\n\nOne line.\n\n\nStill two."
    assert segment("gutenberg.train", text) == [
        ["Title line", "It was a dark night."],
        ["Next one begins.", "Here.", "One line.", "Still two."],
    ]
    # wikipedia: a "= = = Title = = =" line starts an article; markup and references go; blanks are no break
    text = (
        "= = = Cat = = =\nA cat[1] is an [[animal|animal]].\n\n[[Category:Cats]]\n= = = Dog = = =\nDogs bark."
    )
    assert segment("wikipedia.dev", text) == [["Cat", "A cat is an animal."], ["Dog", "Dogs bark."]]
    # aochildes (childes in 2024): one document; lines capitalised, quoted, repeats dropped; [PAR] per line
    assert segment("childes.train", "hi there\nhi there\nno", par=True) == [
        ['"Hi there" [PAR]', '"No" [PAR]']
    ]
    # simple_wikipedia: a stub article goes with its title; blank lines end articles
    text = "Paris\nParis is in France.\n\nFoo\nFoo is a village in Bar.\n\nRome\nIt is old &amp; big."
    want = [["Paris", "Paris is in France."], ["Rome", "It is old & big."]]
    assert segment("simple_wiki.train", text) == want
    # children_stories: a blank line ends a document only after 2+ lines; indented lines get [TAB]
    text = "The Fox\n\nOnce a fox.\n    It ran.\n\nThe End"
    assert segment("children_stories.train", text) == [
        ["The Fox", "Once a fox.", "[TAB] It ran."],
        ["The End"],
    ]
    # bnc_spoken / open_subtitles / switchboard: speech quoted, dashes and bare marks dropped
    assert segment("bnc_spoken.train", "yes\n.\nyes\n\nok") == [['"Yes"'], ['"Ok"']]
    assert segment("open_subtitles.train", "- Go!\n(laughs)\n\nName:") == [['"Go!"', "(laughs)"], ["Name:"]]
