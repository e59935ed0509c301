"""Length-grouped batches with dynamic padding: short SST-2 sentences don't pay for 512 positions."""

import numpy as np
import torch


def length_grouped_batches(lengths, batch_size: int, seed: int, bucket_batches: int = 100, drop_last=True):
    """Training batches (index arrays): a seeded shuffle, then sorted by length within buckets of
    `bucket_batches` batches, cut into batches, and the batches shuffled. drop_last keeps every
    optimizer step at exactly batch_size examples (the partial batch is a different one each epoch)."""
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    batches, chunk = [], batch_size * bucket_batches
    for i in range(0, len(order), chunk):
        bucket = order[i : i + chunk]
        bucket = bucket[np.argsort(-lengths[bucket], kind="stable")]  # longest first inside a bucket
        batches += [bucket[j : j + batch_size] for j in range(0, len(bucket), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches = [b for b in batches if len(b) == batch_size]
    return [batches[k] for k in rng.permutation(len(batches))]


def eval_batches(lengths, batch_size: int):
    """Evaluation batches: sorted by length (least padding); outputs go back by index."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def micro_batches(batch, parts: int) -> list:
    """A global batch cut into `parts` = world_size * accumulation near-equal micro-batches;
    micro-batch m * world_size + rank is rank's m-th (a fixed layout, independent of padding)."""
    return np.array_split(np.asarray(batch), parts)


def collate(features, pad_id: int, label_keys=(), pad_to_multiple_of: int = 8) -> dict:
    """Pad input_ids / token_type_ids to the batch's longest sequence (rounded up for tensor cores).
    features: dicts with "input_ids", "token_type_ids" and the label keys."""
    longest = max(len(f["input_ids"]) for f in features)
    width = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)  # [B, S]
    types = torch.zeros((len(features), width), dtype=torch.long)  # [B, S]
    mask = torch.zeros((len(features), width), dtype=torch.long)  # [B, S] 1 = token
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n] = torch.as_tensor(f["input_ids"])
        types[i, :n] = torch.as_tensor(f["token_type_ids"])
        mask[i, :n] = 1
    batch = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}
    for key in label_keys:
        dtype = torch.float32 if isinstance(features[0][key], float) else torch.long
        batch[key] = torch.tensor([f[key] for f in features], dtype=dtype)
    return batch
