"""Start-up cost of the bert instance layout (data/bert_layout.py) on a synthetic corpus: a sentence-length
array of N sentences (lognormal, mean ~24 tokens) in Wikipedia-like documents (lognormal, median 10
sentences, long tail). Prints a Markdown table (not a test): the vectorised layout of one copy and of
`--dupe_factor` copies, writing and loading the disk cache, and a plain Python walk of the same rules
(one sentence per iteration, as create_pretraining_data walks them) on the first --python_sentences,
scaled to N, as the ratio.

    python benchmarks/layout_startup.py --sentences 100e6 --dupe_factor 1
    python benchmarks/layout_startup.py --sentences 10e6 --dupe_factor 10
"""

import argparse
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.bert_layout import bert_layout, cached_layout, layout_copy  # noqa: E402


def now():
    return time.process_time(), time.perf_counter()


def since(t0):
    cpu, wall = now()
    return cpu - t0[0], wall - t0[1]


def synthetic_corpus(n_sentences: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.rint(rng.lognormal(3.0, 0.6, n_sentences)), 1, 400).astype(np.int64)
    offsets = np.zeros(n_sentences + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    del lengths
    per_doc = np.maximum(1, np.rint(rng.lognormal(2.3, 1.2, n_sentences // 8))).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum(per_doc)])
    bounds = np.append(bounds[bounds < n_sentences], n_sentences)
    return offsets, bounds


def python_walk(offsets, bounds, max_tokens, short_p, seed):
    """The rules in a plain loop over sentences (ours): the speed a per-sentence Python walk has."""
    rng, n_docs, count = random.Random(seed), len(bounds) - 1, 0
    lengths = np.diff(offsets).tolist()
    for d in range(n_docs):
        first, end = int(bounds[d]), int(bounds[d + 1])
        target = rng.randint(2, max_tokens) if rng.random() < short_p else max_tokens
        i, chunk, n = first, 0, 0
        while i < end:
            chunk, n, i = chunk + lengths[i], n + 1, i + 1
            if i == end or chunk >= target:
                a = rng.randint(1, n - 1) if n >= 2 else 1
                if n == 1 or rng.random() < 0.5:
                    other = rng.randrange(n_docs)
                    start = int(bounds[other]) + rng.randrange(int(bounds[other + 1] - bounds[other]))
                    want, j = target, start
                    while j < bounds[other + 1] and want > 0:
                        want, j = want - lengths[j], j + 1
                    i -= n - a
                count, chunk, n = count + 1, 0, 0
    return count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sentences", type=float, default=100e6)
    p.add_argument("--dupe_factor", type=int, default=1)
    p.add_argument("--seq_length", type=int, default=128)
    p.add_argument("--python_sentences", type=float, default=1e6)
    args = p.parse_args(argv)
    n, max_tokens = int(args.sentences), args.seq_length - 3
    t0 = now()
    offsets, bounds = synthetic_corpus(n)
    rows = [("synthetic corpus", f"{n:,} sentences, {len(bounds) - 1:,} documents", since(t0))]

    t0 = now()
    one = layout_copy(offsets, bounds, max_tokens, 0.1, 0, 0)
    t_one = since(t0)
    rows.append(("bert layout, 1 copy (vectorised)", f"{len(one['target']):,} instances", t_one))
    del one

    m = int(args.python_sentences)
    sub_docs = bounds[bounds <= m]
    t0 = now()
    python_walk(offsets[: sub_docs[-1] + 1], sub_docs, max_tokens, 0.1, 0)
    t_py = tuple(t * n / sub_docs[-1] for t in since(t0))
    rows.append((f"plain Python walk, scaled from {sub_docs[-1]:,} sentences", "1 copy", t_py))

    with tempfile.TemporaryDirectory() as cache:
        options = {"corpus": f"synthetic-{n}", "max_tokens": max_tokens, "dupe_factor": args.dupe_factor}
        t0 = now()
        built = cached_layout(
            cache, options, lambda: bert_layout(offsets, bounds, max_tokens, 0.1, 0, args.dupe_factor)
        )
        t_build = since(t0)
        size = sum(a.nbytes for a in built.values())
        rows.append(
            (
                f"bert layout, {args.dupe_factor} copies + order, written to the cache",
                f"{len(built['target']):,} instances, {size / 1e9:.2f} GB",
                t_build,
            )
        )
        del built
        t0 = now()
        loaded = cached_layout(cache, options, lambda: None)
        _ = int(loaded["order"][-1]) + int(loaded["sentences"][-1, 0])
        rows.append(("another rank / run: load from the cache (memory-mapped)", "", since(t0)))

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"\n{n:,} sentences, seq_length {args.seq_length}, peak RSS {peak:.1f} GB\n")
    print("| step | size | CPU seconds | wall seconds |")
    print("|---|---|---|---|")
    for what, size, (cpu, wall) in rows:
        print(f"| {what} | {size} | {cpu:.2f} | {wall:.2f} |")
    print(f"\nvectorised / plain Python walk, 1 copy: {t_py[0] / t_one[0]:.1f}x less CPU time")


if __name__ == "__main__":
    main()
