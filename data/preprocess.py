"""Raw text to a processed corpus: documents -> sentences -> token ids, streamed into shards, memory-mapped.

    python data/preprocess.py --input_path IN... --vocab_path tokenizer.json --output_dir OUT \
        [--format auto|gutenberg|lines|jsonl|parquet|babylm] [--text_field text] [--shard I/N]
        [--validation_fraction 0.01 --seed 42 --workers 2 --max_document_words W --overwrite]
    python data/preprocess.py --merge --output_dir OUT

Formats and their documents: data/formats.py. The inputs are cut into pieces (~16 MB, at document
boundaries; the same for any N); `--shard I/N` (I in 0..N-1) processes a contiguous, byte-balanced share of
them into OUT/shards/ (several machines may write into one OUT), and `--merge` joins all parts into the
corpus without rereading text. Without --shard both happen (= --shard 0/1, then --merge). The validation
split holds out whole documents, decided by a hash of each document and --seed (data/shards.py), so N=1
and N=3 give identical arrays and meta.json fingerprints. A killed run, rerun with the same arguments,
continues with the parts it finished. Output (read it with data.corpus.ProcessedCorpus):
    meta.json                      fingerprint, arrays_sha256, tokenizer sha256, special ids, counts, sources
    tokenizer.json                 a copy of the tokenizer the ids come from
    {split}.tokens.npy             [n_tokens] uint16 (uint32 for vocabularies over 65,536)
    {split}.sentences.npy          [n_sentences + 1] int64: token offset of each sentence
    {split}.documents.npy          [n_documents + 1] int64: sentence offset of each document
    {split}.document_sources.npy   [n_documents] int32: index into meta.json's "sources"
An existing output made from the same inputs and options is left as it is; a different one is only
replaced with --overwrite.
"""

import hashlib
import json
import os
import shutil
import signal
import sys
import time
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import babylm, cleaning, formats, sentences, shards, tokenization  # noqa: E402
from data.tokenization import load_tokenizer, special_ids, tokenizer_hash  # noqa: E402
from utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from utils.files import check_output_dir, read_json, write_json_atomic, write_text_atomic  # noqa: E402
from utils.shard import parse_shard  # noqa: E402

FORMAT_VERSION = 2
PIPELINE_MODULES = [sys.modules[__name__], cleaning, sentences, tokenization, formats, shards, babylm]
DOCUMENT = {
    "gutenberg": "a chapter: paragraphs between chapter headings, merged/cut to the word limits",
    "lines": "a block of lines (one sentence each) between blank lines",
    "jsonl": "one JSON line's text field",
    "parquet": "one row's text column",
    "babylm": "ELC-BERT's segmentation of the BabyLM source (data/babylm.py)",
}


def plan_job(args, tokenizer) -> dict:
    """Inputs, options and pieces, and their fingerprint: a pure function of the files and the flags."""
    inputs = formats.list_inputs(args.input_path, args.format)
    if args.min_document_words is not None and any(f != "gutenberg" for _, f in inputs):
        raise UserError(
            "--min_document_words applies to --format gutenberg only (other documents are kept whole)"
        )
    vocab_size = tokenizer.get_vocab_size()
    options = {
        "validation_fraction": args.validation_fraction,
        "seed": args.seed,
        **formats.read_options(
            args.text_field,
            tokenizer.token_to_id("[PAR]") is not None,
            args.min_document_words,
            args.max_document_words,
        ),
        "piece_bytes": int(args.piece_mb * 2**20),
    }
    pieces = [
        p
        for i, (path, fmt) in enumerate(inputs)
        for p in formats.plan_pieces(i, path, fmt, options["piece_bytes"])
    ]
    keys = [[*formats.file_key(path), fmt] for path, fmt in inputs]
    job = {
        "format_version": FORMAT_VERSION,
        "tokenizer": {
            "sha256": tokenizer_hash(tokenizer),
            "vocab_size": vocab_size,
            "file": "tokenizer.json",
        },
        "token_dtype": np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32).name,
        "options": options,
        "inputs": [
            {"name": p.name, "path": str(p.resolve()), "format": f, "bytes": k[1]}
            for (p, f), k in zip(inputs, keys)
        ],
        "pieces": pieces,
    }
    fields = [FORMAT_VERSION, job["tokenizer"]["sha256"], options, keys, pieces]
    job["fingerprint"] = hashlib.sha256(json.dumps(fields).encode()).hexdigest()
    return job


def _sha_of(digests: list[str]) -> str:
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def _run(job):
    return shards.process_piece(*job)


def process_pieces(out: Path, job: dict, indices: list[int], tokenizer_path: str, workers: int) -> None:
    """The given pieces into their part folders, in parallel (largest first); finished parts are skipped."""
    done = {i for i in indices if (shards.parts_dir(out) / f"{i:06d}" / "part.json").is_file()}
    todo = sorted(set(indices) - done, key=lambda i: -job["pieces"][i]["bytes"])
    if done:
        print(f"{len(done)} of {len(indices)} parts already written: continuing with {len(todo)}")
    bar = tqdm(
        total=sum(job["pieces"][i]["bytes"] for i in todo), unit="B", unit_scale=True, desc="preprocess"
    )
    jobs = [(out, i, job, tokenizer_path) for i in todo]
    pool, start = None, time.perf_counter()
    if workers > 1 and len(todo) > 1:
        # tokenizers runs one thread per process here: the processes already fill the cores
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
        pool = get_context("fork").Pool(
            min(workers, len(todo)), initializer=_ignore_sigint, maxtasksperchild=16
        )
        os.environ.pop("TOKENIZERS_PARALLELISM") if saved is None else os.environ.update(
            TOKENIZERS_PARALLELISM=saved
        )
    try:
        for part in pool.imap_unordered(_run, jobs) if pool else map(_run, jobs):
            bar.update(job["pieces"][part["piece"]]["bytes"])
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    print(f"{len(todo)} pieces processed in {time.perf_counter() - start:.2f}s")


def _ignore_sigint() -> None:
    """In a worker: Ctrl-C is the parent's to handle (it terminates the pool), so no worker prints its
    own `Process ForkPoolWorker-N:` traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def merge_corpus(out: Path, tokenizer=None, force: bool = False) -> dict:
    """OUT/shards -> the corpus arrays + meta.json in OUT (written last: once it is there, all is)."""
    job_path = out / "shards" / "job.json"
    meta_path = out / "meta.json"
    if not job_path.is_file() and meta_path.is_file():  # merged before (the parts are gone with it)
        print(f"{out} already holds a merged corpus; nothing to do")
        return read_json(meta_path, "corpus meta")
    if not job_path.is_file():
        raise UserError(f"{job_path} not found: run data/preprocess.py --shard I/N into {out} first")
    job = read_json(job_path, "preprocessing job")
    if meta_path.is_file() and not force:
        try:
            if json.loads(meta_path.read_text()).get("fingerprint") == job["fingerprint"]:
                print(f"{out} already holds this corpus; nothing to do")
                return json.loads(meta_path.read_text())
        except ValueError:
            pass
    parts = [shards.read_part(out, i, job) for i in range(len(job["pieces"]))]  # all checked before writing
    n_docs = sum(p["counts"][s]["documents"] for p in parts for s in shards.SPLITS)
    if n_docs == 0:
        raise UserError(f"no text left after cleaning {', '.join(i['path'] for i in job['inputs'])}")
    tokenizer = tokenizer or load_tokenizer(out / "shards" / "tokenizer.json")
    if tokenizer_hash(tokenizer) != job["tokenizer"]["sha256"]:
        raise UserError(f"{out / 'shards' / 'tokenizer.json'} is not the tokenizer of {job_path}")

    from utils.repro import code_version  # imports torch: only once there is something to write

    for entry in out.iterdir():  # a replaced (--overwrite) output: meta.json first, so it never looks whole
        if entry.name not in ("shards",):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    counts, arrays_sha = shards.merge(out, job, parts)
    write_text_atomic(out / "tokenizer.json", tokenizer.to_str(pretty=True))
    per_file = {}
    for p in parts:
        per_file.setdefault(p["file"], []).append(p)
    sources = []
    for i, source in enumerate(job["inputs"]):
        ps = per_file.get(i, [])
        digests = [p["sha256"] for p in ps]
        sources.append({
            **source,
            # one piece: the file's sha256; several: the sha256 of their sha256s (hex, in order)
            "sha256": digests[0] if len(digests) == 1 else _sha_of(digests),
            "pieces": len(ps),
            "documents": sum(p["counts"][s]["documents"] for p in ps for s in shards.SPLITS),
            "tokens": sum(p["counts"][s]["tokens"] for p in ps for s in shards.SPLITS),
        })  # fmt: skip
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": job["fingerprint"],
        "arrays_sha256": arrays_sha,
        "tokenizer": job["tokenizer"],
        "special_ids": special_ids(tokenizer).to_dict(),
        "token_dtype": job["token_dtype"],
        "splits": counts,
        "document": {f: DOCUMENT[f] for f in sorted({s["format"] for s in job["inputs"]})},
        "options": job["options"],
        "sources": sources,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "code_version": code_version(),
    }
    write_json_atomic(meta_path, meta)
    shutil.rmtree(out / "shards", ignore_errors=True)  # the corpus is whole: the parts are not needed
    return meta


def parse_args(argv=None):
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input_path", nargs="+", help="files or folders (searched for the format's extensions)")
    p.add_argument("--vocab_path", help="tokenizer.json from tokenizers/create_tokenizer.py")
    p.add_argument("--output_dir", required=True, help="folder to write (meta.json + arrays)")
    p.add_argument(
        "--format", default="auto", help=f"auto (by extension) or one of {', '.join(formats.FORMATS)}"
    )
    p.add_argument("--text_field", default="text", help="jsonl field / parquet column holding a document")
    p.add_argument("--shard", default=None, help="I/N: process share I of N into OUT/shards (then --merge)")
    p.add_argument("--merge", action="store_true", help="join the finished shards of --output_dir")
    p.add_argument(
        "--piece_mb", type=float, default=formats.PIECE_BYTES / 2**20, help="text per unit of work"
    )
    p.add_argument("--validation_fraction", type=float, default=0.01, help="share of documents held out")
    p.add_argument("--seed", type=int, default=42, help="seed of the validation split")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes over pieces")
    low, high = formats.GUTENBERG_WORDS
    p.add_argument(
        "--min_document_words", type=int, help=f"gutenberg: shorter chapters join the next ({low})"
    )
    p.add_argument(
        "--max_document_words", type=int, help=f"cut longer documents (gutenberg {high}; else never)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace a different existing output")
    args = p.parse_args(argv)
    if not args.merge and (not args.input_path or not args.vocab_path):
        raise UserError("--input_path and --vocab_path are required (unless --merge)")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    out = Path(args.output_dir)
    check_output_dir(out)  # a file, or a folder that cannot be written: refused before any work
    if args.merge:
        meta = merge_corpus(out)
        return _report(out, meta, start)
    if not 0 <= args.validation_fraction < 1:
        raise UserError(f"--validation_fraction {args.validation_fraction} must be in [0, 1)")
    if args.piece_mb <= 0:
        raise UserError(f"--piece_mb {args.piece_mb} must be > 0")
    if args.max_document_words is not None and args.max_document_words < 1:
        raise UserError(f"--max_document_words {args.max_document_words} must be >= 1")
    shard, n_shards = parse_shard(args.shard) if args.shard else (0, 1)
    tokenizer = load_tokenizer(args.vocab_path)
    job = plan_job(args, tokenizer)
    job_path = out / "shards" / "job.json"
    try:
        old_meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        old_meta = {}
    if old_meta.get("fingerprint") == job["fingerprint"] and not args.overwrite:
        print(f"{out} already holds this corpus (same inputs, tokenizer and options); nothing to do")
        return
    # shards/ without a job.json is a run (or a concurrent --shard task) that had not started yet; looked
    # at before job.json is read, so a job.json a concurrent task writes in between is seen as the same job
    others = [e for e in out.iterdir() if e.name != "shards" or job_path.is_file()] if out.is_dir() else []
    try:
        same_job = read_json(job_path)["fingerprint"] == job["fingerprint"]
    except (UserError, KeyError, TypeError):
        same_job = False
    if not same_job and others:
        if not args.overwrite:
            raise UserError(
                f"--output_dir {out} already holds different data; pass --overwrite to replace it"
            )
        shutil.rmtree(out / "shards", ignore_errors=True)  # another job's parts (the old corpus: till merge)
    # a first whole run that fails leaves nothing behind; a --shard task never removes OUT, which other
    # tasks of the array may be writing into
    created = not out.exists() and not args.shard
    try:
        if not same_job:
            write_text_atomic(out / "shards" / "tokenizer.json", tokenizer.to_str(pretty=True))
            write_json_atomic(job_path, job)
        mine = shards.shard_pieces(job["pieces"], shard, n_shards)
        process_pieces(out, job, mine, str(args.vocab_path), args.workers)
        if args.shard:
            print(f"shard {shard}/{n_shards}: {len(mine)} of {len(job['pieces'])} pieces in {out / 'shards'} "
                  f"({time.time() - start:.1f}s); join them with --merge --output_dir {out}")  # fmt: skip
            return
        meta = merge_corpus(out, tokenizer, force=args.overwrite)
    except UserError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        elif not same_job and not args.shard:  # a failed --overwrite: the old corpus stays, alone
            shutil.rmtree(out / "shards", ignore_errors=True)
        raise
    _report(out, meta, start)


def _report(out: Path, meta: dict, start: float) -> None:
    c = meta["splits"]
    print(
        f"wrote {out}: train {c['train']['documents']:,} documents / {c['train']['sentences']:,} sentences / "
        f"{c['train']['tokens']:,} tokens; validation {c['validation']['documents']:,} documents / "
        f"{c['validation']['tokens']:,} tokens ({time.time() - start:.1f}s)"
    )


if __name__ == "__main__":
    run_cli(main)
