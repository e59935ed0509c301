"""Splits (glue / resplit, saved and reused with hashes) and length-grouped dynamic-padding batches."""

import json

import numpy as np
import pytest

from finetune.batching import collate, eval_batches, length_grouped_batches
from finetune.glue import GLUE_TASKS, Example, load_glue
from finetune.splits import build_splits, load_split, save_split
from finetune.squad import read_squad
from utils.errors import UserError


def test_resplit_real_sst2_is_deduplicated_disjoint_and_reproducible(data_root, tmp_path):
    train, dev, extra = load_glue(GLUE_TASKS["sst2"], data_root / "sst2")
    splits, record = build_splits("sst2", train, dev, extra, mode="resplit", seed=3)
    texts = {name: {ex.texts for ex in examples} for name, examples in splits.items()}
    assert all(len(texts[n]) == len(splits[n]) for n in splits)  # no duplicate inside a split
    assert not (
        texts["train"] & texts["validation"]
        or texts["train"] & texts["test"]
        or texts["validation"] & texts["test"]
    )
    n_unique = len({ex.texts for ex in train + dev})
    assert sum(record["sizes"].values()) == n_unique < len(train) + len(dev)  # SST-2 has duplicate phrases
    assert record["sizes"]["test"] == pytest.approx(0.1 * n_unique, abs=1)
    again, record2 = build_splits("sst2", train, dev, extra, mode="resplit", seed=3)
    assert record2 == record
    other = build_splits("sst2", train, dev, extra, mode="resplit", seed=4)[1]
    assert other["sha256"] != record["sha256"]
    # saved and reused: the same examples in the same order
    save_split(record, tmp_path / "split.json")
    reused, _ = load_split(tmp_path / "split.json", "sst2", train + dev)
    assert {n: [e.id for e in v] for n, v in reused.items()} == record["splits"]


def test_glue_mode_holds_validation_out_of_train():
    train = [Example(f"train-{i}", (f"s{i % 50}",), i % 2) for i in range(100)]  # each text twice
    dev = [Example(f"dev-{i}", (f"d{i}",), 0) for i in range(7)]
    splits, record = build_splits("sst2", train, dev, {}, mode="glue", seed=0, validation_fraction=0.2)
    assert [e.id for e in splits["test"]] == [e.id for e in dev]
    assert len(splits["validation"]) == 20 and len(splits["train"]) == 80
    assert not {e.texts for e in splits["train"]} & {
        e.texts for e in splits["validation"]
    }  # duplicates together
    full = build_splits("sst2", train, dev, {}, mode="glue", validation_fraction=0)[0]
    assert len(full["train"]) == 100 and full["validation"] == full["test"] == dev


def test_squad_resplit_keeps_articles_together(data_root):
    train = read_squad(data_root / "squad" / "train-v1.1.subset-44articles.json")
    splits, record = build_splits("squad", train, [], {}, mode="resplit", seed=0, group_of=lambda e: e.title)
    titles = [{e.title for e in splits[n]} for n in ("train", "validation", "test")]
    assert all(titles) and not (titles[0] & titles[1] or titles[0] & titles[2] or titles[1] & titles[2])
    # the subset repeats some (context, question) pairs: kept once
    assert sum(record["sizes"].values()) == len({e.texts for e in train}) < len(train)


def test_split_file_refuses_other_task_edits_and_changed_data(tmp_path):
    train = [Example(f"train-{i}", (f"s{i}",), i % 2) for i in range(30)]
    _, record = build_splits("rte", train, [], {}, mode="resplit", seed=0)
    path = tmp_path / "split.json"
    save_split(record, path)
    with pytest.raises(UserError, match="made for task 'rte', not 'mrpc'"):
        load_split(path, "mrpc", train)
    changed = [Example(e.id, e.texts, 1 - e.label) for e in train]
    with pytest.raises(UserError, match="differs from when the split was made"):
        load_split(path, "rte", changed)
    with pytest.raises(UserError, match="ids not in the data"):
        load_split(path, "rte", train[:10])
    edited = json.loads(path.read_text())
    edited["splits"]["test"].append(edited["splits"]["train"].pop())
    path.write_text(json.dumps(edited))
    with pytest.raises(UserError, match="sha256 does not match"):
        load_split(path, "rte", train)


def test_length_grouped_batches_pad_less_and_are_seeded():
    lengths = np.random.default_rng(0).integers(3, 200, size=5000)
    batches = length_grouped_batches(lengths, 32, seed=1, bucket_batches=10)
    flat = np.concatenate(batches)
    assert len(flat) == len(set(flat.tolist())) == 5000 // 32 * 32 and all(len(b) == 32 for b in batches)
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_batches = np.random.default_rng(1).permutation(5000)[: len(flat)].reshape(-1, 32)
    assert padded < 0.7 * sum(32 * lengths[b].max() for b in random_batches)
    assert all(
        np.array_equal(a, b)
        for a, b in zip(batches, length_grouped_batches(lengths, 32, seed=1, bucket_batches=10))
    )
    assert not np.array_equal(
        flat, np.concatenate(length_grouped_batches(lengths, 32, seed=2, bucket_batches=10))
    )
    assert sorted(np.concatenate(eval_batches(lengths, 64)).tolist()) == list(range(5000))


def test_collate_pads_to_the_longest_in_the_batch():
    feats = [
        {"input_ids": [2, 5, 3], "token_type_ids": [0, 0, 0], "label": 1},
        {"input_ids": [2, 5, 6, 7, 8, 9, 10, 11, 3], "token_type_ids": [0] * 5 + [1] * 4, "label": 0},
    ]
    batch = collate(feats, pad_id=0, label_keys=("label",), pad_to_multiple_of=8)
    assert batch["input_ids"].shape == (2, 16) and batch["attention_mask"].sum().item() == 12
    assert batch["input_ids"][0].tolist()[:4] == [2, 5, 3, 0] and batch["token_type_ids"][1, 8].item() == 1
    assert batch["label"].tolist() == [1, 0]
