"""Speed of the data pipeline on the real corpus: tokenizer training, preprocessing, instance layout,
batch building and the prefetching loader. Prints a Markdown table (not a test).

    python benchmarks/data_pipeline.py [--input_path DIR ...] [--work_dir /tmp/data_bench] [--steps 40]
"""

import argparse
import contextlib
import io
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.cleaning import clean_documents, list_text_files, read_text  # noqa: E402
from data.loader import PretrainingLoader  # noqa: E402
from data.masking import STRATEGIES  # noqa: E402
from data.preprocess import main as preprocess  # noqa: E402
from data.pretraining import PretrainingData  # noqa: E402
from data.tokenization import save_tokenizer, train_tokenizer  # noqa: E402
from utils.errors import run_cli  # noqa: E402
from utils.paths import data_root  # noqa: E402

# (NSP, seq_length, global batch): BERT/MultiBERTs phase 1, ELC-BERT phase 1, ELC-BERT --long_after phase
SETTINGS = [(True, 128, 256), (False, 128, 256), (False, 512, 64)]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = data_root() / "corpus" / "gutenberg"
    p.add_argument("--input_path", nargs="+", default=[str(root / "train"), str(root / "dev")])
    p.add_argument("--work_dir", default="/tmp/data_pipeline_bench")
    p.add_argument("--vocab_size", type=int, default=16384)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=40, help="batches timed per setting")
    args = p.parse_args(argv)
    work = Path(args.work_dir)
    rows = []

    files = list_text_files(args.input_path)
    mb = sum(f.stat().st_size for f in files) / 1e6
    texts, t_clean = timed(lambda: [q for f in files for d in clean_documents(read_text(f)[0]) for q in d])
    tok, t_train = timed(train_tokenizer, texts, args.vocab_size, 2, True)
    save_tokenizer(tok, work / "tokenizer.json")
    rows.append(
        ("tokenizer: clean + train WordPiece", f"{len(files)} files, {mb:.1f} MB", t_clean + t_train, "")
    )

    pre_args = ["--input_path", *args.input_path, "--vocab_path", str(work / "tokenizer.json")]
    pre_args += ["--output_dir", str(work / "corpus"), "--workers", str(args.workers), "--overwrite"]
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
        _, t_pre = timed(preprocess, pre_args)
    rows.append((f"preprocess ({args.workers} workers)", f"{mb:.1f} MB", t_pre, f"{mb / t_pre:.2f} MB/s"))

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

    print(f"\nData pipeline, {platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}\n")
    print("| stage | size | seconds | rate |\n|---|---|---|---|")
    for stage, size, seconds, rate in rows:
        print(f"| {stage} | {size} | {seconds:.2f} | {rate} |")


if __name__ == "__main__":
    run_cli(main)
