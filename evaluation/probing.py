"""Linear probing across checkpoints and seeds: UD EWT UPOS / DEPREL (any CoNLL-U column) per layer + mix.

For every run (seed) and every checkpoint, frozen per-word representations of every layer (cached) feed a
linear probe per layer and one on a learned softmax mix of all layers; we report test accuracy and macro-F1
and the online MDL codelength of the train labels (Voita & Titov 2020). Output: probing.csv, tensorboard
scalars (tensorboard/RUN/), and probing_TASK.png (metric against step, log-scaled steps).

    python -m evaluation.probing --checkpoint_path RUN_SEED0 RUN_SEED1 --tasks upos deprel --output_dir OUT
"""

import csv
import io
import time
from pathlib import Path

import numpy as np
import torch

from evaluation.checkpoints import (
    file_hash,
    find_checkpoints,
    load_checkpoint,
    pick_device,
    resolve_vocab,
    run_name,
)
from evaluation.conllu import labels_of, read_conllu
from evaluation.io import write_text_atomic
from evaluation.probes import (
    ProbeConfig,
    encode_labels,
    evaluate_probe,
    online_codelength,
    torch_threads,
    train_probe,
)
from evaluation.representations import POOLINGS, cached_representations, load_kept, load_layers
from utils.errors import ArgumentParser, UserError, run_cli
from utils.paths import data_root

FIELDS = ["run", "step", "task", "layer", "accuracy", "macro_f1", "codelength_kbits", "uniform_kbits",
          "compression", "num_train", "num_test", "mix_weights"]  # fmt: skip
SPLITS = ("train", "dev", "test")
MAX_DEV = 5000  # dev words used for early stopping


def split_labels(treebank, task: str, kept: np.ndarray) -> list[str]:
    """The task's labels of the words that have a representation, flattened in file order."""
    flat = [v for sent in labels_of(treebank, task) for v in sent]
    return [v for v, k in zip(flat, kept) if k]


def probe_checkpoint(feats: dict, labels: dict, layers: list[int], cfg: ProbeConfig, mdl: bool) -> list[dict]:
    """Rows (layer, metrics) for one task: a probe per layer, then the mix of every layer.

    feats[split]: [N, C, H] float16 tensor of all hidden states; labels[split]: list of strings.
    """
    names, (y_train, y_dev, y_test) = encode_labels(labels["train"], labels["dev"], labels["test"])
    if len(names) < 2:
        raise UserError(f"the train split has {len(names)} label value(s): nothing to probe")
    y_dev = y_dev[:MAX_DEV]
    rows = []
    for layer in [*layers, "mix"]:
        pick = slice(None) if layer == "mix" else slice(layer, layer + 1)
        x_train, x_dev, x_test = feats["train"][:, pick], feats["dev"][:MAX_DEV, pick], feats["test"][:, pick]
        probe = train_probe(x_train, y_train, len(names), x_dev, y_dev, cfg)
        row = {"layer": layer, **evaluate_probe(probe, x_test, y_test)}
        row["mix_weights"] = " ".join(f"{w:.3f}" for w in probe.mix_weights()) if layer == "mix" else ""
        if mdl:
            row.update(online_codelength(x_train, y_train, len(names), x_dev, y_dev, cfg))
        rows.append({**row, "num_train": len(y_train), "num_test": len(y_test)})
    return rows


def checkpoint_features(
    model, ckpt, tokenizer, treebanks, max_sentences, pooling, cache_dir, batch_size, device
):
    """Per split: every layer's word features [n_words, L+1, H] and the kept-word mask, from the
    representation cache (extracted once per checkpoint weights, tokenizer, treebank and pooling)."""
    weights = file_hash(Path(ckpt) / "model.safetensors")
    caches = {
        s: cached_representations(
            model, weights, tokenizer, tb, max_sentences, pooling, cache_dir, batch_size, device
        )
        for s, tb in treebanks.items()
    }
    states = list(range(model.config.num_hidden_layers + 1))
    feats = {s: torch.from_numpy(load_layers(c, states)) for s, c in caches.items()}
    return feats, {s: load_kept(c) for s, c in caches.items()}


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    write_text_atomic(path, buf.getvalue())


def plot_task(rows: list[dict], task: str, path: Path) -> None:
    """Accuracy and MDL compression against step, one line per layer (mean over runs, band = min-max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["task"] == task]
    metrics = [m for m in ("accuracy", "compression") if all(m in r for r in rows)]
    layers = sorted({r["layer"] for r in rows if r["layer"] != "mix"}) + ["mix"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, metric in zip(axes[0], metrics):
        for i, layer in enumerate(layers):
            steps = sorted({r["step"] for r in rows if r["layer"] == layer})
            values = [[r[metric] for r in rows if r["layer"] == layer and r["step"] == s] for s in steps]
            color = "black" if layer == "mix" else cmap(i / max(1, len(layers) - 2))
            mean = [np.mean(v) for v in values]
            ax.plot(
                steps, mean, marker="o", ms=3, color=color, lw=2 if layer == "mix" else 1, label=str(layer)
            )
            if any(len(v) > 1 for v in values):
                ax.fill_between(
                    steps, [min(v) for v in values], [max(v) for v in values], color=color, alpha=0.15
                )
        all_steps = [r["step"] for r in rows]
        ax.set_xscale(
            "symlog" if min(all_steps) <= 0 else "log", **({"linthresh": 1} if min(all_steps) <= 0 else {})
        )
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        runs = len({r["run"] for r in rows})
        ax.set_title(f"{task}: test {metric}" if metric == "accuracy" else f"{task}: MDL {metric}")
        if runs > 1:
            ax.text(0.01, 0.01, f"mean of {runs} runs, band: min-max", transform=ax.transAxes, fontsize=7)
    axes[0][-1].legend(title="layer", fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = ArgumentParser(description="Linear probes on every layer of every checkpoint of runs")
    parser.add_argument(
        "--checkpoint_path", nargs="+", required=True, help="run dirs (one per seed) or step dirs"
    )
    parser.add_argument("--vocab_path", default=None, help="tokenizer JSON (default: from args.json)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--tasks", nargs="+", default=["upos", "deprel"], help="CoNLL-U column names")
    parser.add_argument("--pooling", default="first", choices=POOLINGS, help="subwords -> word vector")
    parser.add_argument(
        "--layers", default="all", help="'all' or comma-separated hidden-state indices (0 = emb.)"
    )
    parser.add_argument(
        "--train_file", default=None, help="default: <data_root>/ud_ewt/en_ewt-ud-train.conllu"
    )
    parser.add_argument("--dev_file", default=None, help="early stopping; default: the EWT dev file")
    parser.add_argument("--test_file", default=None, help="default: the EWT test file")
    parser.add_argument(
        "--max_sentences", type=int, default=None, help="random subset of each split (seeded)"
    )
    parser.add_argument("--cache_dir", default=None, help="representation cache (default: OUTPUT_DIR/cache)")
    parser.add_argument("--batch_size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--no_mdl", action="store_true", help="skip the online codelength")
    parser.add_argument("--probe_learning_rate", type=float, default=ProbeConfig.learning_rate)
    parser.add_argument("--probe_batch_size", type=int, default=ProbeConfig.batch_size)
    parser.add_argument("--probe_epochs", type=int, default=ProbeConfig.epochs)
    parser.add_argument("--probe_min_steps", type=int, default=ProbeConfig.min_steps)
    parser.add_argument("--probe_threads", type=int, default=1, help="CPU threads while training probes")
    parser.add_argument("--seed", type=int, default=0, help="probe initialisation, batches, MDL order")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    args = parser.parse_args(argv)
    for flag in ("max_sentences", "batch_size", "probe_batch_size", "probe_epochs", "probe_threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    cfg = ProbeConfig(
        args.probe_learning_rate,
        args.probe_batch_size,
        args.probe_epochs,
        args.probe_min_steps,
        seed=args.seed,
    )
    from data.tokenization import load_tokenizer

    # Every input is checked before the first (slow) model runs: runs, files, columns.
    runs = [(run_name(p), find_checkpoints(p)) for p in args.checkpoint_path]
    ewt = data_root() / "ud_ewt"
    files = {s: getattr(args, f"{s}_file") or ewt / f"en_ewt-ud-{s}.conllu" for s in SPLITS}
    treebanks = {s: read_conllu(f, args.max_sentences, args.seed) for s, f in files.items()}
    for task in args.tasks:
        for tb in treebanks.values():
            labels_of(tb, task)
    if args.layers != "all":
        parse_layers(args.layers, None)
    output_dir, device = Path(args.output_dir), pick_device(args.device)
    cache_dir = Path(args.cache_dir or output_dir / "cache")
    from torch.utils.tensorboard import SummaryWriter

    rows, seen_names = [], {}
    for name, checkpoints in runs:
        seen_names[name] = seen_names.get(name, -1) + 1
        name = name if seen_names[name] == 0 else f"{name}_{seen_names[name]}"  # same-named run dirs
        writer = SummaryWriter(str(output_dir / "tensorboard" / name))
        for step, ckpt in checkpoints:
            start = time.perf_counter()
            tokenizer = load_tokenizer(resolve_vocab(ckpt, args.vocab_path))
            model = load_checkpoint(ckpt, device)
            feats, kept = checkpoint_features(
                model, ckpt, tokenizer, treebanks, args.max_sentences, args.pooling, cache_dir,
                args.batch_size, device,
            )  # fmt: skip
            num_states = model.config.num_hidden_layers + 1  # embedding output + every layer
            del model
            layers = (
                list(range(num_states)) if args.layers == "all" else parse_layers(args.layers, num_states)
            )
            for task in args.tasks:
                labels = {s: split_labels(treebanks[s], task, kept[s]) for s in SPLITS}
                with torch_threads(args.probe_threads):
                    task_rows = probe_checkpoint(feats, labels, layers, cfg, not args.no_mdl)
                for row in task_rows:
                    rows.append({"run": name, "step": step if step is not None else 0, "task": task, **row})
                    for metric in ("accuracy", "macro_f1", "codelength_kbits", "compression"):
                        if metric in row:
                            writer.add_scalar(
                                f"{task}/layer_{row['layer']}/{metric}", row[metric], rows[-1]["step"]
                            )
            writer.flush()
            write_csv(output_dir / "probing.csv", rows)  # after every checkpoint: progress is kept
            print(
                f"{name} step {step}: probed {len(args.tasks)} task(s) in {time.perf_counter() - start:.1f}s"
            )
        writer.close()
    for task in args.tasks:
        plot_task(rows, task, output_dir / f"probing_{task}.png")
    print_summary(rows)
    print(f"wrote {output_dir / 'probing.csv'} and probing_TASK.png")
    return rows


def parse_layers(text: str, num_states: int | None) -> list[int]:
    try:
        layers = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise UserError(f"--layers {text!r}: expected 'all' or comma-separated integers") from None
    if layers[0] < 0 or (num_states is not None and layers[-1] >= num_states):
        raise UserError(f"--layers {text!r}: the model has hidden states 0..{num_states - 1}")
    return layers


def print_summary(rows: list[dict]) -> None:
    """Test accuracy (and MDL compression) per run/step/task: best layer and the mix."""
    print(
        f"{'run':<16} {'step':>8} {'task':<8} {'best layer':>10} {'acc':>7} {'mix acc':>8} {'mix compr':>9}"
    )
    keys = dict.fromkeys((r["run"], r["step"], r["task"]) for r in rows)
    for run, step, task in keys:
        group = [r for r in rows if (r["run"], r["step"], r["task"]) == (run, step, task)]
        best = max((r for r in group if r["layer"] != "mix"), key=lambda r: r["accuracy"])
        mix = next(r for r in group if r["layer"] == "mix")
        compr = f"{mix['compression']:.2f}" if "compression" in mix else "-"
        print(f"{run:<16} {step:>8} {task:<8} {best['layer']:>10} {100 * best['accuracy']:>7.2f} "
              f"{100 * mix['accuracy']:>8.2f} {compr:>9}")  # fmt: skip


if __name__ == "__main__":
    run_cli(main)
