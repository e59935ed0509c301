"""The bert_exact layout: google-research/bert's create_pretraining_data draws, from random.Random(seed) in
the reference's order. Hand-made documents with the expected draws replayed here from the reference's
rules (a single-sentence chunk draws no split and no coin; randint(1, n - 1) only for n >= 2; up to 10
random-document draws; a coin per removed token; shuffled candidates then 1-3 draws per masked token),
plus its distribution against the bert layout, its stored masks, rank slicing and the cache."""

import random

import numpy as np
import pytest
import torch

from data.bert_exact import bert_exact_layout, exact_masks
from data.bert_layout import bert_mask_count
from data.masking import SpanMasking, SubwordMasking, WholeWordMasking
from data.pretraining import PretrainingData
from utils.errors import UserError

CLS, SEP, MASK, V = 2, 3, 4, 50


def replay_tail(r, a, b, max_tokens, max_predictions=20):
    """Truncation and subword masks of one instance, from the rules: -> (front cuts, positions, ids)."""
    a, b, front = list(a), list(b), [0, 0]
    while len(a) + len(b) > max_tokens:
        side = 0 if len(a) > len(b) else 1
        cut = (a, b)[side]
        if r.random() < 0.5:
            del cut[0]
            front[side] += 1
        else:
            cut.pop()
    ids = [CLS, *a, SEP, *b, SEP]
    candidates = [i for i in range(len(ids)) if ids[i] not in (CLS, SEP)]
    r.shuffle(candidates)
    n = min(max_predictions, max(1, int(round(0.15 * len(ids)))))
    placed = {}
    for i in candidates[:n]:
        if r.random() < 0.8:
            placed[i] = MASK
        elif r.random() < 0.5:
            placed[i] = ids[i]
        else:
            placed[i] = r.randint(0, V - 1)
    return front, sorted(placed), [placed[i] for i in sorted(placed)]


def layout(sentences, docs, max_tokens, seed, dupe=1, short_p=0.0, masking=None):
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])])
    tokens = np.array([t for s in sentences for t in s], dtype=np.int64)
    is_piece = np.zeros(V, dtype=bool)
    args = (offsets, docs, tokens, is_piece, (CLS, SEP, MASK), max_tokens, short_p)
    return bert_exact_layout(*args, masking or SubwordMasking(), 20, seed, dupe)


def check(out, expected, order):
    assert len(out["target"]) == len(expected)
    for k, (sent, rand, front, pos, ids) in enumerate(expected):
        assert out["sentences"][k].tolist() == sent and bool(out["is_random_next"][k]) == rand, k
        assert out["front"][k].tolist() == front, k
        n = len(pos)
        assert out["mask_positions"][k, :n].tolist() == pos and (out["mask_positions"][k, n:] == -1).all()
        assert out["mask_ids"][k, :n].tolist() == ids, k
    assert out["order"].tolist() == order


@pytest.mark.parametrize("seed", range(12))
def test_pairing_draws_one_sentence_and_two_sentence_documents(seed):
    # D0: one sentence (a one-sentence chunk: random next with no split and no coin); D1: two sentences
    # (randint(1, 1) is still drawn, then the coin; a random B puts sentence 2 back, a chunk of its own)
    sentences = [[10, 11, 12], [20, 21], [30, 31]]
    r = random.Random(seed)
    docs = [[0], [1, 2]]
    r.shuffle(docs)
    expected = []

    def random_b(d):
        for _ in range(10):
            other = r.randint(0, 1)
            if other != d:
                break
        start = r.randint(0, len(docs[other]) - 1)
        return docs[other][start:]  # a target of 61 tokens is never reached: to the document's end

    def emit(a, b, rand):
        tail = replay_tail(r, [t for s in a for t in sentences[s]], [t for s in b for t in sentences[s]], 61)
        expected.append(([a[0], a[-1] + 1, b[0], b[-1] + 1], rand, *tail))

    for _ in range(2):  # dupe_factor 2: the second copy only matches if the first drew exactly as BERT
        for d, doc in enumerate(docs):
            assert r.random() >= 0.0  # short_p 0: the draw is made, never short
            if len(doc) == 1:
                emit(doc, random_b(d), True)
                continue
            assert r.randint(1, 1) == 1
            if r.random() < 0.5:
                emit([1], random_b(d), True)
                emit([2], random_b(d), True)  # put back: sentence 2 alone, random next again
            else:
                emit([1], [2], False)
    order = list(range(len(expected)))
    r.shuffle(order)
    check(layout(sentences, [0, 1, 3], 61, seed, dupe=2), expected, order)


@pytest.mark.parametrize("seed", range(8))
def test_short_target_and_truncation_coins(seed):
    # D0: four 6-token sentences, D1: one 10-token sentence; max_tokens 9; short_p 1: every document
    # draws randint(2, 9); the chunk closes as soon as it holds the target
    sentences = [[10 + i] * 6 for i in range(4)] + [[40] * 10]
    r = random.Random(seed)
    docs = [[0, 1, 2, 3], [4]]
    r.shuffle(docs)
    expected = []
    for d, doc in enumerate(docs):
        assert r.random() < 1.0
        target = r.randint(2, 9)
        first, length, i = 0, 0, 0
        while i < len(doc):
            length += len(sentences[doc[i]])
            if i == len(doc) - 1 or length >= target:
                n = i + 1 - first
                a_end = r.randint(1, n - 1) if n >= 2 else 1
                a = doc[first : first + a_end]
                len_a = sum(len(sentences[s]) for s in a)
                if n == 1 or r.random() < 0.5:
                    for _ in range(10):
                        other = r.randint(0, 1)
                        if other != d:
                            break
                    start, b, got = r.randint(0, len(docs[other]) - 1), [], 0
                    for s in docs[other][start:]:
                        b.append(s)
                        got += len(sentences[s])
                        if got >= target - len_a:
                            break
                    i = first + a_end - 1
                    rand = True
                else:
                    b, rand = doc[first + a_end : i + 1], False
                a_tok = [t for s in a for t in sentences[s]]
                b_tok = [t for s in b for t in sentences[s]]
                tail = replay_tail(r, a_tok, b_tok, 9)
                expected.append(([a[0], a[-1] + 1, b[0], b[-1] + 1], rand, *tail))
                first, length = i + 1, 0
            i += 1
    order = list(range(len(expected)))
    r.shuffle(order)
    out = layout(sentences, [0, 4, 5], 9, seed, short_p=1.0)
    check(out, expected, order)


def test_whole_word_candidates_join_across_sep_and_skip_what_overflows():
    # [CLS] w ##x [SEP] ##y v [SEP]: candidates {1, 2, 4} (the ## after [SEP] joins A's last word) and {5}
    ids, is_piece = [CLS, 7, 8, SEP, 9, 6, SEP], np.zeros(V, dtype=bool)
    is_piece[[8, 9]] = True
    for seed in range(20):
        r, mine = random.Random(seed), random.Random(seed)
        groups = [[1, 2, 4], [5]]
        r.shuffle(groups)
        # round(0.15 * 7) = 1 prediction: the 3-piece word never fits, v is always the one
        want = MASK if r.random() < 0.8 else (6 if r.random() < 0.5 else r.randint(0, V - 1))
        got = exact_masks(mine, ids, is_piece, (CLS, SEP), (0.15, 20, True, 0.8, 0.5, V))
        assert got == ([5], [-1 if want == MASK else want]) and mine.random() == r.random()


def exact(corpus, seq=64, seed=3, dupe=1, **kw):
    kw = {"cache_dir": False, **kw}
    return PretrainingData(
        corpus, seq, True, SubwordMasking(), True, seed, dupe_factor=dupe, layout="bert_exact", **kw
    )


def test_distribution_matches_the_bert_layout(processed_corpus):
    e = [exact(processed_corpus, 128, seed, dupe=2) for seed in range(3)]
    b = [
        PretrainingData(
            processed_corpus, 128, True, SubwordMasking(), True, s, dupe_factor=2, cache_dir=False
        )
        for s in range(3)
    ]
    n_e, n_b = np.mean([len(d) for d in e]), np.mean([len(d) for d in b])
    assert abs(n_e / n_b - 1) < 0.1, (n_e, n_b)
    next_e = np.mean([1 - d.bert["is_random_next"].mean() for d in e])
    next_b = np.mean([1 - d.bert["is_random_next"].mean() for d in b])
    assert abs(next_e - next_b) < 0.03, (next_e, next_b)
    for d in (e[0], b[0]):  # the mask-count formula in 100% of instances, both layouts
        batch = d.batch(0, len(d))
        count = (batch["masked_labels"] != -100).sum(1).numpy()
        assert np.array_equal(count, bert_mask_count(batch["attention_mask"].sum(1).numpy(), 0.15, 20))


def test_stored_masks_80_10_10_sorted_and_labelled(processed_corpus):
    data = exact(processed_corpus, 128, seed=1)
    assert data.max_predictions == 20
    batch = data.batch(0, len(data))
    inst = data.build(data.order(0), 0)
    valid = batch["masked_labels"] != -100
    pos = batch["masked_positions"]
    rows = torch.arange(len(pos))[:, None].expand_as(pos)
    assert torch.equal(
        batch["masked_labels"][valid], torch.from_numpy(inst["tokens"])[rows[valid], pos[valid]]
    )
    assert (pos[:, 1:] > pos[:, :-1])[valid[:, 1:]].all()  # sorted, as the reference sorts masked_lms
    placed, orig = batch["input_ids"][rows[valid], pos[valid]], batch["masked_labels"][valid]
    masked, kept = (placed == MASK).float().mean().item(), (placed == orig).float().mean().item()
    assert abs(masked - 0.8) < 0.015 and abs(kept - 0.1) < 0.015 and abs(1 - masked - kept - 0.1) < 0.015
    unmasked = torch.ones_like(batch["input_ids"], dtype=torch.bool)
    unmasked[rows[valid], pos[valid]] = False
    assert torch.equal(batch["input_ids"][unmasked], torch.from_numpy(inst["tokens"])[unmasked])


def test_ranks_accumulation_cache_and_every_pass(processed_corpus, tmp_path):
    data = exact(processed_corpus, 64, seed=5, dupe=2, cache_dir=tmp_path)
    loaded = exact(processed_corpus, 64, seed=5, dupe=2, cache_dir=tmp_path)
    assert isinstance(loaded.bert["mask_ids"], np.memmap) and len(list(tmp_path.iterdir())) == 1
    G, steps = 16, data.steps_per_epoch(16)
    for step in (0, 7, steps + 7):  # the same batches every pass
        whole = data.batch(step, G)
        again = loaded.batch(step % steps, G)
        assert all(torch.equal(whole[k], again[k]) for k in whole)  # bitwise after rebuilding from cache
        for parts in (
            [data.batch(step, G, rank=r, world_size=4) for r in range(4)],
            [data.batch(step, G, micro_step=m, accumulation=2) for m in range(2)],
            [
                data.batch(step, G, rank=r, world_size=2, micro_step=m, accumulation=2)
                for r in range(2)
                for m in range(2)
            ],
        ):
            assert all(torch.equal(whole[k], torch.cat([p[k] for p in parts])) for k in whole)
    bert = PretrainingData(
        processed_corpus, 64, True, SubwordMasking(), True, 5, dupe_factor=2, cache_dir=tmp_path
    )
    assert len(list(tmp_path.iterdir())) == 2 and len(bert) != len(data)  # its own cache entry


def test_bad_options_are_one_line_errors(processed_corpus):
    for nsp, masking, static, match in [
        (False, SubwordMasking(), True, "needs NSP"),
        (True, SubwordMasking(), False, "--static_masking"),
        (True, SpanMasking(), True, "--masking subword or whole_word"),
    ]:
        with pytest.raises(UserError, match=match):
            PretrainingData(
                processed_corpus, 64, nsp, masking, static, 0, cache_dir=False, layout="bert_exact"
            )
    ww = PretrainingData(
        processed_corpus,
        64,
        True,
        WholeWordMasking(),
        True,
        0,
        dupe_factor=1,
        cache_dir=False,
        layout="bert_exact",
    )
    batch = ww.batch(0, len(ww))
    count = (batch["masked_labels"] != -100).sum(1).numpy()
    assert (count <= bert_mask_count(batch["attention_mask"].sum(1).numpy(), 0.15, ww.max_predictions)).all()
