"""BLiMP scoring speed against minicons (the scorer the field uses) on the same model, sentences and threads.

Our model is exported to a Hugging Face folder (model.hub_export: weights, config, tokenizer); minicons'
MaskedLMScorer loads that folder and scores the same BLiMP sentences with PLL (`original`) and the
within-word-l2r variant; ours scores them with evaluation.pll. Prints a Markdown table: seconds,
sentences/s, the speed ratio (minicons time / ours; wall and CPU time) and the largest per-sentence score
difference. The two take turns on slices of the sentences, so on a shared machine both see the same load.

    python benchmarks/blimp_speed.py --config_file configs/bert_small.json --vocab_path tok/tokenizer.json \
        [--checkpoint_path runs/x/checkpoints/step_N] [--max_pairs_per_paradigm 15] [--threads 2]

minicons 0.3.39 needs transformers < 5: run this with a Python where both are installed, e.g. a venv beside
ours (see benchmarks/RESULTS.md for the recipe).
"""

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from utils.errors import UserError, run_cli  # noqa: E402
from utils.paths import data_root  # noqa: E402

MINICONS_METRIC = {"pll": "original", "pll_word_l2r": "within_word_l2r"}


def import_minicons():
    try:
        from minicons import scorer
    except ImportError as err:
        raise UserError(
            f"minicons is not installed ({err}): pip install minicons==0.3.39 'transformers<5' in "
            "a separate venv and run this script with its python (benchmarks/RESULTS.md)"
        ) from None
    return scorer


def build_model(args):
    """Our model: a checkpoint, or a seeded random init of --config_file sized to the tokenizer."""
    from model import ModelConfig, PretrainingModel
    from model.io import load_model

    if args.checkpoint_path:
        return load_model(args.checkpoint_path).eval()
    from data.tokenization import load_tokenizer

    config = ModelConfig.from_json(args.config_file).to_dict()
    config["vocab_size"] = load_tokenizer(args.vocab_path).get_vocab_size()
    torch.manual_seed(args.seed)
    model = PretrainingModel(ModelConfig.from_dict(config)).eval()
    for p in model.parameters():  # larger than init: scores then depend on the context
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.1)
    return model


def score_ours(model, tokenizer, sentences, scoring, batch_size):
    from data.tokenization import special_ids
    from evaluation.pll import encode, pseudo_log_likelihoods

    special = special_ids(tokenizer)
    start = time.perf_counter()
    ids, lengths, words = encode(
        tokenizer, sentences, special.cls, special.sep, model.config.max_position_embeddings
    )
    scores = pseudo_log_likelihoods(model, ids, lengths, words, special.mask, scoring, batch_size, "cpu")
    return scores, time.perf_counter() - start


def score_minicons(scorer, sentences, scoring, batch_sentences):
    start = time.perf_counter()
    scores = []
    for lo in range(0, len(sentences), batch_sentences):
        scores += scorer.sequence_score(
            sentences[lo : lo + batch_sentences],
            reduction=lambda x: x.sum(0).item(),
            PLL_metric=MINICONS_METRIC[scoring],
        )
    return np.array(scores, dtype=np.float64), time.perf_counter() - start


def interleaved(model, tokenizer, mc, sentences, scoring, args):
    """Both scorers slice by slice, taking turns going first: on a shared machine both see the same load.
    Returns (ours wall s, minicons wall s, ours CPU s, minicons CPU s, max |score difference|)."""
    walls, cpus, ours, theirs = np.zeros(2), np.zeros(2), [], []
    bounds = np.linspace(0, len(sentences), args.slices + 1).astype(int)
    for k, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        for who in (0, 1) if k % 2 == 0 else (1, 0):
            cpu = time.process_time()
            if who == 0:
                scores, wall = score_ours(model, tokenizer, sentences[lo:hi], scoring, args.batch_size)
                ours.append(scores)
            else:
                scores, wall = score_minicons(mc, sentences[lo:hi], scoring, args.minicons_batch)
                theirs.append(scores)
            walls[who] += wall
            cpus[who] += time.process_time() - cpu
    diff = float(np.abs(np.concatenate(ours) - np.concatenate(theirs)).max())
    return walls[0], walls[1], cpus[0], cpus[1], diff


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--checkpoint_path", default=None, help="one of our checkpoints (default: --config_file init)"
    )
    p.add_argument("--config_file", default="configs/bert_small.json", help="model config for a random init")
    p.add_argument("--vocab_path", required=True, help="tokenizer JSON")
    p.add_argument("--max_pairs_per_paradigm", type=int, default=15, help="15: 2,010 sentences")
    p.add_argument("--scorings", default="pll,pll_word_l2r")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=1024, help="ours: masked copies per forward pass")
    p.add_argument(
        "--minicons_batch", type=int, default=32, help="minicons: sentences per sequence_score call"
    )
    p.add_argument("--slices", type=int, default=4, help="turns each scorer takes (same load for both)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    scorer_module = import_minicons()  # first: say what is missing before any work
    import transformers

    from data.tokenization import load_tokenizer
    from evaluation.blimp import load_blimp
    from model.convert import save_hf_bert
    from model.hub_export import write_hf_tokenizer

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.vocab_path)
    pairs = load_blimp(data_root() / "blimp" / "data", args.max_pairs_per_paradigm)
    sentences = pairs["good"] + pairs["bad"]
    model = build_model(args)
    n_params = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory() as hf_dir:
        save_hf_bert(model, hf_dir)
        write_hf_tokenizer(Path(args.vocab_path), Path(hf_dir), model.config.max_position_embeddings)
        mc = scorer_module.MaskedLMScorer(hf_dir, "cpu")
        rows = []
        for scoring in args.scorings.split(","):
            score_ours(model, tokenizer, sentences[:64], scoring, args.batch_size)  # warm-up
            rows.append((scoring, *interleaved(model, tokenizer, mc, sentences, scoring, args)))
    print(
        f"BLiMP scoring, {len(sentences):,} sentences ({args.max_pairs_per_paradigm} pairs x 67 paradigms "
        "x 2), "
        f"model {n_params / 1e6:.1f}M parameters, {args.threads} threads, {args.slices} turns each, "
        f"torch {torch.__version__}, transformers {transformers.__version__}, {platform.machine()}\n"
    )
    print(
        "| scoring | ours wall (s) | minicons wall (s) | wall ratio | ours CPU (s) | minicons CPU (s) "
        "| CPU ratio | ours sent/s | max abs diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for scoring, w_ours, w_mc, c_ours, c_mc, diff in rows:
        print(
            f"| {scoring} | {w_ours:.2f} | {w_mc:.2f} | {w_mc / w_ours:.2f}x | {c_ours:.2f} | {c_mc:.2f} "
            f"| {c_mc / c_ours:.2f}x | {len(sentences) / w_ours:.0f} | {diff:.2e} |"
        )
    return rows


if __name__ == "__main__":
    run_cli(main)
