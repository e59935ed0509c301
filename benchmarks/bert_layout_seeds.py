"""The default bert layout against bert_exact (= google-research/bert's create_pretraining_data.py, seed for
seed, see benchmarks/RESULTS.md) on a processed corpus: the statistics issue 18 checks, as 10-seed means,
for consecutive blocks of seeds. Prints a Markdown table of the differences bert - bert_exact.

    python benchmarks/bert_layout_seeds.py --input_path processed/dev [--seeds 30] [--block 10]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.bert_layout import bert_max_predictions  # noqa: E402
from data.masking import SubwordMasking  # noqa: E402
from data.pretraining import PretrainingData  # noqa: E402

KEYS = ("short125", "short64", "isnext", "a", "b")


def statistics(data: PretrainingData, max_predictions: int) -> dict:
    batch = data.batch(0, len(data))  # one pass: every instance in file order
    length = batch["attention_mask"].sum(1).numpy()
    len_a = batch["token_type_ids"].numpy().argmax(1) - 2  # B starts after [CLS] A [SEP]
    masked = (batch["masked_labels"] != -100).sum(1).numpy()
    formula = np.minimum(max_predictions, np.maximum(1, np.rint(0.15 * length)))
    return {
        "n": len(data),
        "short125": (length < 125).mean(),
        "short64": (length <= 64).mean(),
        "isnext": (batch["nsp_labels"].numpy() == 0).mean(),
        "a": len_a.mean(),
        "b": (length - 3 - len_a).mean(),
        "formula": (masked == formula).mean(),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--input_path", required=True, help="a processed corpus (data/preprocess.py)")
    p.add_argument("--seq_lengths", default="128,512")
    p.add_argument("--seeds", type=int, default=30, help="data seeds 0..N-1")
    p.add_argument("--block", type=int, default=10, help="seeds per mean")
    args = p.parse_args(argv)
    header = "length | seeds | instances | length < 125 | length <= 64 | IsNext | A mean | B mean | formula"
    print(f"| {header} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for S in map(int, args.seq_lengths.split(",")):
        P = bert_max_predictions(S, 0.15)
        for lo in range(0, args.seeds, args.block):
            seeds = range(lo, min(lo + args.block, args.seeds))
            mean = {}
            for layout in ("bert", "bert_exact"):
                rows = [
                    statistics(
                        PretrainingData(args.input_path, S, True, SubwordMasking(), True, seed, dupe_factor=1,
                                        cache_dir=False, layout=layout),
                        P,
                    )
                    for seed in seeds
                ]  # fmt: skip
                mean[layout] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
            ours, ref = mean["bert"], mean["bert_exact"]
            diffs = " | ".join(f"{ours[k] - ref[k]:+.3f}" for k in KEYS)
            print(
                f"| {S} | {seeds.start}-{seeds.stop - 1} | {ours['n'] / ref['n'] - 1:+.1%} | {diffs} "
                f"| {ours['formula']:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
