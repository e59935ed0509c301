"""The bert instance layout pins google-research/bert's create_pretraining_data rules (eedf571), each on
hand-made documents or against an independent plain-Python walk written here from the rules."""

import random
import threading
import time

import numpy as np
import pytest
import torch

from data.bert_layout import bert_mask_count, bert_max_predictions, cached_layout, layout_copy
from data.masking import SubwordMasking, WholeWordMasking
from data.pretraining import PretrainingData


def corpus_arrays(doc_lengths):
    """[[sentence lengths] per document] -> token offsets [n_sent + 1], document bounds [n_doc + 1]."""
    lengths = [n for doc in doc_lengths for n in doc]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    bounds = np.concatenate([[0], np.cumsum([len(d) for d in doc_lengths])]).astype(np.int64)
    return offsets, bounds


def synthetic(n_docs=300, seed=0):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, 40, rng.integers(1, 40))) for _ in range(n_docs)]


def by_document(lay, bounds):
    """Per document: its instances in the order the layout made them (walk order within a document)."""
    doc = np.searchsorted(bounds, lay["sentences"][:, 0], side="right") - 1
    return {d: np.flatnonzero(doc == d) for d in range(len(bounds) - 1)}


def test_put_back_chunks_and_targets_per_document():
    docs = synthetic()
    off, bounds = corpus_arrays(docs)
    short_docs = 0
    for copy in range(3):
        lay = layout_copy(off, bounds, 60, 0.2, data_seed=4, copy=copy)
        sent, rnd, target = lay["sentences"].astype(np.int64), lay["is_random_next"], lay["target"]
        for d, rows in by_document(lay, bounds).items():
            first, end = bounds[d], bounds[d + 1]
            t = target[rows]
            assert len(set(t.tolist())) == 1  # ONE target per document (and copy)
            short_docs += t[0] < 60
            cursor = first
            for r in rows:
                s, a_end, b_s, b_e = sent[r]
                assert s == cursor  # each chunk starts where the walk is
                chunk_end = a_end if rnd[r] else b_e
                if not rnd[r]:  # IsNext: the chunk is A + B, closed at the target or the document's end
                    assert s < a_end < b_e <= end
                    assert off[b_e - 1] - off[s] < t[0] and (off[b_e] - off[s] >= t[0] or b_e == end)
                else:  # random B: another document, from its sentence b_s until target - len(A) tokens
                    b_doc = np.searchsorted(bounds, b_s, side="right") - 1
                    assert b_doc != d and b_s < b_e <= bounds[b_doc + 1]
                    want = t[0] - (off[a_end] - off[s])
                    assert b_e == b_s + 1 or off[b_e - 1] - off[b_s] < want
                    assert off[b_e] - off[b_s] >= want or b_e == bounds[b_doc + 1]
                # put-back: after a random B the next chunk starts right after A
                cursor = chunk_end
            assert cursor == end  # the walk covers the document to its end
    n_docs = 3 * len(docs)
    assert abs(short_docs / n_docs - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n_docs)


def test_single_sentence_chunks_are_closed_and_random_next():
    # max 20 tokens. doc 0: one long sentence. doc 1 (sentences 1-3): chunk [1 2] (3 + 60 tokens), A = 1;
    # IsNext: B = 2, then the last sentence alone; random B: 2 is put back and closes alone, then 3
    docs = [[50], [3, 60, 3], [4, 4, 4, 4, 4, 4]]
    off, bounds = corpus_arrays(docs)
    branches = set()
    for seed in range(40):
        lay = layout_copy(off, bounds, 20, 0.0, seed, 0)
        sent, rnd = lay["sentences"].astype(np.int64), lay["is_random_next"]
        doc0 = sent[:, 0] == 0
        assert doc0.sum() == 1 and tuple(sent[doc0][0, :2]) == (0, 1) and rnd[doc0].all()
        first = (sent[:, 0] == 1) & (sent[:, 1] == 2)
        lone_long, lone_last = (sent[:, 0] == 2) & (sent[:, 1] == 3), (sent[:, 0] == 3) & (sent[:, 1] == 4)
        assert first.sum() == 1 and lone_last.sum() == 1 and rnd[lone_last].all()  # never merged
        assert lone_long.sum() == rnd[first].sum() and rnd[lone_long].all()  # put back, then alone
        branches.add(bool(rnd[first][0]))
    assert branches == {False, True}


def reference_walk_count(doc_lengths, max_tokens, short_p, rng: random.Random):
    """Instances of one pass by the rules of create_instances_from_document, as a plain loop on sentence
    lengths (ours, written from the rules): per document one target; chunks closed at the target or the
    document's end; A = 1..n-1 sentences; random B for n == 1 or a coin; put-back of the unused ones."""
    count, n_docs = [], len(doc_lengths)
    for d, doc in enumerate(doc_lengths):
        target = rng.randint(2, max_tokens) if rng.random() < short_p else max_tokens
        i, chunk, n = 0, 0, 0
        while i < len(doc):
            chunk, i = chunk + doc[i], i + 1
            n += 1
            if i == len(doc) or chunk >= target:
                a = rng.randint(1, n - 1) if n >= 2 else 1
                if n == 1 or rng.random() < 0.5:
                    other = next((r for r in (rng.randrange(n_docs) for _ in range(10)) if r != d), d)
                    rng.randrange(len(doc_lengths[other]))  # its first sentence (lengths do not matter here)
                    i -= n - a
                count.append(1)
                chunk, n = 0, 0
    return len(count)


@pytest.mark.parametrize("short_p", [0.0, 0.5])
def test_instance_counts_match_an_independent_walk(short_p):
    docs = synthetic(200, seed=1)
    off, bounds = corpus_arrays(docs)
    ours = [len(layout_copy(off, bounds, 60, short_p, seed, 0)["target"]) for seed in range(30)]
    walk = [reference_walk_count(docs, 60, short_p, random.Random(seed)) for seed in range(30)]
    spread = np.sqrt((np.var(ours) + np.var(walk)) / 30)
    assert abs(np.mean(ours) - np.mean(walk)) < max(4 * spread, 0.002 * np.mean(walk)), (ours, walk)


def test_mask_count_formula():
    lengths = np.arange(1, 700)
    for p in (20, 80):
        expect = [min(p, max(1, int(round(n * 0.15)))) for n in lengths.tolist()]  # Python rounds half-even
        assert bert_mask_count(lengths, 0.15, p).tolist() == expect
    assert bert_mask_count([30, 10, 3], 0.15, 20).tolist() == [4, 2, 1]  # 4.5 -> 4, 1.5 -> 2, 0.45 -> 1
    assert (bert_max_predictions(128, 0.15), bert_max_predictions(512, 0.15)) == (20, 80)


def test_whole_word_piece_after_sep_joins_the_word_before():
    # [CLS] w ##x [SEP] ##y v [SEP]: BERT's candidates are {w ##x ##y} and {v}; ours {w ##x}, {##y}, {v}
    maskable = np.array([[0, 1, 1, 0, 1, 1, 0]], dtype=bool)
    word_start = np.array([[1, 1, 0, 1, 0, 1, 1]], dtype=bool)
    keys = np.array([[0.9, 0.1, 0.9, 0.9, 0.9, 0.5, 0.9]])  # w's word first, then v
    bert, ours = WholeWordMasking().as_in_bert(), WholeWordMasking()
    for n_target, want_bert, want_ours in [
        (3, [1, 2, 4], [1, 2, 5]),
        (2, [5], [1, 2]),
        (4, [1, 2, 4, 5], [1, 2, 4, 5]),
    ]:
        for strategy, want in ((bert, want_bert), (ours, want_ours)):
            selected, _ = strategy.select(maskable, word_start, np.array([n_target]), keys, keys[:, :0])
            assert np.flatnonzero(selected[0]).tolist() == want, (strategy.pieces_cross_specials, n_target)


def make(corpus, seq=64, dupe=1, static=True, masking=None, seed=3, **kw):
    return PretrainingData(
        corpus, seq, True, masking or SubwordMasking(), static, seed, dupe_factor=dupe, cache_dir=False, **kw
    )


def test_real_batches_mask_count_candidates_and_replacements(processed_corpus):
    data = make(processed_corpus, 128)
    assert data.layout == "bert" and data.max_predictions == 20 and data.vocab.special.sum() == 3
    assert np.array_equal(data.vocab.replacement_ids, np.arange(data.corpus.vocab_size))
    G = len(data) // 2
    batch = data.batch(0, G)
    n_masked = (batch["masked_labels"] != -100).sum(1).numpy()
    length = batch["attention_mask"].sum(1).numpy()
    assert np.array_equal(n_masked, bert_mask_count(length, 0.15, 20))  # 100% of instances
    ids, pos = batch["input_ids"], batch["masked_positions"]
    rows = torch.arange(len(ids))[:, None].expand_as(pos)
    valid = batch["masked_labels"] != -100
    chosen_in, chosen_orig = ids[rows[valid], pos[valid]], batch["masked_labels"][valid]
    assert not torch.isin(chosen_orig, torch.tensor([2, 3, 0])).any()  # never [CLS] [SEP] [PAD]
    masked = (chosen_in == 4).float().mean().item()
    kept = (chosen_in == chosen_orig).float().mean().item()
    assert (
        abs(masked - 0.8) < 0.02
        and abs(kept - 0.1 - 0.1 / 4096) < 0.02
        and abs(1 - masked - kept - 0.1) < 0.02
    )
    wwm = make(processed_corpus, 128, masking=WholeWordMasking())
    wb = wwm.batch(0, G)
    assert wwm.masking.pieces_cross_specials
    assert (
        (wb["masked_labels"] != -100).sum(1).numpy()
        <= bert_mask_count(wb["attention_mask"].sum(1).numpy(), 0.15, 20)
    ).all()


def test_truncation_flips_a_coin_per_removed_token(processed_corpus):
    data = make(processed_corpus, 32, dupe=2)
    inst = data.build(np.arange(len(data)), 0)
    off = data.offsets
    for side in ("a", "b"):
        s = inst[f"{side}_sentences"][:, 0]
        front = inst[f"{side}_start"] - off[s]
        cut = off[inst[f"{side}_sentences"][:, 1]] - off[s] - inst[f"{side}_length"]
        many = cut >= 8
        assert many.sum() > 300
        z = (front[many] - cut[many] / 2) / np.sqrt(cut[many] / 4)  # Binomial(cut, 1/2): z ~ (0, 1)
        assert abs(z.mean()) < 0.15 and 0.8 < z.var() < 1.25, (z.mean(), z.var())  # uniform: var ~ cut/3


def test_dupe_copies_and_the_same_order_every_pass(processed_corpus):
    data = make(processed_corpus, 64, dupe=3)
    off, bounds = data.offsets, data.corpus.document_offsets
    copies = [layout_copy(off, bounds, 61, 0.1, 3, c) for c in range(3)]
    assert len(data) == sum(len(c["target"]) for c in copies)
    for c in range(3):  # copy c is its own layout, pairing and masks
        rows = np.flatnonzero(np.asarray(data.bert["copy"]) == c)
        assert np.array_equal(data.bert["sentences"][rows], copies[c]["sentences"])
    assert len({c["sentences"].tobytes() for c in copies}) == 3
    order = data.order(0)
    assert np.array_equal(np.sort(order), np.arange(len(data))) and np.array_equal(order, data.order(5))
    steps = data.steps_per_epoch(32)
    for k in (0, 3):  # static masks: pass 2 repeats pass 1 batch for batch
        x, y = data.batch(k, 32), data.batch(k + steps, 32)
        assert all(torch.equal(x[key], y[key]) for key in x)
    dyn = make(processed_corpus, 64, dupe=3, static=False)
    x, y = dyn.batch(0, 32), dyn.batch(steps, 32)
    assert torch.equal(x["nsp_labels"], y["nsp_labels"]) and not torch.equal(x["input_ids"], y["input_ids"])


def test_layout_cache_is_keyed_and_equal(processed_corpus, tmp_path):
    fresh = make(processed_corpus, 64, dupe=2)
    built = PretrainingData(
        processed_corpus, 64, True, SubwordMasking(), True, 3, dupe_factor=2, cache_dir=tmp_path
    )
    loaded = PretrainingData(
        processed_corpus, 64, True, SubwordMasking(), True, 3, dupe_factor=2, cache_dir=tmp_path
    )
    assert isinstance(loaded.bert["sentences"], np.memmap) and len(list(tmp_path.iterdir())) == 1
    for k in fresh.bert:
        assert np.array_equal(fresh.bert[k], built.bert[k]) and np.array_equal(fresh.bert[k], loaded.bert[k])
    assert all(torch.equal(v, loaded.batch(2, 16)[k]) for k, v in fresh.batch(2, 16).items())
    PretrainingData(processed_corpus, 64, True, SubwordMasking(), True, 4, dupe_factor=2, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2  # another seed, another layout


def test_ranks_starting_together_build_the_layout_once(tmp_path):
    builds = []

    def build():
        builds.append(1)
        time.sleep(0.3)  # the others arrive while the first builds
        return {"order": np.arange(5), "target": np.full(5, 7)}

    results = [None] * 4

    def rank(r):
        results[r] = cached_layout(tmp_path, {"corpus": "x"}, build)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and all(np.array_equal(r["order"], np.arange(5)) for r in results)
    assert cached_layout(None, {}, build)["target"][0] == 7 and len(builds) == 2  # no cache: builds


def test_bad_layout_options_are_one_line_errors(processed_corpus):
    from utils.errors import UserError

    for kwargs, match in [
        (dict(nsp=False, layout="bert"), "needs NSP"),
        (dict(nsp=True, layout="bert", dupe_factor=0), "dupe_factor 0"),
        (dict(nsp=False, layout="fixed_chunks", dupe_factor=3), "dupe_factor 3"),
        (dict(nsp=True, layout="roberta"), "instance_layout"),
    ]:
        nsp = kwargs.pop("nsp")
        with pytest.raises(UserError, match=match):
            PretrainingData(processed_corpus, 64, nsp, SubwordMasking(), True, 0, cache_dir=False, **kwargs)
