"""Whole-word masking's vectorised selection equals the plain greedy loop it replaced, bit for bit
(existing runs must reproduce their masks)."""

import numpy as np
import pytest

from data.masking import WholeWordMasking
from data.pretraining import PretrainingData


def reference_select(maskable, word_start, n_target, keys):
    """The original WholeWordMasking.select: words in random order, a Python greedy loop per row."""
    b, S = maskable.shape
    prev = np.concatenate([np.zeros((b, 1), dtype=bool), maskable[:, :-1]], axis=1)
    is_start = maskable & (word_start | ~prev)
    bounds = np.concatenate([is_start | ~maskable, np.ones((b, 1), dtype=bool)], axis=1).ravel()
    flat_start = np.flatnonzero(np.concatenate([is_start, np.zeros((b, 1), dtype=bool)], axis=1).ravel())
    flat_bounds = np.flatnonzero(bounds)
    flat_end = flat_bounds[np.searchsorted(flat_bounds, flat_start, side="right")]
    rows, starts = np.divmod(flat_start, S + 1)
    lengths = flat_end - flat_start
    order = np.lexsort((keys[rows, starts], rows))
    chosen, row_first = [], np.searchsorted(rows[order], np.arange(b + 1)).tolist()
    order_list, length_list, targets = order.tolist(), lengths.tolist(), n_target.tolist()
    for row in range(b):
        total, target = 0, targets[row]
        for w in order_list[row_first[row] : row_first[row + 1]]:
            if total + length_list[w] <= target:
                chosen.append(w)
                total += length_list[w]
                if total == target:
                    break
    chosen = np.array(chosen, dtype=np.int64)
    selected = np.zeros((b, S), dtype=bool)
    n = lengths[chosen]
    cols = np.repeat(starts[chosen] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
    selected[np.repeat(rows[chosen], n), cols] = True
    return selected


def random_case(rng):
    """Random rows with the edge cases: no maskable token, n_target 0 or beyond the maskable tokens,
    long words that never fit, batch of 1, tied keys."""
    b, S = int(rng.choice([1, 1, 2, 5, 16])), int(rng.integers(1, 70))
    maskable = rng.random((b, S)) < rng.choice([0.0, 0.3, 0.8, 0.95, 1.0])
    maskable[rng.random(b) < 0.15] = False  # whole rows with nothing to mask
    word_start = rng.random((b, S)) < rng.choice([0.05, 0.3, 0.7, 1.0])  # 0.05: long words
    n_max = maskable.sum(1)
    n_target = rng.integers(0, n_max + 6)  # up to more than the maskable tokens
    n_target[rng.random(b) < 0.1] = 0
    n_target[rng.random(b) < 0.1] = 1  # only single-token words fit
    keys = rng.random((b, S)) if rng.random() < 0.7 else rng.integers(0, 4, (b, S)) / 4  # ties
    return maskable, word_start, n_target.astype(np.int64), keys


def check(maskable, word_start, n_target, keys):
    selected, unit = WholeWordMasking().select(maskable, word_start, n_target, keys, keys[:, :0])
    expected = reference_select(maskable, word_start, n_target, keys)
    assert selected.dtype == bool and selected.shape == maskable.shape
    assert np.array_equal(selected, expected)
    assert np.array_equal(unit, np.broadcast_to(np.arange(maskable.shape[1]), maskable.shape))


@pytest.mark.parametrize("seed", range(4))
def test_whole_word_select_equals_greedy_loop_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    for _ in range(500):
        check(*random_case(rng))


def test_whole_word_select_edge_cases():
    rng = np.random.default_rng(0)
    S = 12
    keys = rng.random((1, S))
    all_words = np.ones((1, S), dtype=bool)
    for maskable, word_start, n_target in [
        (np.zeros((1, S), dtype=bool), all_words, 3),  # nothing maskable
        (np.ones((1, S), dtype=bool), all_words, 0),  # nothing to mask
        (np.ones((1, S), dtype=bool), all_words, 50),  # more than there is: everything
        (np.ones((1, S), dtype=bool), np.eye(1, S, dtype=bool), 5),  # one word of 12: never fits
        (np.ones((1, S), dtype=bool), np.eye(1, S, dtype=bool), 12),  # ... fits exactly
        (np.ones((1, S), dtype=bool), np.zeros((1, S), dtype=bool), 4),  # no word-start tokens
    ]:
        check(maskable, word_start, np.array([n_target]), keys)
    check(*(np.ones((3, S), dtype=bool),) * 2, np.array([4, 4, 4]), np.zeros((3, S)))  # all keys tie


class RecordingWholeWord(WholeWordMasking):
    def select(self, *args):
        self.args = args
        return super().select(*args)


@pytest.mark.parametrize("seq_length,batch_size,mask_p", [(128, 256, 0.15), (512, 64, 0.15), (128, 64, 0.5)])
def test_whole_word_select_on_real_batches(processed_corpus, seq_length, batch_size, mask_p):
    masking = RecordingWholeWord(mask_p=mask_p)
    data = PretrainingData(processed_corpus, seq_length, True, masking, False, 0, layout="fixed_chunks")
    for step in range(3):
        data.batch(step, batch_size)  # records the arguments of select
        assert np.array_equal(masking.select(*masking.args)[0], reference_select(*masking.args[:4]))
