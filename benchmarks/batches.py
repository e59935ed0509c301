"""Real pretraining batches for the benchmark: data.pretraining.PretrainingData on a processed corpus.

Without --input_path a small corpus is made on the fly (as the test fixtures do): a WordPiece tokenizer
(vocabulary 4096) trained on a few Gutenberg books from the data root, and those books preprocessed
with it. The model's vocabulary (30522 in the benchmark) is what sets the MLM head's cost, not the
tokenizer's.
"""

from pathlib import Path

import torch

from utils.paths import data_root

BOOKS = [  # the test fixtures' books, plus two long ones so seq 512 x batch 64 has fresh text
    "Carroll__Alice_s_Adventures_in_Wonderland.txt",
    "Dickens__A_Christmas_Carol.txt",
    "Stevenson__The_Strange_Case_of_Dr_Jekyll_and_Mr_Hyde.txt",
    "London__The_Call_of_the_Wild.txt",
    "Austen__Emma.txt",
    "Austen__Pride_and_Prejudice.txt",
]
IGNORE = -100


def make_corpus(work_dir: Path) -> Path:
    """Train a tokenizer on BOOKS and preprocess them into work_dir/processed (a few seconds)."""
    from data.cleaning import clean_documents, read_text
    from data.preprocess import main as preprocess
    from data.tokenization import save_tokenizer, train_tokenizer

    books = [data_root() / "corpus" / "gutenberg" / "train" / name for name in BOOKS]
    texts = [p for f in books for doc in clean_documents(read_text(f)[0]) for p in doc]
    tokenizer = work_dir / "tokenizer.json"
    save_tokenizer(train_tokenizer(texts, vocab_size=4096, lowercase=True), tokenizer)
    out = work_dir / "processed"
    args = ["--input_path", *map(str, books), "--vocab_path", str(tokenizer), "--output_dir", str(out)]
    preprocess([*args, "--validation_fraction", "0.01", "--seed", "0", "--workers", "1"])
    return out


def corpus_batches(corpus_dir, n: int, batch_size: int, seq_length: int, seed: int = 0) -> list[dict]:
    """n distinct MLM + NSP batches (subword masking, 15%, short_p 0.1: BERT's recipe)."""
    from data.masking import build_masking
    from data.pretraining import PretrainingData

    data = PretrainingData(corpus_dir, seq_length, True, build_masking("subword"), False, seed)
    return [data.batch(step, batch_size) for step in range(n)]


def full_labels(batch: dict) -> torch.Tensor:
    """[B,S] labels, -100 except at the masked positions (Hugging Face's `labels`)."""
    positions, labels = batch["masked_positions"], batch["masked_labels"]  # [B,P]
    out = torch.full_like(batch["input_ids"], IGNORE)
    # padding slots point at position 0 ([CLS], never masked) with label -100: scattering them is harmless
    return out.scatter_(1, positions, labels)


def hf_batch(batch: dict) -> dict:
    """The keyword arguments of transformers.BertForPreTraining for one of our batches."""
    return {
        "input_ids": batch["input_ids"],
        "token_type_ids": batch["token_type_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": full_labels(batch),
        "next_sentence_label": batch["nsp_labels"],
    }


def padding_share(batches: list[dict]) -> tuple[float, float]:
    """(share of padding positions, share of batches with any padding)."""
    masks = torch.stack([b["attention_mask"] for b in batches])  # [n,B,S]
    pad = 1.0 - masks.float().mean().item()
    padded = sum(not bool(b["attention_mask"].all()) for b in batches) / len(batches)
    return pad, padded
