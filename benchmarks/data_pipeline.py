"""Speed of the data pipeline on the real corpus. Prints Markdown tables (not a test).

    python benchmarks/data_pipeline.py [--sections preprocess instances] [--workers 1 2] [--sizes_mb 50 500]
        [--input_path DIR ...] [--work_dir /tmp/data_bench] [--steps 40]

preprocess: a `lines` corpus (one sentence per line, a blank line between chapters) is made from the
Gutenberg books by cleaning and sentence splitting once, then repeated to each of --sizes_mb in the work
dir. On the first size, `data/preprocess.py --format lines` runs with each worker count against the
limit, the tokenizers library's own `encode_batch_fast` over the same lines on the same number of cores
(Rayon threads): MB/s, MB/s per worker and the ratio ours / limit. Every size is then preprocessed with the
largest worker count to show peak memory: the summed RSS of the process tree (sampled every 50 ms; shared
pages counted once per process, so an upper bound) and the largest single process (ru_maxrss). The books
themselves (`--format gutenberg`, cleaning included) are timed too. "ours s" is the time preprocess reports
for its pieces (read, split, tokenise, write the parts, as the limit's column only encodes); "command s"
is the whole command: start-up, planning, the merge (and its import of torch for the code version).
instances: tokenizer training, the epoch layout, batch building and the prefetching loader.
"""

import argparse
import contextlib
import io
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.cleaning import clean_documents, list_text_files, read_text  # noqa: E402
from data.sentences import split_sentences  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.paths import REPO_ROOT, data_root  # noqa: E402

SETTINGS = [(True, 128, 256), (False, 128, 256), (False, 512, 64)]  # (NSP, seq_length, global batch)
PREPROCESS = REPO_ROOT / "data" / "preprocess.py"
REFERENCE = """
import sys, time
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
lines = [l for l in open(sys.argv[2], encoding="utf-8").read().split("\\n") if l]
start = time.perf_counter()
for i in range(0, len(lines), 10_000):
    tok.encode_batch_fast(lines[i : i + 10_000], add_special_tokens=False)
print(time.perf_counter() - start)
"""


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def tree_rss_kib(pid: int) -> int:
    """Summed VmRSS of a process and all its descendants, from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                todo += map(int, open(f"/proc/{p}/task/{task}/children").read().split())
        except (OSError, ValueError):
            pass
    return total


def run_measured(cmd, env=None) -> tuple[float, float, int, int]:
    """(wall seconds, seconds processing the pieces as preprocess reports them, peak summed tree RSS KiB,
    peak single-process RSS KiB) of a preprocess command."""
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(r.stderr[-2000:] if r.returncode else ''); print(r.stdout); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", probe, *map(str, cmd)], stdout=subprocess.PIPE, env=env)
    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_kib(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    pieces = float(out.decode().split("pieces processed in ")[1].split("s")[0])
    return seconds, pieces, peak[0], int(out.split()[-1])


def make_lines_corpus(files, path: Path) -> int:
    """Books -> one sentence per line, a blank line after each chapter; returns the bytes written."""
    with open(path, "w", encoding="utf-8") as f:
        for book in files:
            for doc in clean_documents(read_text(book)[0]):
                f.write("\n".join(s for p in doc for s in split_sentences(p)) + "\n\n")
    return path.stat().st_size


def repeat_to(src: Path, dst: Path, mb: float) -> float:
    data = src.read_bytes()
    with open(dst, "wb") as f:
        for _ in range(max(1, round(mb * 1e6 / len(data)))):
            f.write(data)
    return dst.stat().st_size / 1e6


def preprocess_section(args, work: Path, files, tokenizer_path: Path) -> list[tuple]:
    rows = []
    base = work / "books.lines.txt"
    make_lines_corpus(files, base)
    inputs = {mb: work / f"lines_{mb:g}MB.txt" for mb in args.sizes_mb}
    sizes = {mb: repeat_to(base, path, mb) for mb, path in inputs.items()}
    first = args.sizes_mb[0]

    def lines_cmd(inp, out, w):
        return [sys.executable, PREPROCESS, "--input_path", inp, "--vocab_path", tokenizer_path,
                "--format", "lines", "--output_dir", out, "--workers", w, "--overwrite"]  # fmt: skip

    for w in args.workers:
        env = {
            **os.environ,
            "RAYON_NUM_THREADS": str(w),
            "TOKENIZERS_PARALLELISM": "true" if w > 1 else "false",
        }
        ref = subprocess.run(
            [sys.executable, "-c", REFERENCE, tokenizer_path, inputs[first]],
            capture_output=True,
            text=True,
            env=env,
        )
        t_ref = float(ref.stdout.split()[-1])
        t_all, t_ours, tree, single = run_measured(lines_cmd(inputs[first], work / f"out_{first:g}_{w}", w))
        mb = sizes[first]
        rows.append((f"lines, {w} worker(s)", f"{mb:.0f} MB", t_ref, mb / t_ref, t_ours, mb / t_ours,
                     mb / t_ours / w, t_ref / t_ours, t_all, tree / 1024, single / 1024))  # fmt: skip
    w = max(args.workers)
    for mb in args.sizes_mb[1:]:
        t_all, t_ours, tree, single = run_measured(lines_cmd(inputs[mb], work / f"out_{mb:g}_{w}", w))
        size = sizes[mb]
        rows.append((f"lines, {w} worker(s)", f"{size:.0f} MB", None, None, t_ours, size / t_ours,
                     size / t_ours / w, None, t_all, tree / 1024, single / 1024))  # fmt: skip
    cmd = [sys.executable, PREPROCESS, "--input_path", *args.input_path, "--vocab_path", tokenizer_path,
           "--output_dir", work / "out_books", "--workers", w, "--overwrite"]  # fmt: skip
    t_all, t_ours, tree, single = run_measured(cmd)
    mb = sum(f.stat().st_size for f in files) / 1e6
    rows.append((f"gutenberg (cleaning), {w} worker(s)", f"{mb:.0f} MB", None, None, t_ours, mb / t_ours,
                 mb / t_ours / w, None, t_all, tree / 1024, single / 1024))  # fmt: skip
    for path in inputs.values():
        path.unlink()
    return rows


def instances_section(args, work: Path) -> list[tuple]:
    from data.loader import PretrainingLoader
    from data.masking import STRATEGIES
    from data.preprocess import main as preprocess
    from data.pretraining import PretrainingData

    rows = []
    pre_args = ["--input_path", *args.input_path, "--vocab_path", str(work / "tokenizer.json")]
    pre_args += ["--output_dir", str(work / "corpus"), "--workers", str(max(args.workers)), "--overwrite"]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        _, t_pre = timed(preprocess, pre_args)
    rows.append((f"preprocess ({max(args.workers)} workers, in-process)", "", t_pre, ""))
    for nsp, seq, batch in SETTINGS:
        name = f"{'NSP' if nsp else 'no-NSP'} S={seq}"
        for masking_name, cls in STRATEGIES.items():
            data, t_layout = timed(PretrainingData, work / "corpus", seq, nsp, cls(), False, 1)
            if masking_name == "subword":
                n = len(data)
                rows.append(
                    (f"{name}: epoch layout", f"{n:,} instances", t_layout, f"{n / t_layout:,.0f} inst/s")
                )
            steps = min(args.steps, data.steps_per_epoch(batch))
            _, t_batch = timed(lambda: [data.batch(k, batch) for k in range(steps)])  # noqa: B023
            loader = PretrainingLoader(data, batch, max_steps=steps, prefetch=8)  # as training
            _, t_loader = timed(lambda: [b for b in loader])  # noqa: B023
            for what, t in (("batch()", t_batch), ("PretrainingLoader", t_loader)):
                rate = f"{steps / t:,.1f} batches/s = {steps * batch / t:,.0f} seq/s"
                rows.append((f"{name} {masking_name}: {what}", f"{steps} x [{batch},{seq}]", t, rate))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = data_root() / "corpus" / "gutenberg"
    p.add_argument("--input_path", nargs="+", default=[str(root / "train"), str(root / "dev")])
    p.add_argument("--work_dir", default="/tmp/data_pipeline_bench")
    p.add_argument(
        "--sections", nargs="+", default=["preprocess", "instances"], choices=["preprocess", "instances"]
    )
    p.add_argument("--vocab_size", type=int, default=16384)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    p.add_argument("--sizes_mb", type=float, nargs="+", default=[50, 500], help="lines corpus sizes")
    p.add_argument("--steps", type=int, default=40, help="batches timed per setting")
    args = p.parse_args(argv)
    from data.tokenization import save_tokenizer, train_tokenizer

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    files = list_text_files(args.input_path)
    mb = sum(f.stat().st_size for f in files) / 1e6
    texts, t_clean = timed(lambda: [q for f in files for d in clean_documents(read_text(f)[0]) for q in d])
    tok, t_train = timed(train_tokenizer, texts, args.vocab_size, 2, True)
    save_tokenizer(tok, work / "tokenizer.json")
    del texts
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    load = f"load average {os.getloadavg()[0]:.1f} at the start"
    print(f"\nData pipeline, {machine}, {time.strftime('%Y-%m-%d %H:%M')}; {load}")
    print(
        f"tokenizer: clean + train WordPiece ({len(files)} files, {mb:.1f} MB): {t_clean + t_train:.1f} s\n"
    )
    if "preprocess" in args.sections:
        rows = preprocess_section(args, work, files, work / "tokenizer.json")
        print("| input | size | tokenizers encode_batch s | MB/s | ours s | MB/s | MB/s per worker "
              "| ours / limit | command s | peak RSS, tree MB | largest process MB |")  # fmt: skip
        print("|---" * 11 + "|")
        for r in rows:
            cells = [r[0], r[1]] + ["" if x is None else f"{x:.2f}" for x in r[2:9]]
            cells += [f"{r[9]:.0f}", f"{r[10]:.0f}"]
            print("| " + " | ".join(cells) + " |")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end\n")
    if "instances" in args.sections:
        print("| stage | size | seconds | rate |\n|---|---|---|---|")
        for stage, size, seconds, rate in instances_section(args, work):
            print(f"| {stage} | {size} | {seconds:.2f} | {rate} |")


if __name__ == "__main__":
    run_cli(main)
