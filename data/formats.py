"""Input formats: how a file is cut into pieces (units of work) and each piece into documents of sentences.

    gutenberg  *.txt      a Project Gutenberg book, cleaned by data/cleaning.py; documents are chapters
                          (merged below --min_document_words, cut above --max_document_words)
    lines      --format   one sentence per line, a blank line between documents (the input of BERT's
                          create_pretraining_data: Wikipedia, BookCorpus); lines are sentences, never re-split
    jsonl      *.jsonl    one document per line, its text in --text_field (default "text"); a text's lines are
                          paragraphs, split into sentences by data/sentences.py
    parquet    *.parquet  one document per row of the --text_field column (Hugging Face datasets exports of
                          Wikipedia / OpenWebText), read with pyarrow in record batches
    babylm     *.train *.dev *.test   BabyLM's per-line sources, segmented as ELC-BERT does (data/babylm.py)

Outside gutenberg a document is never merged with its neighbours, and only cut when --max_document_words
is given. A piece is a whole file (gutenberg, babylm), a byte range ending at a document boundary (lines:
after a blank line; jsonl: after a newline) or a run of parquet row groups, about PIECE_BYTES each; the
pieces depend on the files alone, so any --shard count sees the same ones.
"""

import hashlib
import json
from pathlib import Path

from data import babylm
from data.cleaning import clean_documents
from data.sentences import split_sentences
from utils.errors import UserError

FORMATS = ("gutenberg", "lines", "jsonl", "parquet", "babylm")
EXTENSIONS = {".txt": "gutenberg", ".jsonl": "jsonl", ".parquet": "parquet"}
EXTENSIONS.update({ext: "babylm" for ext in (".train", ".dev", ".test")})
PIECE_BYTES = 16 << 20  # text per unit of work: bounds a worker's memory, and is what --shard distributes
PARQUET_BATCH_ROWS = 256
GUTENBERG_WORDS = (50, 10_000)  # chapters merged below / cut above (today's book cleaning)


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if path.suffix not in EXTENSIONS:
        raise UserError(
            f"{path}: cannot tell the format from {path.suffix!r}; pass --format {'|'.join(FORMATS)}"
        )
    return EXTENSIONS[path.suffix]


def list_inputs(paths, fmt: str) -> list[tuple[Path, str]]:
    """(file, format) of the inputs: files as given, folders searched recursively for the format's extensions
    (any known extension with --format auto); sorted, so the corpus order is fixed."""
    if fmt not in ("auto", *FORMATS):
        raise UserError(f"--format {fmt!r} must be one of auto, {', '.join(FORMATS)}")
    wanted = set(EXTENSIONS) if fmt in ("auto", "lines") else {e for e, f in EXTENSIONS.items() if f == fmt}
    if fmt == "lines":
        wanted = {".txt", ".lines"}
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in wanted and p.is_file() and not p.name.startswith(".")
            )
            if not found:
                raise UserError(f"no {'/'.join(sorted(wanted))} files under {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"input not found: {path}")
    return [(f, detect_format(f, fmt)) for f in files]


def read_options(text_field="text", par_token=False, min_document_words=None, max_document_words=None):
    """The `opts` read_piece reads (what decides the text of a document), keyed in the order preprocess's
    job fingerprint has always listed them; shared by data/preprocess.py and tokenizers/create_tokenizer.py.
    """
    return {
        "min_document_words": min_document_words,
        "max_document_words": max_document_words,
        "text_field": text_field,
        "par_token": par_token,
    }


def file_key(path: Path) -> list:
    """Cheap identity of an input (name, size, sha256 of its first and last 64 KB): what decides whether an
    existing output or shard was made from it, without reading terabytes at every start."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        f.seek(max(0, size - (1 << 16)))
        tail = f.read()
    return [path.name, size, hashlib.sha256(head + tail).hexdigest()]


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("--format parquet needs pyarrow: pip install pyarrow") from None
    return pq


def _boundary_after(f, pos: int, size: int, fmt: str) -> int:
    """The first document boundary at or after byte `pos` (lines: after a blank line; jsonl: a newline)."""
    f.seek(pos)
    f.readline()  # the rest of the line `pos` falls in
    if fmt == "jsonl":
        return min(f.tell(), size)
    while line := f.readline():
        if not line.strip():
            return f.tell()
    return size


def plan_pieces(file_index: int, path: Path, fmt: str, piece_bytes: int = PIECE_BYTES) -> list[dict]:
    """[{file, start, end, bytes}] covering the file; start/end are bytes (row groups for parquet)."""
    if fmt == "parquet":
        meta = _open_parquet(path).metadata
        pieces, first, acc = [], 0, 0
        for g in range(meta.num_row_groups):
            acc += meta.row_group(g).total_byte_size
            if acc >= piece_bytes or g == meta.num_row_groups - 1:
                pieces.append({"file": file_index, "start": first, "end": g + 1, "bytes": acc})
                first, acc = g + 1, 0
        return pieces
    size = path.stat().st_size
    if fmt in ("gutenberg", "babylm") or size <= piece_bytes:
        return [{"file": file_index, "start": 0, "end": size, "bytes": size}]
    cuts = [0]
    with open(path, "rb") as f:
        while cuts[-1] < size:
            nxt = (
                _boundary_after(f, cuts[-1] + piece_bytes, size, fmt)
                if cuts[-1] + piece_bytes < size
                else size
            )
            cuts.append(nxt)
    return [{"file": file_index, "start": a, "end": b, "bytes": b - a} for a, b in zip(cuts, cuts[1:])]


def _open_parquet(path: Path):
    try:
        return _parquet().ParquetFile(path)
    except UserError:
        raise
    except Exception as err:  # pyarrow raises its own ArrowInvalid / OSError
        raise UserError(f"{path} is not a readable parquet file ({err})") from None


def _decode(raw: bytes, path: Path, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        at = offset + err.start
        raise UserError(f"{path} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {at})") from None


def text_sentences(text: str) -> list[str]:
    """A document's text (lines = paragraphs) -> sentences."""
    return [s for line in text.split("\n") if line.strip() for s in split_sentences(" ".join(line.split()))]


def cut_document(sentences: list[str], max_words: int | None) -> list[list[str]]:
    """Sentences -> parts of at most ~max_words words, cut between sentences (None: the whole document)."""
    if not max_words:
        return [sentences]
    parts, current, count = [], [], 0
    for s in sentences:
        n = len(s.split())
        if current and count + n > max_words:
            parts.append(current)
            current, count = [], 0
        current.append(s)
        count += n
    return parts + ([current] if current else [])


def read_piece(path: Path, fmt: str, piece: dict, opts: dict, digest) -> "iter[list[str]]":
    """The documents of one piece, each a list of sentences; the bytes read go into `digest` (sha256)."""
    if fmt == "parquet":
        pf = _open_parquet(path)
        field = opts["text_field"]
        if field not in pf.schema_arrow.names:
            raise UserError(f"{path} has no column {field!r} (columns: {', '.join(pf.schema_arrow.names)})")
        groups = list(range(piece["start"], piece["end"]))
        for batch in pf.iter_batches(PARQUET_BATCH_ROWS, row_groups=groups, columns=[field]):
            for text in batch.column(0).to_pylist():
                if text is None:
                    continue
                if not isinstance(text, str):
                    raise UserError(f"{path}: column {field!r} holds {type(text).__name__}, not text")
                digest.update(text.encode())
                yield from cut_document(text_sentences(text), opts["max_document_words"])
        return
    with open(path, "rb") as f:
        f.seek(piece["start"])
        raw = f.read(piece["end"] - piece["start"])
    digest.update(raw)
    text = _decode(raw, path, piece["start"])
    if fmt == "gutenberg":
        text = text.removeprefix("\ufeff")
        low, high = opts["min_document_words"], opts["max_document_words"]
        low, high = GUTENBERG_WORDS[0] if low is None else low, high or GUTENBERG_WORDS[1]
        for doc in clean_documents(text, low, high):
            yield [s for p in doc for s in split_sentences(p)]
    elif fmt == "lines":
        doc = []
        for line in text.removeprefix("\ufeff").split("\n"):  # not splitlines: \u2028 is no line break here
            if line.strip():
                doc.append(line.strip())
            elif doc:
                yield from cut_document(doc, opts["max_document_words"])
                doc = []
        if doc:
            yield from cut_document(doc, opts["max_document_words"])
    elif fmt == "jsonl":
        offset = piece["start"]
        for line in raw.split(b"\n"):
            at, offset = offset, offset + len(line) + 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as err:
                raise UserError(f"{path}: byte {at}: not a JSON line ({err})") from None
            field = opts["text_field"]
            if not isinstance(obj, dict) or field not in obj:
                raise UserError(f"{path}: byte {at}: no field {field!r} (pass --text_field)")
            if not isinstance(obj[field], str):
                raise UserError(
                    f"{path}: byte {at}: field {field!r} is {type(obj[field]).__name__}, not text"
                )
            yield from cut_document(text_sentences(obj[field]), opts["max_document_words"])
    elif fmt == "babylm":
        for doc in babylm.documents(path, text.removeprefix("\ufeff").split("\n"), opts["par_token"]):
            yield from cut_document(doc, opts["max_document_words"])
    else:
        raise UserError(f"--format {fmt!r} must be one of {', '.join(FORMATS)}")
