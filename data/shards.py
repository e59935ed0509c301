"""Parts and the merge: every piece of the input (data/formats.py) becomes one part folder, written while the
corpus is processed (so memory does not grow with it, and a killed run keeps what it finished); the merge
joins the parts, in piece order, into the final memory-mapped arrays without rereading any text.

    OUT/shards/job.json              the plan: inputs, options, tokenizer sha256, pieces (the same for any N)
    OUT/shards/parts/000042/         piece 42, renamed into place only once complete:
        part.json                    job fingerprint, tokenizer sha256, file, sha256 of the bytes, counts
        {split}.tokens.bin           [n_tokens] raw token ids (meta's token_dtype)
        {split}.sentences.bin        [n_sentences] int64 tokens per sentence
        {split}.documents.bin        [n_documents] int64 sentences per document

A document goes to validation when the 64-bit blake2b hash of (seed, its whitespace-separated words) falls
below validation_fraction * 2^64: decided by the document alone, so the split is the same for any number of
shards, identical documents share a split, and the split does not depend on the tokenizer.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from data.formats import read_piece
from data.tokenization import encode_words, load_tokenizer
from utils.errors import UserError
from utils.files import atomic_write, write_json_atomic

SPLITS = ("train", "validation")
ARRAYS = {"tokens": None, "sentences": np.int64, "documents": np.int64}  # None: the token dtype
BATCH_CHARS = 4 << 20  # text encoded at once in a worker
COPY_ITEMS = 1 << 24  # elements copied at once by the merge
_worker_tokenizer = {}


def parts_dir(out: Path) -> Path:
    return out / "shards" / "parts"


def shard_pieces(pieces: list[dict], shard: int, n_shards: int) -> list[int]:
    """The contiguous run of pieces shard `shard` of `n_shards` processes, balanced by bytes."""
    total = max(1, sum(p["bytes"] for p in pieces))
    mine, before = [], 0
    for i, p in enumerate(pieces):
        if min(n_shards - 1, int(n_shards * (before + p["bytes"] / 2) / total)) == shard:
            mine.append(i)
        before += p["bytes"]
    return mine


def is_validation(words: str, fraction: float, seed: int) -> bool:
    if fraction <= 0:
        return False
    h = hashlib.blake2b(words.encode(), digest_size=8, key=f"split-{seed}".encode()).digest()
    return int.from_bytes(h, "little") < fraction * 2.0**64


def process_piece(out: Path, index: int, job: dict, tokenizer_path: str) -> dict:
    """Piece `index` of the job -> its part folder (skipped when already there); returns its part.json."""
    final = parts_dir(out) / f"{index:06d}"
    if (final / "part.json").is_file():
        return read_part(out, index, job)
    if tokenizer_path not in _worker_tokenizer:
        _worker_tokenizer[tokenizer_path] = load_tokenizer(tokenizer_path)
    tokenizer = _worker_tokenizer[tokenizer_path]
    piece, opts = job["pieces"][index], job["options"]
    source = job["inputs"][piece["file"]]
    dtype = np.dtype(job["token_dtype"])
    tmp = parts_dir(out) / f".{index:06d}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files = {(s, a): open(tmp / f"{s}.{a}.bin", "wb") for s in SPLITS for a in ARRAYS}
    counts = {s: dict.fromkeys(ARRAYS, 0) for s in SPLITS}
    digest = hashlib.sha256()

    def flush(docs):
        flat = [s for doc in docs for s in doc]
        if not flat:
            return
        tokens, sent_lens = encode_words(tokenizer, flat)
        doc_val = np.array(
            [
                is_validation(" ".join(" ".join(d).split()), opts["validation_fraction"], opts["seed"])
                for d in docs
            ]
        )
        sent_doc = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
        keep = sent_lens > 0  # sentences that tokenise to nothing go, and documents left empty with them
        doc_sents = np.bincount(sent_doc[keep], minlength=len(docs))
        sent_val, tok_val = doc_val[sent_doc], np.repeat(doc_val[sent_doc], sent_lens)
        for split, want in (("train", False), ("validation", True)):
            arrays = {
                "tokens": tokens[tok_val == want].astype(dtype),
                "sentences": sent_lens[keep & (sent_val == want)].astype(np.int64),
                "documents": doc_sents[(doc_val == want) & (doc_sents > 0)].astype(np.int64),
            }
            for name, a in arrays.items():
                files[split, name].write(a.tobytes())
                counts[split][name] += len(a)

    try:
        batch, chars = [], 0
        for doc in read_piece(Path(source["path"]), source["format"], piece, opts, digest):
            batch.append(doc)
            chars += sum(map(len, doc))
            if chars >= BATCH_CHARS:
                flush(batch)
                batch, chars = [], 0
        flush(batch)
        for f in files.values():
            f.close()
        part = {
            "job": job["fingerprint"],
            "tokenizer_sha256": job["tokenizer"]["sha256"],
            "piece": index,
            "file": piece["file"],
            "sha256": digest.hexdigest(),
            "counts": counts,
        }
        write_json_atomic(tmp / "part.json", part)
        os.replace(tmp, final)  # the part appears whole or not at all
    finally:
        for f in files.values():
            f.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return part


def read_part(out: Path, index: int, job: dict) -> dict:
    """part.json of piece `index`, checked against the job and the sizes of its arrays (one-line errors)."""
    folder = parts_dir(out) / f"{index:06d}"
    path = folder / "part.json"
    if not path.is_file():
        name = job["inputs"][job["pieces"][index]["file"]]["name"]
        raise UserError(
            f"{path} not found: piece {index} ({name}) is not processed yet; run its --shard first"
        )
    try:
        part = json.loads(path.read_text())
        counts = part["counts"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is empty or not a part written by data/preprocess.py") from None
    if part.get("tokenizer_sha256") != job["tokenizer"]["sha256"]:
        raise UserError(f"{path} was made with another tokenizer than {out} (sha256 differs)")
    if part.get("job") != job["fingerprint"]:
        raise UserError(f"{path} belongs to another preprocessing job (other inputs or options)")
    for split in SPLITS:
        for name, dtype in ARRAYS.items():
            f = folder / f"{split}.{name}.bin"
            want = counts[split][name] * np.dtype(dtype or job["token_dtype"]).itemsize
            have = f.stat().st_size if f.is_file() else -1
            if have != want:
                raise UserError(f"{f} holds {max(have, 0)} bytes, {want} expected: the part is damaged; "
                                "delete its folder and rerun its --shard")  # fmt: skip
    return part


def _read_bin(path: Path, dtype, n: int):
    """Chunks of a raw array file (memory-mapped, at most COPY_ITEMS elements each)."""
    if n == 0:
        return
    data = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    for i in range(0, n, COPY_ITEMS):
        yield np.asarray(data[i : i + COPY_ITEMS])


def _write_npy(path: Path, dtype, n: int, chunks, digest) -> None:
    """A .npy of shape [n] written from a stream of chunks (atomically; never all in memory)."""

    def write(f):
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": (n,),
        }
        np.lib.format.write_array_header_1_0(f, header)
        got = 0
        for chunk in chunks:
            data = np.ascontiguousarray(chunk, dtype=dtype).tobytes()
            digest.update(data)
            f.write(data)
            got += len(chunk)
        assert got == n, (path, got, n)

    atomic_write(path, write)


def merge(out: Path, job: dict, parts: list[dict]) -> tuple[dict, str]:
    """Writes OUT/{split}.{tokens,sentences,documents,document_sources}.npy from the parts, in piece order;
    returns the per-split counts and the sha256 of all arrays."""
    digest, counts = hashlib.sha256(), {}
    folders = [parts_dir(out) / f"{i:06d}" for i in range(len(parts))]
    dtype = np.dtype(job["token_dtype"])
    for split in SPLITS:
        n = {a: sum(p["counts"][split][a] for p in parts) for a in ARRAYS}
        bins = {
            a: [(f / f"{split}.{a}.bin", p["counts"][split][a]) for f, p in zip(folders, parts)]
            for a in ARRAYS
        }
        tokens = (c for path, k in bins["tokens"] for c in _read_bin(path, dtype, k))
        _write_npy(out / f"{split}.tokens.npy", dtype, n["tokens"], tokens, digest)

        def offsets(files):  # lengths -> offsets [n + 1], carried across parts
            yield np.zeros(1, np.int64)
            total = 0
            for path, k in files:
                for c in _read_bin(path, np.int64, k):
                    c = total + np.cumsum(c)
                    total = int(c[-1])
                    yield c

        _write_npy(
            out / f"{split}.sentences.npy", np.int64, n["sentences"] + 1, offsets(bins["sentences"]), digest
        )
        _write_npy(
            out / f"{split}.documents.npy", np.int64, n["documents"] + 1, offsets(bins["documents"]), digest
        )
        sources = (np.full(p["counts"][split]["documents"], p["file"], np.int32) for p in parts)
        _write_npy(out / f"{split}.document_sources.npy", np.int32, n["documents"], sources, digest)
        counts[split] = {"documents": n["documents"], "sentences": n["sentences"], "tokens": n["tokens"]}
    return counts, digest.hexdigest()
