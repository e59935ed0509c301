"""The evaluations a sweep runs on each checkpoint: each reuses its own module's functions, so a sweep's
numbers equal the module's command run on that checkpoint alone.

Metric names: plain names (overall, loss, upos_mix_accuracy, ...) get a figure; names with a '/'
(paradigm/UID, upos/layer_3/accuracy) are details kept in the table only.
"""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from utils.errors import UserError
from utils.paths import REPO_ROOT, data_root


class BlimpEval:
    """evaluation.blimp: accuracy overall, macro over paradigms, per field and per paradigm."""

    def __init__(self, args):
        from evaluation.blimp import load_blimp

        self.args = args
        self.pairs = load_blimp(blimp_dir(args), args.blimp_max_pairs_per_paradigm)
        self.encoded = {}  # (tokenizer file, max length) -> encoded pairs, as evaluation.blimp caches them

    def evaluate(self, model, tokenizer, vocab, ckpt, device, folder) -> dict:
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

    def evaluate(self, model, tokenizer, vocab, ckpt, device, folder) -> dict:
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

    def evaluate(self, model, tokenizer, vocab, ckpt, device, folder) -> dict:
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


class FinetuneEval:
    """train_finetune.py itself, run on the checkpoint: a short fine-tuning (default SST-2, 1 epoch on 2,000
    seeded training examples); the last epoch's numbers of every split (loss, accuracy or SQuAD's f1 /
    exact_match), each earlier epoch's as table-only details. It runs in the result's folder
    (results/RUN/step_N/finetune/: metrics.jsonl, run_args.json, split.json and the per-example
    predictions kept, for the multibootstrap); its checkpoints are deleted once read, since a sweep over
    dozens of checkpoints would otherwise keep dozens of optimizer states. A killed fine-tuning leaves
    finetune.partial/, which the next sweep starts over."""

    def __init__(self, args):
        self.args = args
        self.data_dir = finetune_data_dir(args)
        if not self.data_dir.is_dir():
            raise UserError(f"--finetune_data_dir {self.data_dir}: no such folder")
        from finetune.args import parse_args

        try:  # train_finetune.py's own flag checks, before sweep.json records these settings
            parse_args(self.command(Path("CKPT"), "VOCAB", Path("OUT"))[2:])
        except UserError as err:
            raise UserError(f"--finetune_* / --finetune_args: {err}") from None

    def command(self, ckpt: Path, vocab, output_dir: Path) -> list[str]:
        a = self.args
        return [
            *(sys.executable, str(REPO_ROOT / "train_finetune.py")),
            *("--task", a.finetune_task, "--data_dir", str(self.data_dir)),
            *("--checkpoint_path", str(ckpt), "--vocab_path", str(vocab), "--output_dir", str(output_dir)),
            *("--epochs", str(a.finetune_epochs), "--max_train_examples", str(a.finetune_max_train_examples)),
            *("--learning_rate", str(a.finetune_learning_rate), "--batch_size", str(a.finetune_batch_size)),
            *("--max_seq_length", str(a.finetune_max_seq_length), "--seed", str(a.finetune_seed)),
            "--no_tensorboard",
            *shlex.split(a.finetune_args),
        ]

    def evaluate(self, model, tokenizer, vocab, ckpt, device, folder) -> dict:
        done, partial = folder / "finetune", folder / "finetune.partial"
        shutil.rmtree(partial, ignore_errors=True)
        cmd = self.command(ckpt, vocab, partial)
        if device.type == "cpu":
            cmd += ["--device", "cpu"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise UserError(f"--evals finetune on {ckpt}: train_finetune.py failed: {last}")
        shutil.rmtree(partial / "checkpoints", ignore_errors=True)
        shutil.rmtree(done, ignore_errors=True)
        partial.rename(done)
        records = [json.loads(line) for line in (done / "metrics.jsonl").read_text().splitlines() if line]
        return finetune_metrics(records, self.args.finetune_task)


def finetune_metrics(records: list[dict], task: str) -> dict:
    """metrics.jsonl lines -> {task_split_metric: last epoch's value} + {task/epoch_E/split/metric: ...}."""
    out = {}
    for rec in records:
        for split, values in rec.items():
            if not isinstance(values, dict):
                continue
            for name, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[f"{task}/epoch_{rec['epoch']}/{split}/{name}"] = value
                    if rec is records[-1]:
                        out[f"{task}_{split}_{name}"] = value
    return out


EVALUATORS = {"blimp": BlimpEval, "mlm": MlmEval, "probing": ProbingEval, "finetune": FinetuneEval}


def finetune_data_dir(args) -> Path:
    return Path(args.finetune_data_dir) if args.finetune_data_dir else data_root() / args.finetune_task


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
    g = parser.add_argument_group("short fine-tuning (train_finetune.py)").add_argument
    g("--finetune_task", default="sst2", help="a train_finetune.py --task")
    g("--finetune_data_dir", default=None, help="default: <data_root>/<task>")
    g("--finetune_epochs", type=int, default=1)
    g("--finetune_max_train_examples", type=int, default=2000, help="seeded subset of the train split")
    g("--finetune_learning_rate", type=float, default=5e-5)
    g("--finetune_batch_size", type=int, default=32)
    g("--finetune_max_seq_length", type=int, default=128)
    g("--finetune_seed", type=int, default=42)
    g("--finetune_args", default="", help="more train_finetune.py flags, as one string ('--pooling mean')")


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
    if name == "finetune":
        return {
            "task": args.finetune_task,
            "data_dir": str(finetune_data_dir(args).resolve()),
            "epochs": args.finetune_epochs,
            "max_train_examples": args.finetune_max_train_examples,
            "learning_rate": args.finetune_learning_rate,
            "batch_size": args.finetune_batch_size,
            "max_seq_length": args.finetune_max_seq_length,
            "seed": args.finetune_seed,
            "args": args.finetune_args,
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
    for flag in (
        "blimp_batch_size",
        "mlm_batch_size",
        "mlm_max_tokens",
        "finetune_epochs",
        "finetune_max_train_examples",
        "finetune_batch_size",
    ):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    return EVALUATORS[name](args)
