"""BabyLM's per-line sources (*.train / *.dev / *.test) segmented into documents as ELC-BERT does.

Reproduced from ELC-BERT's preprocess/*.py (ltgoslo/elc-bert@3152a70), one rule per source, chosen by the
file's name (`aochildes.train` -> aochildes; the 2024 names `childes`, `simple_wiki` map to the 2023 ones):
  aochildes          no document boundary (the whole file is one document); each line capitalised and quoted
  bnc_spoken         a blank line ends a document; lines "." "!" "?" dropped; capitalised, quoted
  cbt                a blank line ends a document; PTB brackets (-LRB- ...) and `` '' quotes restored
  children_stories   a blank line ends a document only after a block of 2+ lines; indented lines get [TAB]
  gutenberg          lines joined into paragraphs; two blank lines after a multi-line paragraph end a document
  open_subtitles     a blank line ends a document; leading "-" dropped; unquoted lines quoted
  qed                as open_subtitles, plus HTML entities unescaped and markup / arrow lines dropped
  simple_wikipedia   a blank line ends an article; one-line stubs ("X is a village in ...") dropped with
                     their title line; [n] references and HTML entities removed
  switchboard        a blank line ends a document; leading "-" dropped; lines quoted
  wikipedia          a "= = = Title = = =" line starts a document; [[Category:/[[File: lines dropped, [n]
                     references and [[link|text]] markup removed
  any other name     a blank line ends a document
In every source a line repeated right after itself is dropped where ELC-BERT drops it (aochildes, bnc_spoken,
open_subtitles, qed, switchboard). Then, as ELC-BERT's segment.py, every line is a paragraph split into
sentences, and its last sentence ends with [PAR] when the tokenizer has that token (--elc_tokens).
Not reproduced (named deviations): ELC-BERT's normalize.clean (sacremoses punctuation normalisation and
ftfy, extra dependencies; the tokenizer's normaliser does the Unicode part); NLTK's punkt splitter (ours is
data/sentences.py); and ELC-BERT drops the last paragraph of gutenberg and the last line of
simple_wikipedia at the end of a file (an end-of-file slip): we keep them. ELC-BERT concatenates the
processed sources without a separator, so the last document of one source runs into the first of the
next; here a file's documents end with it.
"""

import re
from pathlib import Path

from data.sentences import split_sentences

ALIASES = {"childes": "aochildes", "simple_wiki": "simple_wikipedia"}
BOUNDARY = None  # marker between documents in a rule's output
REF_RE = re.compile(r"\[\d+\]")
LINK_RE = re.compile(r"\[\[([^\|\]]*)\|*[^\]]*\]\]")
TITLE_RE = re.compile(r"= = = ([^\=]*) = = =")
STUBS = ("is a commune. It is", "is a commune found", "is a city in", "is a village in",
         "is a municipality in", "is a town in")  # fmt: skip
PTB = [("-LRB-", "("), ("-LCB-", "{"), ("-LSB-", "["), ("-RRB-", ")"), ("-RCB-", "}"), ("-RSB-", "]"),
       ("`` ", '"'), ("``", '"'), (" ''", '"'), ("''", '"')]  # fmt: skip


def _squash(line: str) -> str:
    return " ".join(line.split())


def _undash(line: str) -> str:
    return line[2:] if line.startswith("- ") else line[1:] if line.startswith("-") else line


def _quote_unless_marked(line: str) -> str:
    marked = (
        line.endswith(":") or line.startswith('"') or line.endswith('"')
        or any(line.startswith(a) and line.endswith(b) for a, b in ("()", "[]", "{}"))
    )  # fmt: skip
    return line if marked else f'"{line}"'


def _unescape(line: str) -> str:
    return line.replace("&gt;", ">").replace("&lt;", "<").replace("&amp;", "&")


def _dedup(lines):
    """Drops a line equal to the one just before it (a boundary resets the comparison)."""
    prev = BOUNDARY
    for line in lines:
        if line is BOUNDARY or line != prev:
            yield line
        prev = line


def _quoted_speech(lines, drop_marks: bool):  # aochildes (no boundaries), bnc_spoken
    for line in map(str.strip, lines):
        if not line:
            if drop_marks:
                yield BOUNDARY
            continue
        if drop_marks and line in (".", "!", "?"):
            continue
        yield f'"{line[0].upper() + line[1:]}"'


def _cbt(lines):
    for line in map(str.strip, lines):
        for a, b in PTB:
            line = line.replace(a, b)
        yield line or BOUNDARY


def _children_stories(lines):
    block = 0
    for line in lines:
        if not line.strip():
            if block > 1:
                yield BOUNDARY
            block = 0
            continue
        block += 1
        yield f"[TAB] {_squash(line)}" if line.startswith("    ") else _squash(line)


def _gutenberg(lines):
    paragraph, last_len, blanks = [], 0, 0
    for line in map(_squash, lines):
        if not line:
            if paragraph:
                yield " ".join(paragraph)
                last_len = len(paragraph)
            if blanks == 1 and last_len > 1:
                yield BOUNDARY
            paragraph, blanks = [], blanks + 1
            continue
        blanks = 0
        paragraph.append(line)
    if paragraph:
        yield " ".join(paragraph)


def _dialogue(lines, qed: bool):  # open_subtitles, qed
    for line in map(_squash, lines):
        line = _undash(line)
        if not line:
            yield BOUNDARY
            continue
        if qed:  # ELC-BERT checks for markup, then unescapes and checks again, three times
            if "&lt" in line and "&gt" in line:
                continue
            for _ in range(3):
                line = _unescape(line)
                if "&lt" in line and "&gt" in line:
                    break
            if ("&lt" in line and "&gt" in line) or "->" in line:
                continue
            if line.endswith(":") and not any(c.isalpha() for c in line):
                continue
        yield _quote_unless_marked(line)


def _simple_wikipedia(lines):
    prev = None
    for line in lines:
        line = REF_RE.sub("", _squash(line))
        if not line:
            if prev:
                yield prev
                yield BOUNDARY
            prev = None
        elif len(line) < 128 and any(stub in line for stub in STUBS):
            prev = None  # the stub and its title line go
        else:
            if prev is not None:
                yield prev
            prev = _unescape(_unescape(line))
    if prev:
        yield prev


def _switchboard(lines):
    for line in map(_squash, lines):
        line = _undash(line)
        yield f'"{line}"' if line else BOUNDARY


def _wikipedia(lines):
    for i, line in enumerate(map(_squash, lines)):
        if i > 0 and line.startswith("= = = "):
            yield BOUNDARY
        if not line or line.startswith(("[[Category:", "[[File:")):
            continue
        yield TITLE_RE.sub(r"\1", LINK_RE.sub(r"\1", REF_RE.sub("", line)))


def _blank_separated(lines):
    for line in map(_squash, lines):
        yield line or BOUNDARY


RULES = {
    "aochildes": lambda lines: _dedup(_quoted_speech(lines, drop_marks=False)),
    "bnc_spoken": lambda lines: _dedup(_quoted_speech(lines, drop_marks=True)),
    "cbt": _cbt,
    "children_stories": _children_stories,
    "gutenberg": _gutenberg,
    "open_subtitles": lambda lines: _dedup(_dialogue(lines, qed=False)),
    "qed": lambda lines: _dedup(_dialogue(lines, qed=True)),
    "simple_wikipedia": _simple_wikipedia,
    "switchboard": lambda lines: _dedup(_switchboard(lines)),
    "wikipedia": _wikipedia,
}


def source_of(path: Path) -> str:
    name = Path(path).name.split(".")[0].lower()
    return ALIASES.get(name, name)


def documents(path: Path, lines: list[str], par_token: bool):
    """The documents of one BabyLM file, each a list of sentences."""
    rule = RULES.get(source_of(path), _blank_separated)
    doc = []
    for line in rule(lines):
        if line is BOUNDARY:
            if doc:
                yield doc
            doc = []
        elif line:
            sentences = split_sentences(line)
            if sentences and par_token:
                sentences[-1] += " [PAR]"
            doc += sentences
    if doc:
        yield doc
