"""BLiMP zero-shot: a pair counts as right when the good sentence has the higher pseudo-log-likelihood.

Accuracy per paradigm (UID), per field and overall. Fields are BLiMP's `field` key with '-' and '/'
read as '_' (the files spell syntax_semantics three ways). overall = mean over all pairs (micro); a field's
accuracy = mean over its pairs; macro_paradigm = mean of the paradigm accuracies (equal to overall when
every paradigm has the same number of pairs). Ties count as wrong.

    python -m evaluation.blimp --checkpoint_path RUN_DIR [--scoring pll|pll_word_l2r] [--batch_size 1024]
"""

import json
import time
from pathlib import Path

import numpy as np

from evaluation.checkpoints import find_checkpoints, load_checkpoint, pick_device, resolve_vocab
from evaluation.io import write_json_atomic
from evaluation.pll import SCORINGS, encode, pseudo_log_likelihoods
from utils.errors import ArgumentParser, UserError, run_cli
from utils.paths import data_root

REQUIRED_KEYS = ("sentence_good", "sentence_bad", "field", "UID")


def normalize_field(field: str) -> str:
    return field.replace("-", "_").replace("/", "_")


def load_blimp(blimp_dir: str | Path, max_pairs_per_paradigm: int | None = None) -> dict[str, list]:
    """Columns of all pairs, paradigm files in name order: good, bad, paradigm, field (lists)."""
    blimp_dir = Path(blimp_dir)
    files = sorted(blimp_dir.glob("*.jsonl")) if blimp_dir.is_dir() else []
    if not files:
        raise UserError(f"--blimp_dir {blimp_dir}: no BLiMP *.jsonl files")
    cols = {"good": [], "bad": [], "paradigm": [], "field": []}
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if max_pairs_per_paradigm is not None and lineno > max_pairs_per_paradigm:
                    break
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise UserError(f"{f}:{lineno}: malformed JSON line ({err.msg})") from None
                missing = [k for k in REQUIRED_KEYS if not isinstance(rec, dict) or k not in rec]
                if missing:
                    raise UserError(f"{f}:{lineno}: missing key {missing[0]!r}")
                cols["good"].append(rec["sentence_good"])
                cols["bad"].append(rec["sentence_bad"])
                cols["paradigm"].append(rec["UID"])
                cols["field"].append(normalize_field(rec["field"]))
    return cols


def aggregate(paradigms: list[str], fields: list[str], correct: np.ndarray) -> dict:
    """Accuracy per paradigm, per field (mean over the field's pairs), overall (over pairs), macro."""
    paradigms, fields, correct = (
        np.asarray(paradigms),
        np.asarray(fields),
        np.asarray(correct, dtype=np.float64),
    )
    by_paradigm = {p: float(correct[paradigms == p].mean()) for p in sorted(set(paradigms))}
    by_field = {f: float(correct[fields == f].mean()) for f in sorted(set(fields))}
    return {
        "overall": float(correct.mean()),
        "macro_paradigm": float(np.mean(list(by_paradigm.values()))),
        "fields": by_field,
        "paradigms": by_paradigm,
        "n_pairs": int(len(correct)),
    }


def encode_pairs(tokenizer, pairs: dict, max_len: int) -> tuple:
    """Good sentences then bad ones, encoded once per tokenizer: (ids, lengths, words, mask id)."""
    from data.tokenization import special_ids

    special = special_ids(tokenizer)
    ids, lengths, words = encode(tokenizer, pairs["good"] + pairs["bad"], special.cls, special.sep, max_len)
    return ids, lengths, words, special.mask


def score_pairs(
    model, encoded: tuple, scoring: str, batch_size: int, device
) -> tuple[np.ndarray, np.ndarray]:
    """(PLL of the good sentences [P], PLL of the bad ones [P]), all scored in one batched pass."""
    pll = pseudo_log_likelihoods(model, *encoded, scoring=scoring, batch_size=batch_size, device=device)
    half = len(pll) // 2
    return pll[:half], pll[half:]


def evaluate(model, tokenizer, pairs: dict, scoring: str, batch_size: int, device) -> dict:
    encoded = encode_pairs(tokenizer, pairs, model.config.max_position_embeddings)
    good, bad = score_pairs(model, encoded, scoring, batch_size, device)
    return aggregate(pairs["paradigm"], pairs["field"], good > bad)


def format_table(results: list[dict]) -> str:
    """One row per checkpoint: step, overall, macro over paradigms, and each field."""
    fields = sorted({f for r in results for f in r["fields"]})
    header = f"{'step':>10} {'overall':>8} {'macro':>8} " + " ".join(f"{f:>16}" for f in fields)
    rows = [header]
    for r in results:
        step = "-" if r["step"] is None else str(r["step"])
        cells = " ".join(f"{100 * r['fields'].get(f, float('nan')):>16.2f}" for f in fields)
        rows.append(f"{step:>10} {100 * r['overall']:>8.2f} {100 * r['macro_paradigm']:>8.2f} {cells}")
    return "\n".join(rows)


def format_paradigms(result: dict) -> str:
    return "\n".join(f"{p:<48} {100 * acc:6.2f}" for p, acc in result["paradigms"].items())


def main(argv: list[str] | None = None) -> list[dict]:
    parser = ArgumentParser(description="BLiMP zero-shot accuracy with MLM pseudo-log-likelihoods")
    parser.add_argument("--checkpoint_path", required=True, help="a step dir, or a run dir: every step in it")
    parser.add_argument("--vocab_path", default=None, help="tokenizer JSON (default: from args.json)")
    parser.add_argument("--scoring", default="pll", choices=SCORINGS)
    parser.add_argument("--batch_size", type=int, default=1024, help="masked copies per forward pass")
    parser.add_argument("--max_pairs_per_paradigm", type=int, default=None, help="first N pairs of each")
    parser.add_argument("--blimp_dir", default=None, help="default: <data_root>/blimp/data")
    parser.add_argument("--output_file", default=None, help="JSON (default: OUTPUT_DIR/blimp_SCORING.json)")
    parser.add_argument("--output_dir", default=None, help="folder of the JSON (default: CHECKPOINT_PATH)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.max_pairs_per_paradigm is not None and args.max_pairs_per_paradigm < 1:
        raise UserError(f"--max_pairs_per_paradigm must be >= 1, got {args.max_pairs_per_paradigm}")
    from data.tokenization import load_tokenizer
    from utils.files import check_output_dir

    folder = Path(args.output_dir or args.checkpoint_path)
    output = Path(args.output_file) if args.output_file else folder / f"blimp_{args.scoring}.json"
    flag = "--output_file" if args.output_file else "--output_dir" if args.output_dir else "--checkpoint_path"
    check_output_dir(output.parent, flag)  # before the evaluation, not after it

    checkpoints = find_checkpoints(args.checkpoint_path)
    pairs = load_blimp(args.blimp_dir or data_root() / "blimp" / "data", args.max_pairs_per_paradigm)
    device = pick_device(args.device)
    report = {"scoring": args.scoring, "max_pairs_per_paradigm": args.max_pairs_per_paradigm, "results": []}
    encoded = {}  # (tokenizer file, max length) -> encoded pairs: tokenize once per run
    for step, ckpt in checkpoints:
        vocab = resolve_vocab(ckpt, args.vocab_path)
        model = load_checkpoint(ckpt, device)
        key = (vocab, model.config.max_position_embeddings)
        if key not in encoded:
            encoded[key] = encode_pairs(load_tokenizer(vocab), pairs, key[1])
        start = time.perf_counter()
        good, bad = score_pairs(model, encoded[key], args.scoring, args.batch_size, device)
        result = aggregate(pairs["paradigm"], pairs["field"], good > bad)
        seconds = time.perf_counter() - start
        report["results"].append(
            {"step": step, "checkpoint": str(ckpt), "seconds": round(seconds, 2), **result}
        )
        write_json_atomic(output, report)  # after every checkpoint: a long run keeps what it has
        print(
            f"{ckpt}: overall {100 * result['overall']:.2f}% on {result['n_pairs']} pairs in {seconds:.1f}s"
        )
    if len(checkpoints) == 1:
        print(format_paradigms(report["results"][0]))
    print(format_table(report["results"]))
    print(f"wrote {output}")
    return report["results"]


if __name__ == "__main__":
    run_cli(main)
