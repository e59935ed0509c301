"""What the quick start's model learned: validation MLM accuracy of a checkpoint next to two unigram
baselines on the same masked positions (always predicting the training corpus's most frequent token;
drawing from its unigram distribution, whose expected accuracy is the mean of p(label)).

    python scripts/quickstart_report.py --checkpoint_path runs/quickstart/pretrain/checkpoints/step_N
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.io import load_model  # noqa: E402
from training.pretrain_args import PretrainConfig  # noqa: E402
from training.pretraining_objective import IGNORE  # noqa: E402
from training.pretraining_phases import build_pretraining_data  # noqa: E402
from training.run_config import from_record  # noqa: E402
from utils.errors import ArgumentParser, UserError, run_cli  # noqa: E402
from utils.files import read_json  # noqa: E402


def unigram(corpus: Path, vocab_size: int, special: list[int]) -> np.ndarray:
    """[V] the training tokens' relative frequencies, special tokens excluded (never a label)."""
    counts = np.bincount(np.load(corpus / "train.tokens.npy", mmap_mode="r"), minlength=vocab_size)
    counts = counts[:vocab_size].astype(np.float64)
    counts[special] = 0
    return counts / counts.sum()


@torch.no_grad()
def report(checkpoint: Path, batches: int, batch_size: int) -> dict:
    args_file = checkpoint / "args.json"
    if not args_file.is_file():
        raise UserError(f"--checkpoint_path {checkpoint}: no args.json (not a pretraining checkpoint)")
    config = from_record(PretrainConfig, read_json(args_file))
    model = load_model(checkpoint).eval()
    if config.nsp is None:
        config.nsp = model.config.next_sentence_prediction
    data = build_pretraining_data(config, config.seq_length, "validation")
    meta = read_json(Path(config.input_path) / "meta.json")
    special = sorted({int(v) for v in meta["special_ids"].values()})
    p = unigram(Path(config.input_path), model.config.vocab_size, special)  # [V]
    top = int(p.argmax())
    correct = top_correct = draw_expected = n = 0.0
    for i in range(batches):
        batch = data.batch(i, batch_size)
        out = model(
            batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], batch["masked_positions"]
        )
        labels = batch["masked_labels"]  # [b,P], IGNORE on padding slots
        real = labels != IGNORE
        correct += (out.mlm_logits.argmax(-1) == labels)[real].sum().item()
        top_correct += (labels[real] == top).sum().item()
        draw_expected += p[labels[real].numpy()].sum()
        n += real.sum().item()
    return {
        "masked_tokens": int(n),
        "mlm_acc": correct / n,
        "most_frequent_token_acc": top_correct / n,
        "unigram_draw_acc": draw_expected / n,
    }


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint_path", type=Path, required=True, help="a step_N/ folder")
    parser.add_argument("--batches", type=int, default=16, help="validation batches")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    r = report(args.checkpoint_path, args.batches, args.batch_size)
    print(
        f"validation MLM accuracy {100 * r['mlm_acc']:.1f}% on {r['masked_tokens']:,} masked tokens; "
        f"baselines on the same positions: most frequent token {100 * r['most_frequent_token_acc']:.1f}%, "
        f"a unigram draw {100 * r['unigram_draw_acc']:.1f}%"
    )


if __name__ == "__main__":
    run_cli(main)
