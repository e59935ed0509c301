"""Held-out masked-LM loss and accuracy with a fixed, seeded masking, and pseudo-perplexity, on any text.

The text is raw text files (every non-empty line a unit; a folder means its *.txt files in name order) or a
processed corpus folder (data/preprocess.py; its validation split, its own token ids). The units are
concatenated and cut into sequences of --seq_length - 2 tokens ([CLS] ... [SEP]); in every sequence
round(mask_p x tokens) positions, drawn from numpy's default_rng(--seed) sequence after sequence, are
replaced by [MASK]. The positions depend only on the text, the tokenizer and the seed, so every checkpoint
of a run is scored on the same masked tokens and the curves are comparable. loss = mean cross-entropy over
the masked tokens (nats), accuracy = share of them predicted exactly. Pseudo-perplexity (Salazar et al.
2020) = exp(-sum PLL / scored tokens) over the first --pll_units units, scored by evaluation.pll.

    python -m evaluation.mlm --checkpoint_path RUN_OR_STEP --input_path TEXT_OR_CORPUS [--seed 0]
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.checkpoints import autocast, find_checkpoints, load_checkpoint, pick_device, resolve_vocab
from evaluation.io import write_json_atomic
from evaluation.pll import pseudo_log_likelihoods
from utils.errors import ArgumentParser, UserError, run_cli

METRICS = ("loss", "accuracy", "pseudo_perplexity", "num_masked", "pll_tokens")


def _text_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise UserError(f"--input_path {path}: no such text file (or folder of *.txt files)")
    return files


def read_units(input_path, tokenizer, max_tokens: int) -> list[np.ndarray]:
    """Token ids of the text's units (lines, or a processed corpus's validation sentences), in order,
    until max_tokens tokens are collected (the last unit may overshoot)."""
    from data.tokenization import tokenizer_hash

    path = Path(input_path)
    units, total = [], 0
    if (path / "meta.json").is_file():
        from data.corpus import ProcessedCorpus

        corpus = ProcessedCorpus(path, "validation")
        if tokenizer_hash(tokenizer) != corpus.meta["tokenizer"]["sha256"]:
            raise UserError(f"--input_path {path}: made with another tokenizer than the checkpoint's")
        for i in range(corpus.n_sentences):
            if total >= max_tokens:
                break
            units.append(np.asarray(corpus.sentence(i), dtype=np.int64))
            total += len(units[-1])
    else:
        for f in _text_files(path):
            lines = [line.strip() for line in f.read_text(encoding="utf-8", errors="replace").splitlines()]
            lines = [line for line in lines if line]
            for start in range(0, len(lines), 256):  # encode in blocks: stop early on big files
                if total >= max_tokens:
                    break
                for e in tokenizer.encode_batch(lines[start : start + 256], add_special_tokens=False):
                    if e.ids and total < max_tokens:
                        units.append(np.array(e.ids, dtype=np.int64))
                        total += len(e.ids)
    if not units:
        raise UserError(f"--input_path {path}: no text")
    return units


def pack_sequences(units: list[np.ndarray], seq_length: int, max_tokens: int) -> list[np.ndarray]:
    """The units' tokens, concatenated, cut to max_tokens and into pieces of seq_length - 2."""
    stream = np.concatenate(units)[:max_tokens]
    n = seq_length - 2
    return [stream[i : i + n] for i in range(0, len(stream), n)]


def fixed_masks(sequences: list[np.ndarray], mask_p: float, seed: int) -> list[np.ndarray]:
    """Sorted masked positions of each sequence (1-based: [CLS] is position 0), one seeded stream."""
    rng = np.random.default_rng(seed)
    masks = []
    for seq in sequences:
        k = max(1, int(round(mask_p * len(seq))))
        masks.append(np.sort(rng.choice(len(seq), size=k, replace=False)) + 1)
    return masks


@torch.no_grad()
def masked_lm_scores(model, sequences, masks, special, batch_size: int, device) -> dict:
    """Loss (mean nats) and accuracy over all masked tokens; sums in float64, sequence order."""
    device = torch.device(device)
    loss_sum, correct, count = 0.0, 0, 0
    for lo in range(0, len(sequences), batch_size):
        seqs, pos = sequences[lo : lo + batch_size], masks[lo : lo + batch_size]
        width, k = max(len(s) for s in seqs) + 2, max(len(p) for p in pos)
        ids = np.full((len(seqs), width), special.pad, dtype=np.int64)  # [B, W]
        positions = np.zeros((len(seqs), k), dtype=np.int64)  # [B, K]; padding slots point at [CLS]
        valid = np.zeros((len(seqs), k), dtype=bool)
        attention = np.zeros((len(seqs), width), dtype=np.int64)
        for b, (s, p) in enumerate(zip(seqs, pos)):
            ids[b, 0], ids[b, 1 : len(s) + 1], ids[b, len(s) + 1] = special.cls, s, special.sep
            attention[b, : len(s) + 2] = 1
            positions[b, : len(p)], valid[b, : len(p)] = p, True
        true = np.take_along_axis(ids, positions, 1)  # [B, K]
        inputs = ids.copy()
        np.put_along_axis(inputs, positions, special.mask, 1)
        inputs[:, 0] = special.cls  # padding slots pointed at [CLS]: keep it
        x, att, q = (torch.from_numpy(a).to(device) for a in (inputs, attention, positions))
        with autocast(device):
            logits = model(x, attention_mask=att, masked_positions=q).mlm_logits  # [B, K, V]
        logits = logits.float()[torch.from_numpy(valid).to(device)]  # [M, V]
        target = torch.from_numpy(true[valid]).to(device)  # [M]
        loss_sum += float(F.cross_entropy(logits, target, reduction="sum").double())
        correct += int((logits.argmax(-1) == target).sum())
        count += len(target)
    return {"loss": loss_sum / count, "accuracy": correct / count, "num_masked": count}


def pseudo_perplexity(model, units, special, max_len: int, batch_size: int, device) -> tuple[float, int]:
    """exp(-mean PLL per scored token) of the units (each truncated to max_len - 2 tokens)."""
    lengths = np.array([min(len(u), max_len - 2) + 2 for u in units])
    ids = np.zeros((len(units), lengths.max()), dtype=np.int64)
    for k, u in enumerate(units):
        n = lengths[k] - 2
        ids[k, 0], ids[k, 1 : n + 1], ids[k, n + 1] = special.cls, u[:n], special.sep
    words = torch.full(ids.shape, -1, dtype=torch.int64)  # word ids only matter for pll_word_l2r
    pll = pseudo_log_likelihoods(
        model,
        torch.from_numpy(ids),
        torch.from_numpy(lengths),
        words,
        special.mask,
        "pll",
        batch_size,
        device,
    )
    tokens = int((lengths - 2).sum())
    return float(np.exp(-pll.sum() / tokens)), tokens


class HeldOutText:
    """The prepared text for one tokenizer and model length: sequences, fixed masks, PLL units."""

    def __init__(
        self,
        input_path,
        tokenizer,
        max_len: int,
        seq_length=None,
        max_tokens=65536,
        mask_p=0.15,
        seed=0,
        pll_units=100,
    ):
        from data.tokenization import special_ids

        if not 0 < mask_p < 1:
            raise UserError(f"--mask_p must lie in (0, 1), got {mask_p}")
        seq_length = min(128, max_len) if seq_length is None else seq_length
        if seq_length < 3 or seq_length > max_len:
            raise UserError(f"--seq_length {seq_length}: must lie in 3..{max_len} (the model's positions)")
        self.special = special_ids(tokenizer)
        units = read_units(input_path, tokenizer, max_tokens)
        self.sequences = pack_sequences(units, seq_length, max_tokens)
        self.masks = fixed_masks(self.sequences, mask_p, seed)
        self.pll_units, self.max_len = units[:pll_units], max_len

    def evaluate(self, model, batch_size: int = 32, pll_batch_size: int = 1024, device="cpu") -> dict:
        out = masked_lm_scores(model, self.sequences, self.masks, self.special, batch_size, device)
        if self.pll_units:
            out["pseudo_perplexity"], out["pll_tokens"] = pseudo_perplexity(
                model, self.pll_units, self.special, self.max_len, pll_batch_size, device
            )
        return out


def add_text_flags(parser, prefix: str = "") -> None:
    """The flags that define the held-out text and its masking (prefixed `mlm_` inside the sweep)."""
    a = parser.add_argument
    a(f"--{prefix}input_path", required=not prefix, help="text file(s)/folder, or a processed corpus dir")
    a(
        f"--{prefix}seq_length",
        type=int,
        default=None,
        help="tokens per sequence, [CLS] and [SEP] included (default: 128 or the model's positions if fewer)",
    )
    a(f"--{prefix}max_tokens", type=int, default=65536, help="first N tokens of the text")
    a(f"--{prefix}mask_p", type=float, default=0.15, help="share of each sequence's tokens masked")
    a(f"--{prefix}seed", type=int, default=0, help="seed of the masked positions")
    a(f"--{prefix}pll_units", type=int, default=100, help="units scored for pseudo-perplexity (0: none)")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = ArgumentParser(description="Held-out MLM loss/accuracy (fixed masks) and pseudo-perplexity")
    parser.add_argument("--checkpoint_path", required=True, help="a step dir, or a run dir: every step in it")
    parser.add_argument("--vocab_path", default=None, help="tokenizer JSON (default: from args.json)")
    add_text_flags(parser)
    parser.add_argument("--batch_size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--output_file", default=None, help="JSON (default: CHECKPOINT_PATH/mlm.json)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    args = parser.parse_args(argv)
    from data.tokenization import load_tokenizer

    checkpoints, device = find_checkpoints(args.checkpoint_path), pick_device(args.device)
    prepared, results = {}, []
    for step, ckpt in checkpoints:
        vocab = resolve_vocab(ckpt, args.vocab_path)
        model = load_checkpoint(ckpt, device)
        key = (vocab, model.config.max_position_embeddings)
        if key not in prepared:
            prepared[key] = HeldOutText(
                args.input_path,
                load_tokenizer(vocab),
                key[1],
                args.seq_length,
                args.max_tokens,
                args.mask_p,
                args.seed,
                args.pll_units,
            )
        result = {
            "step": step,
            "checkpoint": str(ckpt),
            **prepared[key].evaluate(model, args.batch_size, device=device),
        }
        results.append(result)
        ppl = (
            f", pseudo-perplexity {result['pseudo_perplexity']:.2f}" if "pseudo_perplexity" in result else ""
        )
        print(f"{ckpt}: loss {result['loss']:.4f}, accuracy {100 * result['accuracy']:.2f}%{ppl}")
    output = Path(args.output_file or Path(args.checkpoint_path) / "mlm.json")
    write_json_atomic(output, {"args": vars(args), "results": results})
    print(f"wrote {output}")
    return results


if __name__ == "__main__":
    run_cli(main)
