"""Frozen per-word representations from every layer, pooled over subwords, cached on disk.

A word's vector is its first subword's hidden state or the mean over its subwords. Words whose subwords
all fall past the model's maximum length (or that tokenize to nothing) are dropped; `kept` marks, over the
file's words in order, which ones have a vector. The cache holds one float16 .npy per layer under a key made
of the weights' hash, the tokenizer's hash, the data file's hash, the subsample and the pooling.
"""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from evaluation.checkpoints import autocast, file_hash
from evaluation.conllu import Treebank
from utils.files import temp_dir_beside

POOLINGS = ("first", "mean")


def tokenize_words(tokenizer, words: list[list[str]], cls_id: int, sep_id: int, max_len: int):
    """ids [N, L] with [CLS] ... [SEP] (0 = padding), lengths [N], token -> word index [N, L] (-1: none)."""
    encodings = tokenizer.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
    lengths = np.array([min(len(e.ids), max_len - 2) + 2 for e in encodings])
    ids = np.zeros((len(words), lengths.max(initial=2)), dtype=np.int64)
    token_word = np.full(ids.shape, -1, dtype=np.int64)
    for k, e in enumerate(encodings):  # one-off packing
        n = lengths[k] - 2
        ids[k, 0], ids[k, 1 : n + 1], ids[k, n + 1] = cls_id, e.ids[:n], sep_id
        token_word[k, 1 : n + 1] = [-1 if w is None else w for w in e.word_ids[:n]]
    return torch.from_numpy(ids), torch.from_numpy(lengths), torch.from_numpy(token_word)


def pooling_matrix(token_word: torch.Tensor, num_words: int, pooling: str) -> torch.Tensor:
    """[B, W, S] weights that turn hidden states [B, S, H] into word vectors [B, W, H] by matmul."""
    member = (token_word[:, None, :] == torch.arange(num_words)[None, :, None]).float()  # [B, W, S]
    if pooling == "first":
        member = member * (member.cumsum(-1) == 1)  # only the first subword of each word
    elif pooling != "mean":
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return member / member.sum(-1, keepdim=True).clamp(min=1)


def pool_words(
    hidden: torch.Tensor, token_word: torch.Tensor, pooling: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [B, S, H], token_word [B, S] -> (word vectors [B, W, H], present [B, W] bool)."""
    num_words = int(token_word.max()) + 1 if token_word.numel() else 0
    weights = pooling_matrix(token_word.cpu(), max(num_words, 1), pooling).to(hidden.device)
    present = (
        token_word[:, None, :] == torch.arange(max(num_words, 1), device=token_word.device)[None, :, None]
    )
    return weights @ hidden.float(), present.any(-1)


def cache_key(weights_hash: str, tokenizer_hash: str, treebank: Treebank, max_sentences, pooling: str) -> str:
    ident = {
        "weights": weights_hash,
        "tokenizer": tokenizer_hash,
        "data": file_hash(treebank.path),
        "max_sentences": max_sentences,
        "pooling": pooling,
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


@torch.no_grad()
def extract(
    model, tokenizer, treebank: Treebank, pooling: str, out_dir: Path, batch_size: int, device
) -> None:
    """Write out_dir/layer_{l}.npy (float16 [kept words, H]) for every hidden state, and kept.npy."""
    from data.tokenization import special_ids

    special = special_ids(tokenizer)
    ids, lengths, token_word = tokenize_words(
        tokenizer, treebank.words, special.cls, special.sep, model.config.max_position_embeddings
    )
    num_words = np.array([len(s) for s in treebank.words])
    present = np.zeros((len(num_words), num_words.max()), dtype=bool)
    for k, tw in enumerate(token_word.numpy()):
        present[k, tw[tw >= 0]] = True
    kept_per_sentence = present.sum(1)
    offsets = np.concatenate([[0], np.cumsum(kept_per_sentence)[:-1]])
    num_layers, hidden = model.config.num_hidden_layers + 1, model.config.hidden_size
    out = [
        np.lib.format.open_memmap(
            out_dir / f"layer_{l}.npy", "w+", np.float16, (int(kept_per_sentence.sum()), hidden)
        )
        for l in range(num_layers)
    ]
    order = torch.argsort(lengths)
    for lo in range(0, len(order), batch_size):
        batch = order[lo : lo + batch_size]  # [B] sentence indices, similar lengths
        width = int(lengths[batch].max())
        x, tw = ids[batch, :width].to(device), token_word[batch, :width]
        attention = (torch.arange(width)[None, :] < lengths[batch][:, None]).long().to(device)
        with autocast(device):
            states = model.encoder(x, attention_mask=attention, output_hidden_states=True).hidden_states
        # destination row of each present word: the sentence's offset + the word's rank among its kept words
        rank = np.cumsum(present[batch.numpy(), : int(tw.max()) + 1], 1) - 1
        for l, h in enumerate(states):  # [B, S, H] each
            vectors, here = pool_words(h, tw.to(device), pooling)
            here = here.cpu().numpy()
            dest = offsets[batch.numpy()][:, None] + rank[:, : here.shape[1]]
            out[l][dest[here]] = vectors.cpu().numpy()[here].astype(np.float16)
    for array in out:
        array.flush()
    np.save(out_dir / "kept.npy", np.concatenate([present[k, :n] for k, n in enumerate(num_words)]))


def cached_representations(
    model, weights_hash, tokenizer, treebank, max_sentences, pooling, cache_dir, batch_size, device
) -> Path:
    """The cache folder for these weights/tokenizer/data/pooling: computed once, then reused."""
    from data.tokenization import tokenizer_hash

    key = cache_key(weights_hash, tokenizer_hash(tokenizer), treebank, max_sentences, pooling)
    final = Path(cache_dir) / key
    if (final / "kept.npy").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(final)
    try:
        extract(model, tokenizer, treebank, pooling, tmp, batch_size, device)
        meta = {"data": str(treebank.path), "pooling": pooling, "max_sentences": max_sentences}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        if final.exists():  # another process finished first: keep its copy
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_layers(cache: Path, layers: list[int]) -> np.ndarray:
    """[kept words, len(layers), H] float16 from the cache (memory-mapped reads)."""
    return np.stack([np.load(cache / f"layer_{l}.npy", mmap_mode="r") for l in layers], axis=1)


def load_kept(cache: Path) -> np.ndarray:
    return np.load(cache / "kept.npy")
