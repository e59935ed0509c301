"""CoNLL-U reader for probing: the words (FORM) of each sentence and any token-level column by name.

Multiword-token ranges (ID `3-4`) and empty nodes (ID `5.1`) are skipped: the syntactic words carry the
annotation. Columns: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC (names are case-insensitive).
"""

import random
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError

COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")


@dataclass
class Treebank:
    rows: list[list[list[str]]]  # per sentence, the 10 fields of each word
    path: Path

    @property
    def words(self) -> list[list[str]]:
        return self.column("form")

    def column(self, name: str) -> list[list[str]]:
        i = COLUMNS.index(name)
        return [[tok[i] for tok in sent] for sent in self.rows]


def read_conllu(path: str | Path, max_sentences: int | None = None, seed: int = 0) -> Treebank:
    """Every sentence of the file, or max_sentences of them drawn at random (seeded, in file order)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CoNLL-U file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    spans, start = [], None  # (first, last + 1) line index of each sentence
    for i, line in enumerate(lines):
        if line.strip() and start is None:
            start = i
        elif not line.strip() and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(lines)))
    if not spans:
        raise UserError(f"{path}: no sentences")
    if max_sentences is not None and max_sentences < len(spans):  # parse only the sampled sentences
        keep = sorted(random.Random(seed).sample(range(len(spans)), max_sentences))
        spans = [spans[i] for i in keep]
    sentences = []
    for first, last in spans:
        sentence = []
        for i in range(first, last):
            if lines[i].startswith("#"):
                continue
            fields = lines[i].split("\t")
            if len(fields) != len(COLUMNS):
                raise UserError(f"{path}:{i + 1}: a token line needs {len(COLUMNS)} tab-separated columns")
            if "-" in fields[0] or "." in fields[0]:  # multiword-token range or empty node
                continue
            sentence.append(fields)
        if sentence:
            sentences.append(sentence)
    return Treebank(rows=sentences, path=path)


def labels_of(treebank: Treebank, column: str) -> list[list[str]]:
    """The values of a column by name; an unknown column or one with no annotation is a UserError."""
    name = column.lower()
    if name not in COLUMNS:
        raise UserError(f"unknown CoNLL-U column {column!r} (one of {', '.join(COLUMNS)})")
    values = treebank.column(name)
    if all(v == "_" for sent in values for v in sent):
        raise UserError(f"{treebank.path}: column {column.upper()} has no annotation (all '_')")
    return values
