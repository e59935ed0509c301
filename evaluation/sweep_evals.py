"""The evaluations a sweep runs on each checkpoint: each reuses its own module's functions, so a sweep's
numbers equal the module's command run on that checkpoint alone.

Metric names: plain names (overall, loss, upos_mix_accuracy, ...) get a figure; names with a '/'
(paradigm/UID, upos/layer_3/accuracy) are details kept in the table only.
"""

from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.paths import data_root


class BlimpEval:
    """evaluation.blimp: accuracy overall, macro over paradigms, per field and per paradigm."""

    def __init__(self, args):
        from evaluation.blimp import load_blimp

        self.args = args
        self.pairs = load_blimp(blimp_dir(args), args.blimp_max_pairs_per_paradigm)
        self.encoded = {}  # (tokenizer file, max length) -> encoded pairs, as evaluation.blimp caches them

    def evaluate(self, model, tokenizer, vocab, ckpt, device) -> dict:
        from evaluation.blimp import aggregate, encode_pairs, score_pairs

        key = (vocab, model.config.max_position_embeddings)
        if key not in self.encoded:
            self.encoded[key] = encode_pairs(tokenizer, self.pairs, key[1])
        good, bad = score_pairs(
            model, self.encoded[key], self.args.blimp_scoring, self.args.blimp_batch_size, device
        )
        result = aggregate(self.pairs["paradigm"], self.pairs["field"], good > bad)
        metrics = {"overall": result["overall"], "macro_paradigm": result["macro_paradigm"]}
        metrics.update({f"field_{f}": v for f, v in result["fields"].items()})
        metrics.update({f"paradigm/{p}": v for p, v in result["paradigms"].items()})
        return metrics


class MlmEval:
    """evaluation.mlm: held-out loss, accuracy (fixed seeded masks) and pseudo-perplexity."""

    def __init__(self, args):
        if args.mlm_input_path is None:
            raise UserError("--evals mlm needs --mlm_input_path (text files or a processed corpus folder)")
        if not Path(args.mlm_input_path).exists():
            raise UserError(f"--mlm_input_path {args.mlm_input_path}: no such file or folder")
        self.args, self.prepared = args, {}

    def evaluate(self, model, tokenizer, vocab, ckpt, device) -> dict:
        from evaluation.mlm import HeldOutText

        a = self.args
        key = (vocab, model.config.max_position_embeddings)
        if key not in self.prepared:
            self.prepared[key] = HeldOutText(
                a.mlm_input_path,
                tokenizer,
                key[1],
                a.mlm_seq_length,
                a.mlm_max_tokens,
                a.mlm_mask_p,
                a.mlm_seed,
                a.mlm_pll_units,
            )
        out = self.prepared[key].evaluate(model, a.mlm_batch_size, device=device)
        counts = {f"count/{k}": out.pop(k) for k in ("num_masked", "pll_tokens") if k in out}  # table only
        return {**out, **counts}


class ProbingEval:
    """evaluation.probing: a linear probe per layer and on the mix, per task (UD EWT columns)."""

    def __init__(self, args):
        from evaluation.conllu import labels_of, read_conllu
        from evaluation.probes import ProbeConfig
        from evaluation.probing import SPLITS

        self.args = args
        ewt = data_root() / "ud_ewt"
        self.treebanks = {
            s: read_conllu(ewt / f"en_ewt-ud-{s}.conllu", args.probing_max_sentences, args.probing_seed)
            for s in SPLITS
        }
        for task in args.probing_tasks.split(","):
            for tb in self.treebanks.values():
                labels_of(tb, task)
        self.cfg = ProbeConfig(epochs=args.probing_epochs, seed=args.probing_seed)

    def evaluate(self, model, tokenizer, vocab, ckpt, device) -> dict:
        from evaluation.probes import torch_threads
        from evaluation.probing import SPLITS, checkpoint_features, probe_checkpoint, split_labels

        a = self.args
        cache_dir = Path(a.output_dir) / "cache"
        feats, kept = checkpoint_features(
            model, ckpt, tokenizer, self.treebanks, a.probing_max_sentences, a.probing_pooling, cache_dir, 64,
            device,
        )  # fmt: skip
        layers = list(range(model.config.num_hidden_layers + 1))
        metrics = {}
        for task in a.probing_tasks.split(","):
            labels = {s: split_labels(self.treebanks[s], task, kept[s]) for s in SPLITS}
            with torch_threads(1):
                rows = probe_checkpoint(feats, labels, layers, self.cfg, a.probing_mdl)
            by_layer = [r for r in rows if r["layer"] != "mix"]
            mix = next(r for r in rows if r["layer"] == "mix")
            metrics[f"{task}_mix_accuracy"] = mix["accuracy"]
            metrics[f"{task}_mix_macro_f1"] = mix["macro_f1"]
            metrics[f"{task}_best_layer_accuracy"] = float(np.max([r["accuracy"] for r in by_layer]))
            if "compression" in mix:
                metrics[f"{task}_mix_compression"] = mix["compression"]
            for r in by_layer:
                for m in ("accuracy", "macro_f1", "compression"):
                    if m in r:
                        metrics[f"{task}/layer_{r['layer']}/{m}"] = r[m]
        return metrics


EVALUATORS = {"blimp": BlimpEval, "mlm": MlmEval, "probing": ProbingEval}


def blimp_dir(args) -> Path:
    return Path(args.blimp_dir) if args.blimp_dir else data_root() / "blimp" / "data"


def add_eval_flags(parser) -> None:
    from evaluation.mlm import add_text_flags
    from evaluation.pll import SCORINGS

    g = parser.add_argument_group("blimp").add_argument
    g("--blimp_dir", default=None, help="default: <data_root>/blimp/data")
    g("--blimp_scoring", default="pll", choices=SCORINGS)
    g("--blimp_max_pairs_per_paradigm", type=int, default=None, help="first N pairs of each paradigm")
    g("--blimp_batch_size", type=int, default=1024, help="masked copies per forward pass")
    group = parser.add_argument_group("held-out MLM (evaluation.mlm)")
    add_text_flags(group, prefix="mlm_")
    group.add_argument("--mlm_batch_size", type=int, default=32, help="sequences per forward pass")
    g = parser.add_argument_group("probing").add_argument
    g("--probing_tasks", default="upos", help="comma-separated CoNLL-U columns of UD EWT")
    g("--probing_max_sentences", type=int, default=2000, help="random subset of each split (seeded)")
    g("--probing_pooling", default="first", choices=("first", "mean"))
    g("--probing_epochs", type=int, default=5)
    g("--probing_mdl", action="store_true", help="also the online MDL codelength (slower)")
    g("--probing_seed", type=int, default=0)


def eval_settings(name: str, args) -> dict:
    """What defines an evaluation's numbers (batch sizes excluded): fixed per sweep output folder."""
    if name == "blimp":
        if args.blimp_max_pairs_per_paradigm is not None and args.blimp_max_pairs_per_paradigm < 1:
            raise UserError("--blimp_max_pairs_per_paradigm must be >= 1")
        return {
            "blimp_dir": str(blimp_dir(args).resolve()),
            "scoring": args.blimp_scoring,
            "max_pairs_per_paradigm": args.blimp_max_pairs_per_paradigm,
        }
    if name == "mlm":
        path = None if args.mlm_input_path is None else str(Path(args.mlm_input_path).resolve())
        return {
            "input_path": path,
            "seq_length": args.mlm_seq_length,
            "max_tokens": args.mlm_max_tokens,
            "mask_p": args.mlm_mask_p,
            "seed": args.mlm_seed,
            "pll_units": args.mlm_pll_units,
        }
    return {
        "tasks": args.probing_tasks,
        "max_sentences": args.probing_max_sentences,
        "pooling": args.probing_pooling,
        "epochs": args.probing_epochs,
        "mdl": args.probing_mdl,
        "seed": args.probing_seed,
    }


def make_evaluator(name: str, args):
    for flag in ("blimp_batch_size", "mlm_batch_size", "mlm_max_tokens"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return EVALUATORS[name](args)
