"""Raw book text to clean documents of paragraphs.

Fit for Project Gutenberg plain text (and harmless on other text): the licence header and footer go
(modern "*** START OF" / "*** END OF" markers and the older "Etext" small print), CR/CRLF become LF,
Unicode is NFKC-normalised with curly quotes made straight, _italic_ underscores and [Illustration]
tags are dropped, and hard-wrapped lines are joined into one line per paragraph.

A *document* (the unit NSP draws its negatives from) is a chapter: the paragraphs between two chapter
headings (the heading itself is dropped). Chapters shorter than `min_words` are merged into the next
one; longer than `max_words` are cut at paragraph boundaries into near-equal parts, so that a book
without headings still gives chapter-sized documents.
"""

import re
import unicodedata
from pathlib import Path

from utils.errors import UserError

START_RE = re.compile(
    r"^\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*+\s*END\*?THE SMALL PRINT.*$", re.M
)
END_RE = re.compile(
    r"^\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|^(End|END) [Oo][Ff] ([Tt][Hh][EeIi][Ss]? )?"
    r"(Project|PROJECT) (Gutenberg|GUTENBERG)|^\*?(The )?Project Gutenberg('s)? Etext of",
    re.M,
)
# Transcriber credits and notes right after the header, not part of the book
CREDIT_RE = re.compile(
    r"^(Produced by|Transcribed (from|by)|E-?text (prepared|created) by|This e-?text|Prepared by|\[Note|"
    r"Etext (typed|scanned|prepared) by|Scanned by)",
    re.I,
)
HEADING_RE = re.compile(
    r"^(CHAPTER|Chapter|BOOK|Book|PART|Part|STAVE|Stave|VOLUME|Volume|ACT|Act|LETTER|Letter|SCENE)"
    r"\s+([IVXLCDM]+|\d+|[A-Z][A-Za-z]+)\b.{0,80}$"  # "CHAPTER IV. The Pool of Tears", "Chapter 6"
    r"|^([IVXLCDM]+|\d{1,3})(\.?|\.\s+\S.{0,60})$"  # "XII.", "1.  The Cyclone", "I. IN THE DINGEY"
    r"|^[A-Z][A-Z0-9 ,.'\-:;&]{2,60}[A-Z.]$"  # an all-capitals title line: "INCIDENT AT THE WINDOW"
)
EDITORIAL_RE = re.compile(r"gutenberg|\be-?texts?\b|transcriber'?s note", re.I)  # notes about the e-book
QUOTES = [("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"'), ("\t", " ")]
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
ILLUSTRATION_RE = re.compile(r"\[Illustration[^\]]*\]", re.I)
BLANK_LINES_RE = re.compile(r"\n[ \t]*\n\s*")


def strip_gutenberg(text: str) -> str:
    """Drop the Gutenberg header (up to its last start marker) and footer (from its first end marker)."""
    starts = list(START_RE.finditer(text))
    if starts:
        text = text[starts[-1].end() :]
    end = END_RE.search(text)
    return text[: end.start()] if end else text


def normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFKC", text)
    for old, new in QUOTES:  # str.replace: ten times faster than str.translate here
        text = text.replace(old, new)
    text = CONTROL_RE.sub("", text)
    return ILLUSTRATION_RE.sub("", text).replace("_", "")  # Gutenberg's _italics_ markers


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each hard-wrapped block joined into one line."""
    out = []
    for block in BLANK_LINES_RE.split(text):
        line = " ".join(block.split())
        low = line.lower()  # plain substring tests first: the regex is slow on every paragraph
        if line and not (
            ("gutenberg" in low or "text" in low or "transcriber" in low) and EDITORIAL_RE.search(line)
        ):
            out.append(line)
    return out


def is_heading(paragraph: str) -> bool:
    return len(paragraph) <= 100 and HEADING_RE.match(paragraph) is not None


def _split_long(doc: list[str], max_words: int) -> list[list[str]]:
    words = [len(p.split()) for p in doc]
    n_parts = -(-sum(words) // max_words)
    if n_parts <= 1:
        return [doc]
    size, parts, current, count = sum(words) / n_parts, [], [], 0
    for p, w in zip(doc, words):
        current.append(p)
        count += w
        if count >= size * (len(parts) + 1) and len(parts) < n_parts - 1:
            parts.append(current)
            current = []
    return parts + ([current] if current else [])


def clean_documents(text: str, min_words: int = 50, max_words: int = 10_000) -> list[list[str]]:
    """Raw text -> documents (chapters), each a list of paragraphs."""
    paras = paragraphs(normalize(strip_gutenberg(text.replace("\r\n", "\n").replace("\r", "\n"))))
    # transcriber credits sit among the first few blocks after the header
    head = 0
    while head < min(len(paras), 8):
        if CREDIT_RE.match(paras[head]):
            del paras[head]
        else:
            head += 1
    chapters, current = [], []
    for p in paras:
        if is_heading(p):
            if current:
                chapters.append(current)
            current = []
        else:
            current.append(p)
    if current:
        chapters.append(current)
    docs, pending = [], []
    for chapter in chapters:  # merge short chapters forward (tables of contents, epigraphs)
        pending += chapter
        if sum(len(p.split()) for p in pending) >= min_words:
            docs.append(pending)
            pending = []
    if pending:
        if docs:
            docs[-1] += pending
        else:
            docs.append(pending)
    return [part for doc in docs for part in _split_long(doc, max_words)]


def list_text_files(paths) -> list[Path]:
    """Files as given, folders searched recursively for *.txt; sorted, so the corpus order is fixed."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise UserError(f"no .txt files under {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"input not found: {path}")
    return files


def read_text(path: Path) -> tuple[str, bytes]:
    """(text, raw bytes) of a UTF-8 file; a file in any other encoding is a one-line error."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff"), raw
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start})") from None
