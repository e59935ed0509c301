"""Rule-based English sentence splitting (no downloaded model).

A sentence ends at . ! ? or an ellipsis, optionally followed by closing quotes or brackets, when the
next word starts with a capital letter, a digit or an opening quote. It does not end after a known
abbreviation (Mr. Dr. St. e.g. ...) or a single capital initial (J. K. Rowling), nor at an ellipsis
followed by "I" (a trailing-off "Well... I don't know" continues the sentence).
"""

import re

ABBREVIATIONS = frozenset(
    "mr mrs ms messrs mme mlle dr drs prof rev revd hon st mt ft jr sr sen gen col capt lt sgt maj adm "
    "gov pres esq bros co corp inc ltd no nos vol vols chap ch fig figs pp p viz cf vs e.g i.e al approx "
    "ave blvd rd jan feb mar apr jun jul aug sep sept oct nov dec mon tue wed thu fri sat sun".split()
)
# terminator run, closing quotes/brackets, whitespace, then the start of the next sentence
BOUNDARY_RE = re.compile(r"(\.\.\.|[.!?\u2026]+)([\"')\]\u201d\u2019]*)\s+(?=[\"'(\[\u201c\u2018]*[A-Z0-9])")


def _is_boundary(text: str, match: re.Match) -> bool:
    term = match.group(1)
    if term in ("...", "\u2026") or term.startswith(".."):
        return not text.startswith("I ", match.end())
    if term != "." or match.group(2):  # ! ? and a quoted full stop always end a sentence
        return True
    word = text[text.rfind(" ", 0, match.start()) + 1 : match.start()].lstrip("\"'([\u201c\u2018")
    if len(word) == 1 and word.isupper():  # an initial: "J. K."
        return False
    return word.lower() not in ABBREVIATIONS


def split_sentences(paragraph: str) -> list[str]:
    """One paragraph (a single line) to its sentences; a sentence never spans paragraphs."""
    sentences, start = [], 0
    for match in BOUNDARY_RE.finditer(paragraph):
        if _is_boundary(paragraph, match):
            end = match.start(2) + len(match.group(2))
            sentences.append(paragraph[start:end])
            start = match.end()
    if start < len(paragraph):
        sentences.append(paragraph[start:])
    return [s for s in (s.strip() for s in sentences) if s]
