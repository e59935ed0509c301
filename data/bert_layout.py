"""BERT's sentence-pair instances, rule for rule as google-research/bert's create_pretraining_data.py
(commit eedf571: create_instances_from_document, truncate_seq_pair, create_masked_lm_predictions), the
data of BERT, MultiBERTs and EarlyBERTs. Our own implementation (no code of the reference), vectorised.

Per dupe copy c (N copies, each its own targets, chunks, pairs, truncation and masks):
- each document draws ONE target length: seq_length - 3, or with probability short_p uniform in
  [2, seq_length - 3];
- a chunk takes sentences until it holds the target or the document ends; a chunk of one sentence
  (a long sentence, a document's last one) is closed as it is;
- A = the chunk's first a sentences, a uniform in [1, n - 1] (a = 1 for n = 1); B is the rest (IsNext),
  or, for a one-sentence chunk and otherwise with probability 1/2, sentences of a random document
  (up to 10 draws to get another than this one) from a uniform sentence on, until they hold target -
  len(A) tokens or the document ends; then the chunk's unused sentences are PUT BACK: the next chunk
  starts right after A;
- truncate_seq_pair cuts the longer side (B on ties) one token at a time, front or back by a coin;
- masks: round(mask_p * len) predictions, len counting [CLS] and both [SEP], at least 1, at most
  max_predictions; every token but [CLS]/[SEP] is a candidate (whole words: a "##" piece joins the word
  before it, even across [SEP]); 80% [MASK], 10% kept, 10% a random id of the WHOLE vocabulary.
The reference walks each document in a Python loop; we walk all documents at once, one chunk per
document per round (rounds = the most chunks of any one document), all draws from one Philox stream
keyed by (data seed, copy). The layout is cached on disk (see `cached_layout`).
"""

import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from utils.files import save_npy_atomic, write_json_atomic

LAYOUT_VERSION = 1  # bump when the layout's rules or random streams change: old caches are then unused
BERT_LAYOUT_STREAM = 0xB1A7
RANDOM_DOCUMENT_TRIES = 10  # the reference's "for _ in range(10)"


def _rng(*words) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([int(w) for w in words])))


def truncate_pair(len_a, len_b, max_tokens: int):
    """Lengths after BERT's truncate_seq_pair, which drops one token at a time from the longer side (B
    on ties) until the pair fits; vectorised over arrays of lengths."""
    len_a, len_b = np.asarray(len_a), np.asarray(len_b)
    excess = len_a + len_b - max_tokens
    diff = np.abs(len_a - len_b)
    rest = excess - diff  # once equal, B and A take turns, B first
    shorter = np.minimum(len_a, len_b)
    even_a, even_b = shorter - rest // 2, shorter - (rest + 1) // 2
    new_a = np.where(excess <= 0, len_a, np.where(diff >= excess, len_a - excess * (len_a > len_b), even_a))
    new_b = np.where(excess <= 0, len_b, np.where(diff >= excess, len_b - excess * (len_a <= len_b), even_b))
    return new_a, new_b


def bert_max_predictions(seq_length: int, mask_p: float) -> int:
    """max_predictions_per_seq as BERT used it (20 at 128, 80 at 512): mask_p * S up to a multiple of 10."""
    return 10 * int(np.ceil(seq_length * mask_p / 10 - 1e-9))


def bert_mask_count(length: np.ndarray, mask_p: float, max_predictions: int) -> np.ndarray:
    """[b] predictions per instance: min(max_predictions, max(1, round(mask_p * length))), `length` the
    tokens of [CLS] A [SEP] B [SEP]; np.rint rounds half to even, as Python's round."""
    return np.minimum(max_predictions, np.maximum(1, np.rint(np.asarray(length) * mask_p))).astype(np.int64)


def first_reaching(offsets, start, want, stop, window: int = 8) -> np.ndarray:
    """[m] the smallest e in (start, stop] with offsets[e] - offsets[start] >= want, else stop: the end of
    sentences taken from `start` on until they hold `want` tokens. Chunks span few sentences, so a
    window of the next sentences is read at once (one [m, window] gather, local in memory; a binary
    search over a large corpus misses the cache at every level), then the rare longer ones step on."""
    last = len(offsets) - 1
    cols = np.minimum(start[:, None] + np.arange(1, window + 1), last)  # [m, window]
    reached = (offsets[cols] - offsets[start][:, None] >= want[:, None]) | (cols >= stop[:, None])
    found = reached.any(1)
    e = np.where(found, start + 1 + reached.argmax(1), start + window)
    todo = np.flatnonzero(~found)
    base = offsets[start]
    while len(todo):
        e[todo] += 1
        todo = todo[(offsets[e[todo]] - base[todo] < want[todo]) & (e[todo] < stop[todo])]
    return np.minimum(e, stop)


def layout_copy(offsets, doc_bounds, max_tokens: int, short_p: float, data_seed: int, copy: int) -> dict:
    """One dupe copy. offsets [n_sent + 1] token offsets of the sentences, doc_bounds [n_doc + 1] sentence
    offsets of the documents -> {"sentences" [n, 4] (A first, A end, B first, B end; ends exclusive),
    "is_random_next" [n] bool, "target" [n] the document's target length}."""
    offsets = np.asarray(offsets, dtype=np.int64)
    doc_bounds = np.asarray(doc_bounds, dtype=np.int64)
    live = np.flatnonzero(np.diff(doc_bounds) > 0)  # the reference drops empty documents
    first, end = doc_bounds[live], doc_bounds[live + 1]
    n_live = len(live)
    rng = _rng(BERT_LAYOUT_STREAM, data_seed, copy)
    short = rng.random(n_live) < short_p
    target = np.where(short, rng.integers(2, max_tokens + 1, n_live), max_tokens)  # one per document
    walker, cursor = np.arange(n_live), first.copy()  # the documents still walked, their next sentence
    parts = []
    while len(walker):  # one round: the next chunk of every document not yet walked to its end
        m, t, s, doc_end = len(walker), target[walker], cursor, end[walker]
        # the chunk: sentences s.. until they hold t tokens, or the document's end
        e = first_reaching(offsets, s, t, doc_end)
        n = e - s
        a_end = s + 1 + np.floor(rng.random(m) * (n - 1)).astype(np.int64)  # a in [1, n-1]; 1 when n == 1
        is_random = (n == 1) | (rng.random(m) < 0.5)
        b_first, b_end = a_end.copy(), e.copy()
        r = np.flatnonzero(is_random)
        if len(r):
            # a random document: up to 10 draws until it differs from this one (else the last draw)
            r_doc = np.floor(rng.random(len(r)) * n_live).astype(np.int64)
            clash = np.flatnonzero(r_doc == walker[r])
            for _ in range(RANDOM_DOCUMENT_TRIES - 1):
                if not len(clash):
                    break
                r_doc[clash] = np.floor(rng.random(len(clash)) * n_live).astype(np.int64)
                clash = clash[r_doc[clash] == walker[r[clash]]]
            r_first = first[r_doc] + np.floor(rng.random(len(r)) * (end[r_doc] - first[r_doc])).astype(
                np.int64
            )
            want = t[r] - (offsets[a_end[r]] - offsets[s[r]])  # target_b_length (may be <= 0: one sentence)
            b_first[r], b_end[r] = r_first, first_reaching(offsets, r_first, want, end[r_doc])
        parts.append((np.stack([s, a_end, b_first, b_end], 1), is_random, t))
        nxt = np.where(is_random, a_end, e)  # random B: the chunk's unused sentences are put back
        keep = nxt < doc_end
        walker, cursor = walker[keep], nxt[keep]
    parts = parts or [(np.zeros((0, 4), np.int64), np.zeros(0, bool), np.zeros(0, np.int64))]
    return {
        "sentences": np.concatenate([p[0] for p in parts]).astype(
            np.int32 if len(offsets) < 2**31 else np.int64
        ),
        "is_random_next": np.concatenate([p[1] for p in parts]),
        "target": np.concatenate([p[2] for p in parts]).astype(np.int16 if max_tokens < 2**15 else np.int32),
    }


def bert_layout(offsets, doc_bounds, max_tokens, short_p, data_seed, dupe_factor) -> dict:
    """All dupe copies, copy after copy (instance index = position in these arrays), plus "order" [n]:
    the fixed permutation every pass visits them in (the reference shuffles all copies together once)."""
    copies = [layout_copy(offsets, doc_bounds, max_tokens, short_p, data_seed, c) for c in range(dupe_factor)]
    out = {k: np.concatenate([c[k] for c in copies]) for k in copies[0]}
    out["copy"] = np.repeat(np.arange(dupe_factor, dtype=np.int16), [len(c["target"]) for c in copies])
    n = len(out["target"])
    out["order"] = (
        _rng(BERT_LAYOUT_STREAM, data_seed, dupe_factor, n)
        .permutation(n)
        .astype(np.int32 if n < 2**31 else np.int64)
    )
    return out


def corpus_fingerprint(corpus) -> str:
    """sha256 of what a layout depends on: meta.json, the split, its sentence and document offsets."""
    h = hashlib.sha256((corpus.dir / "meta.json").read_bytes())
    h.update(corpus.split.encode())
    h.update(np.ascontiguousarray(corpus.sentence_offsets).tobytes())
    h.update(np.ascontiguousarray(corpus.document_offsets).tobytes())
    return h.hexdigest()


def cached_layout(cache_dir, options: dict, build) -> dict:
    """build() once per `options` (which must include the corpus fingerprint), cached under cache_dir as
    memory-mapped .npy files: ranks on a node share the pages, and a rank that finds the lock held waits
    for the first to finish instead of building the same layout again. cache_dir None: build, no cache.
    An unwritable cache folder only loses the cache."""
    if cache_dir is None:
        return build()
    key = hashlib.sha256(json.dumps({**options, "version": LAYOUT_VERSION}, sort_keys=True).encode())
    folder = Path(cache_dir) / f"bert_layout_{key.hexdigest()[:24]}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return build()
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released by the kernel if this process dies
        done = folder / "layout.json"
        if not done.is_file():
            arrays = build()
            try:
                for name, array in arrays.items():
                    save_npy_atomic(folder / f"{name}.npy", array)
                write_json_atomic(
                    done, {"options": options, "version": LAYOUT_VERSION, "arrays": sorted(arrays)}
                )
            except OSError:
                return arrays
        names = json.loads(done.read_text())["arrays"]
        return {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
    finally:
        os.close(lock)  # closing the descriptor releases the lock


def bert_pairs(layout: dict, indices, offsets, max_tokens: int) -> dict:
    """Where the tokens of instances `indices` of a bert layout come from, before the front cuts: A and B
    truncated to lengths a_length, b_length by removing cut_a, cut_b tokens. The caller draws the front
    share, Binomial(cut, 1/2), from each instance's stream: truncate_seq_pair flips a coin per removed
    token, and which side loses a token depends only on the lengths."""
    s, a_end, b_s, b_e = np.asarray(layout["sentences"][indices], dtype=np.int64).T
    full_a, full_b = offsets[a_end] - offsets[s], offsets[b_e] - offsets[b_s]
    len_a, len_b = truncate_pair(full_a, full_b, max_tokens)
    return {
        "a_sentences": np.stack([s, a_end], 1),
        "b_sentences": np.stack([b_s, b_e], 1),
        "a_start": offsets[s],
        "b_start": offsets[b_s],
        "a_length": len_a,
        "b_length": len_b,
        "cut_a": full_a - len_a,
        "cut_b": full_b - len_b,
        "is_random_next": np.asarray(layout["is_random_next"][indices]),
        "target": np.asarray(layout["target"][indices], dtype=np.int64),
        "copy": np.asarray(layout["copy"][indices], dtype=np.int64),
    }
