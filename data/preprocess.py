"""Raw text files to a processed corpus: cleaned documents -> sentences -> token ids, memory-mapped.

    python data/preprocess.py --input_path corpus/gutenberg/train --vocab_path tokenizer.json \
        --output_dir processed/ [--validation_fraction 0.01 --seed 42 --workers 2 --overwrite]

A document is a chapter (see data/cleaning.py); the validation split holds out whole documents, drawn
with --seed. Output (read it with data.corpus.ProcessedCorpus):
    meta.json                      tokenizer sha256, vocabulary size, special ids, counts, sources + sha256
    tokenizer.json                 a copy of the tokenizer the ids come from
    {split}.tokens.npy             [n_tokens] uint16 (uint32 for vocabularies over 65,536)
    {split}.sentences.npy          [n_sentences + 1] int64: token offset of each sentence
    {split}.documents.npy          [n_documents + 1] int64: sentence offset of each document
    {split}.document_sources.npy   [n_documents] int32: index into meta.json's "sources"
An existing output made from the same inputs and options is left as it is; a different one is only
replaced with --overwrite (the new corpus is built under a temporary name, then renamed).
"""

import hashlib
import json
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import cleaning, sentences, tokenization  # noqa: E402
from data.cleaning import clean_documents, list_text_files, read_text  # noqa: E402
from data.sentences import split_sentences  # noqa: E402
from data.tokenization import encode_words, load_tokenizer, special_ids, tokenizer_hash  # noqa: E402
from utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402

FORMAT_VERSION = 1
PIPELINE_MODULES = [sys.modules[__name__], cleaning, sentences, tokenization]
SPLIT_STREAM = 0x5B17  # keeps the split's random stream apart from any other use of --seed
_worker_tokenizer = {}


def process_file(path: str, tokenizer_path: str, min_words: int, max_words: int) -> dict:
    """One file -> token ids [n] int32, tokens per sentence, sentences per document, sha256."""
    if tokenizer_path not in _worker_tokenizer:
        _worker_tokenizer[tokenizer_path] = load_tokenizer(tokenizer_path)
    tokenizer = _worker_tokenizer[tokenizer_path]
    text, raw = read_text(Path(path))
    docs = [
        [s for p in doc for s in split_sentences(p)] for doc in clean_documents(text, min_words, max_words)
    ]
    flat = [s for doc in docs for s in doc]
    tokens, sent_lens = encode_words(tokenizer, flat)
    doc_lens = np.array([len(d) for d in docs], dtype=np.int64)
    # sentences that tokenise to nothing are dropped, and documents left without sentences with them
    doc_of_sentence = np.repeat(np.arange(len(docs)), doc_lens)[sent_lens > 0]
    doc_sents = np.bincount(doc_of_sentence, minlength=len(docs))
    return {
        "path": path,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "bytes": len(raw),
        "tokens": tokens,
        "sentence_lengths": sent_lens[sent_lens > 0],
        "document_sentences": doc_sents[doc_sents > 0],
    }


def _run(job):
    return job[0], process_file(*job[1:])


def process_files(files, tokenizer_path, workers, min_words, max_words) -> list[dict]:
    """Files in parallel (largest first, so no worker idles at the end); results in input order."""
    order = sorted(range(len(files)), key=lambda i: -files[i].stat().st_size)
    jobs = [(i, str(files[i]), str(tokenizer_path), min_words, max_words) for i in order]
    results = [None] * len(files)
    bar = tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="preprocess")
    if workers <= 1:
        pool, it = None, map(_run, jobs)
    else:
        # tokenizers runs one thread per process here: the processes already fill the cores
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        pool = get_context("fork").Pool(workers)
        os.environ.pop("TOKENIZERS_PARALLELISM") if saved is None else os.environ.update(
            TOKENIZERS_PARALLELISM=saved
        )
        it = pool.imap_unordered(_run, jobs)
    try:
        for i, result in it:
            results[i] = result
            bar.update(result["bytes"])
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return results


def split_documents(n_docs: int, fraction: float, seed: int) -> np.ndarray:
    """[n_docs] bool, True for the held-out validation documents (at least one when fraction > 0)."""
    n_val = int(round(fraction * n_docs))
    if fraction > 0 and n_docs >= 2:
        n_val = min(max(n_val, 1), n_docs - 1)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, SPLIT_STREAM])))
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[rng.permutation(n_docs)[:n_val]] = True
    return is_val


def write_corpus(out: Path, results: list[dict], is_val: np.ndarray, token_dtype) -> dict:
    """Write each split's arrays into `out`; returns the per-split counts for meta.json."""
    doc_tokens, doc_sent_lens, doc_source = [], [], []
    for source, r in enumerate(results):
        sent_off = np.concatenate([[0], np.cumsum(r["sentence_lengths"])])
        doc_off = np.concatenate([[0], np.cumsum(r["document_sentences"])])
        for d in range(len(r["document_sentences"])):
            s0, s1 = doc_off[d], doc_off[d + 1]
            doc_tokens.append(r["tokens"][sent_off[s0] : sent_off[s1]])
            doc_sent_lens.append(r["sentence_lengths"][s0:s1])
            doc_source.append(source)
    counts = {}
    for split, docs in (("train", np.flatnonzero(~is_val)), ("validation", np.flatnonzero(is_val))):
        sent_lens = [doc_sent_lens[d] for d in docs]
        tokens = np.concatenate([doc_tokens[d] for d in docs] or [np.zeros(0, np.int32)]).astype(token_dtype)
        sentences = np.concatenate([[0], np.cumsum(np.concatenate(sent_lens or [np.zeros(0, np.int64)]))])
        documents = np.concatenate([[0], np.cumsum([len(s) for s in sent_lens], dtype=np.int64)])
        np.save(out / f"{split}.tokens.npy", tokens)
        np.save(out / f"{split}.sentences.npy", sentences.astype(np.int64))
        np.save(out / f"{split}.documents.npy", documents.astype(np.int64))
        np.save(out / f"{split}.document_sources.npy", np.array([doc_source[d] for d in docs], np.int32))
        counts[split] = {"documents": len(docs), "sentences": len(sentences) - 1, "tokens": len(tokens)}
    return counts


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input_path", nargs="+", required=True, help="text files or folders (*.txt)")
    p.add_argument("--vocab_path", required=True, help="tokenizer.json from tokenizers/create_tokenizer.py")
    p.add_argument("--output_dir", required=True, help="folder to write (meta.json + arrays)")
    p.add_argument("--validation_fraction", type=float, default=0.01, help="share of documents held out")
    p.add_argument("--seed", type=int, default=42, help="seed of the validation split")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes over files")
    p.add_argument("--min_document_words", type=int, default=50, help="shorter chapters join the next")
    p.add_argument("--max_document_words", type=int, default=10_000, help="longer chapters are cut")
    p.add_argument("--overwrite", action="store_true", help="replace a different existing output")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    if not 0 <= args.validation_fraction < 1:
        raise UserError(f"--validation_fraction {args.validation_fraction} must be in [0, 1)")
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--output_dir {out} is a file, not a folder")
    tokenizer = load_tokenizer(args.vocab_path)
    ids = special_ids(tokenizer)
    files = list_text_files(args.input_path)
    file_shas = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    options = {
        "validation_fraction": args.validation_fraction,
        "seed": args.seed,
        "min_document_words": args.min_document_words,
        "max_document_words": args.max_document_words,
    }
    fingerprint = hashlib.sha256(
        json.dumps(
            [FORMAT_VERSION, tokenizer_hash(tokenizer), [f.name for f in files], file_shas, options]
        ).encode()
    ).hexdigest()
    if out.exists() and any(out.iterdir()):
        try:
            same = json.loads((out / "meta.json").read_text())["fingerprint"] == fingerprint
        except (OSError, ValueError, KeyError):
            same = False
        if same and not args.overwrite:
            print(f"{out} already holds this corpus (same inputs, tokenizer and options); nothing to do")
            return
        if not args.overwrite:
            raise UserError(
                f"--output_dir {out} already holds different data; pass --overwrite to replace it"
            )

    results = process_files(
        files, args.vocab_path, args.workers, args.min_document_words, args.max_document_words
    )
    n_docs = sum(len(r["document_sentences"]) for r in results)
    if n_docs == 0:
        raise UserError(f"no text left after cleaning {' '.join(args.input_path)}")
    is_val = split_documents(n_docs, args.validation_fraction, args.seed)
    vocab_size = tokenizer.get_vocab_size()
    token_dtype = np.uint16 if vocab_size <= 2**16 else np.uint32

    from utils.repro import code_version  # imports torch: only once there is something to write

    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        counts = write_corpus(tmp, results, is_val, token_dtype)
        tokenizer.save(str(tmp / "tokenizer.json"))
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": fingerprint,
            "tokenizer": {
                "sha256": tokenizer_hash(tokenizer),
                "vocab_size": vocab_size,
                "file": "tokenizer.json",
            },
            "special_ids": ids.to_dict(),
            "token_dtype": np.dtype(token_dtype).name,
            "splits": counts,
            "document": "a chapter: paragraphs between chapter headings, merged/cut to the word limits",
            "options": options,
            "sources": [
                {
                    "name": f.name,
                    "path": str(f.resolve()),
                    "sha256": sha,
                    "bytes": r["bytes"],
                    "documents": len(r["document_sentences"]),
                    "tokens": len(r["tokens"]),
                }
                for f, sha, r in zip(files, file_shas, results)
            ],  # fmt: skip
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "code_version": code_version(),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    c = counts
    print(
        f"wrote {out}: train {c['train']['documents']:,} documents / {c['train']['sentences']:,} sentences / "
        f"{c['train']['tokens']:,} tokens; validation {c['validation']['documents']:,} documents / "
        f"{c['validation']['tokens']:,} tokens ({time.time() - start:.1f}s)"
    )


if __name__ == "__main__":
    run_cli(main)
