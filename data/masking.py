"""Masking strategies for masked language modelling: subword (BERT), whole-word, span (ELC-BERT).

A strategy masks a batch of sequences [b,S] from a block of uniforms per sequence, u [b,K] (drawn from
that instance's own random stream, so a mask is a pure function of (data seed, epoch, instance)).
Predictions per sequence: the caller's count (BERT's, data.bert_layout.bert_mask_count), or by default
ours: mask_p times its maskable (non-special) tokens, rounded stochastically (unbiased); capped at
max_predictions. A chosen position becomes [MASK] with probability 1 - random_p - keep_p, a random id
of vocab.replacement_ids with probability random_p, and stays itself otherwise; vocab.special tokens
are never chosen. (The fixed_chunks layout: specials never chosen nor drawn; the bert layout, as
google-research/bert: all but [CLS]/[SEP]/[PAD] chosen, the whole vocabulary drawn.)
"""

from dataclasses import dataclass

import numpy as np

from utils.errors import UserError


@dataclass(frozen=True)
class VocabInfo:
    """What masking needs to know about the vocabulary: built once per corpus from its tokenizer."""

    mask_id: int
    special: np.ndarray  # [vocab] bool: never masked, never a random replacement
    word_start: np.ndarray  # [vocab] bool: the token begins a word (not a "##" piece)
    replacement_ids: np.ndarray  # [n] the non-special ids random replacements are drawn from


class MaskingStrategy:
    """Subclasses choose positions in `select`; the 80/10/10 decision is shared by positions of a unit."""

    name = "base"

    def __init__(self, mask_p: float = 0.15, random_p: float = 0.1, keep_p: float = 0.1):
        if not 0 < mask_p < 1:
            raise UserError(f"--mask_p {mask_p} must be in (0, 1)")
        if random_p < 0 or keep_p < 0 or random_p + keep_p > 1:
            raise UserError(f"random_p {random_p} and keep_p {keep_p} must be >= 0 and sum to at most 1")
        self.mask_p, self.random_p, self.keep_p = mask_p, random_p, keep_p

    def __repr__(self):
        return f"{type(self).__name__}(mask_p={self.mask_p}, random_p={self.random_p}, keep_p={self.keep_p})"

    def n_units(self, seq_length: int) -> int:
        return seq_length

    def n_uniforms(self, seq_length: int) -> int:
        """Uniforms per sequence: rounding, selection keys [S], unit decisions [U], replacements [S]."""
        return 1 + 2 * seq_length + self.n_units(seq_length) + self.extra_uniforms()

    def extra_uniforms(self) -> int:
        return 0

    def select(self, maskable, word_start, n_target, keys, extra) -> tuple[np.ndarray, np.ndarray]:
        """maskable, word_start [b,S] bool, n_target [b], keys [b,S] -> (selected [b,S] bool, unit [b,S])."""
        raise NotImplementedError

    def as_in_bert(self) -> "MaskingStrategy":
        """This strategy with google-research/bert's conventions where they differ (whole words)."""
        return self

    def __call__(self, tokens, vocab: VocabInfo, u, max_predictions: int, n_target=None):
        """tokens [b,S], u [b,K], n_target [b] or None -> inputs [b,S], positions [b,P] (pad 0), labels
        [b,P] (pad -100)."""
        b, S = tokens.shape
        P, U = max_predictions, self.n_units(S)
        keys, decide, replace = u[:, 1 : 1 + S], u[:, 1 + S : 1 + S + U], u[:, 1 + S + U : 1 + 2 * S + U]
        maskable = ~vocab.special[tokens]
        if n_target is None:
            n_target = np.floor(maskable.sum(1) * self.mask_p + u[:, 0]).astype(np.int64)
        n_target = np.minimum(n_target, P)
        selected, unit = self.select(
            maskable, vocab.word_start[tokens], n_target, keys, u[:, 1 + 2 * S + U :]
        )
        d = np.take_along_axis(decide, unit, axis=1)  # [b,S] one draw per unit
        to_mask = selected & (d < 1.0 - self.random_p - self.keep_p)
        to_random = selected & ~to_mask & (d < 1.0 - self.keep_p)
        n_repl = len(vocab.replacement_ids)
        random_ids = vocab.replacement_ids[np.minimum((replace * n_repl).astype(np.int64), n_repl - 1)]
        inputs = np.where(to_mask, vocab.mask_id, np.where(to_random, random_ids, tokens))
        # selected positions first, in order (stable sort of "not selected"), then padding
        order = np.argsort(~selected, axis=1, kind="stable")[:, :P]
        valid = np.arange(P)[None, :] < selected.sum(1)[:, None]
        positions = np.where(valid, order, 0)
        labels = np.where(valid, np.take_along_axis(tokens, order, axis=1), -100)
        return inputs, positions, labels


class SubwordMasking(MaskingStrategy):
    """BERT: n_target tokens uniformly among the maskable ones (smallest keys), decided token by token."""

    name = "subword"

    def select(self, maskable, word_start, n_target, keys, extra):
        b, S = maskable.shape
        order = np.argsort(np.where(maskable, keys, 2.0), axis=1)  # [b,S] maskable first, random order
        selected = np.zeros((b, S), dtype=bool)
        np.put_along_axis(selected, order, np.arange(S)[None, :] < n_target[:, None], axis=1)
        return selected, np.broadcast_to(np.arange(S), (b, S))


class WholeWordMasking(MaskingStrategy):
    """BERT's whole-word masking: words (a word-start token and its continuation pieces) in random
    order, each taken whole if it still fits in n_target (else skipped); 80/10/10 per token as BERT.
    A "##" piece right after a special token starts a word of its own, unless pieces_cross_specials
    (google-research/bert: it joins the last word before, so a B that starts mid-word after front
    truncation is one word with A's last word)."""

    name = "whole_word"

    def __init__(self, mask_p=0.15, random_p=0.1, keep_p=0.1, pieces_cross_specials: bool = False):
        super().__init__(mask_p, random_p, keep_p)
        self.pieces_cross_specials = pieces_cross_specials

    def as_in_bert(self):
        return type(self)(self.mask_p, self.random_p, self.keep_p, pieces_cross_specials=True)

    def select(self, maskable, word_start, n_target, keys, extra):
        b, S = maskable.shape
        # a word starts at a word-start token, or at a maskable token right after a special one (BERT:
        # only at the first maskable token), and ends before the next word start (or special token)
        if self.pieces_cross_specials:
            prev = np.cumsum(maskable, axis=1) > 1  # some maskable token before this one
        else:
            prev = np.concatenate([np.zeros((b, 1), dtype=bool), maskable[:, :-1]], axis=1)
        is_start = maskable & (word_start | ~prev)
        # each maskable token's word: the last word start at or before it, as a flat index into [b*S]
        row_offset = S * np.arange(b)[:, None]
        word = (np.maximum.accumulate(np.where(is_start, np.arange(S), 0), axis=1) + row_offset)[maskable]
        length = np.bincount(word, minlength=b * S)  # [b*S] word length at its start, else 0
        # words in random order within each row, equal keys by position (a stable sort: ~3x slower than
        # the default one, so only when keys tie)
        start_keys = np.where(is_start, keys, np.inf)
        order = np.argsort(start_keys, axis=1)
        sorted_keys = np.take_along_axis(start_keys, order, axis=1)
        if np.any((sorted_keys[:, 1:] == sorted_keys[:, :-1]) & (sorted_keys[:, 1:] < np.inf)):
            order = np.argsort(start_keys, axis=1, kind="stable")
        order = order[:, : is_start.sum(1).max(initial=0)] + row_offset  # [b,W] flat word starts
        lens = length[order]  # 0 past a row's last word
        # greedy (take each word that still fits in n_target), vectorised in rounds without a Python
        # loop over words: a word longer than the room left is skipped (the room only shrinks), and of
        # the others, all before the first that overflows the room are taken (so each round takes a word)
        room, live, take = n_target.astype(np.int64), lens > 0, np.zeros(lens.shape, dtype=bool)
        while live.any():
            live &= lens <= room[:, None]
            fit = live & (np.cumsum(lens * live, axis=1) <= room[:, None])
            take |= fit
            live &= ~fit
            room -= (lens * fit).sum(1)
        taken = np.zeros(b * S, dtype=bool)
        taken[order[take]] = True
        selected = np.zeros((b, S), dtype=bool)
        selected[maskable] = taken[word]  # a token is selected when its word is
        return selected, np.broadcast_to(np.arange(S), (b, S))


class SpanMasking(MaskingStrategy):
    """ELC-BERT's span masking (ltgoslo/elc-bert pre_training/dataset.py), with its counts:
    - target: Binomial(n, mask_p) tokens, n the sequence's maskable tokens (not n * mask_p rounded);
    - spans: length Geometric(p) mod max_span (p = 1/3, max_span = 10; a length-0 draw masks nothing),
      start uniform in [-(len-1), S + len), covering [max(0, start), min(S - 1, start + len)) minus the
      special tokens; drawn while fewer than target tokens are covered, at most max_tries = 100 draws;
      the last span is kept whole, so the count may overshoot the target;
    - 80/10/10 decided per span; a token covered by several spans takes the decision of the last one.
    The target and span count ignore max_predictions: a sequence with more masked tokens than the [b,P]
    slots keeps them masked, its surplus predictions are dropped and counted (mask_counting_dropped, the
    batch's masked_dropped); PretrainingData's default slots hold every case (P = seq_length).
    Deviation: random replacements are never special tokens (elc-bert draws ids >= 5, so also id 5)."""

    name = "span"

    def __init__(self, mask_p=0.15, random_p=0.1, keep_p=0.1, p: float = 1 / 3, max_span: int = 10):
        super().__init__(mask_p, random_p, keep_p)
        if not 0 < p < 1 or max_span < 2:
            raise UserError(f"span masking needs 0 < p < 1 (got {p}) and max_span >= 2 (got {max_span})")
        self.p, self.max_span, self.max_tries = p, max_span, 100

    def n_units(self, seq_length):
        return max(seq_length, self.max_tries)

    def extra_uniforms(self):
        return 2 * self.max_tries + 1  # a length and a start per span draw, the binomial target

    def span_length_pmf(self) -> np.ndarray:
        """[max_span] probability of each drawn length 0..max_span-1 (Geometric(p) folded mod max_span)."""
        k = np.arange(1, 200 * self.max_span)
        return np.bincount(
            k % self.max_span, weights=(1 - self.p) ** (k - 1) * self.p, minlength=self.max_span
        )

    def span_lengths(self, u: np.ndarray) -> np.ndarray:
        """Uniforms in [0, 1) -> span lengths: inverse CDF of Geometric(p) on 1, 2, ..., mod max_span."""
        geometric = np.floor(np.log1p(-u) / np.log1p(-self.p)).astype(np.int64) + 1
        return geometric % self.max_span

    def binomial_targets(self, n: np.ndarray, u: np.ndarray) -> np.ndarray:
        """n [b] maskable counts, u [b] uniforms -> [b] Binomial(n, mask_p) draws (inverse CDF)."""
        K = int(n.max(initial=0)) + 1
        log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, K + 1)))])  # [K+1] log k!
        k = np.arange(K)[None, :]  # [1,K]
        nn = n[:, None]
        log_pmf = (
            log_fact[nn]
            - log_fact[k]
            - log_fact[np.maximum(nn - k, 0)]
            + k * np.log(self.mask_p)
            + (nn - k) * np.log1p(-self.mask_p)
        )  # [b,K]
        cdf = np.cumsum(np.where(k <= nn, np.exp(log_pmf), 0.0), axis=1)
        return np.minimum((cdf < u[:, None]).sum(1), n)  # rounding past the last cdf value: n

    def select(self, maskable, word_start, n_target, keys, extra):
        # n_target (the base class's rounded, capped count) is replaced by the binomial draw
        b, S = maskable.shape
        tries = self.max_tries
        targets = self.binomial_targets(maskable.sum(1), extra[:, 2 * tries]).tolist()
        lengths = self.span_lengths(extra[:, :tries])  # [b,T]
        offsets = np.floor(extra[:, tries : 2 * tries] * (S + 2 * lengths - 1)).astype(np.int64) - (
            lengths - 1
        )
        lo, hi = np.maximum(offsets, 0).tolist(), np.minimum(S - 1, offsets + lengths).tolist()
        rows, cols, units = [], [], []
        for row, free in enumerate(maskable.tolist()):  # plain lists: spans cover few tokens each
            unit_of: dict[int, int] = {}  # masked column -> the last span covering it
            for t in range(tries):
                if len(unit_of) >= targets[row]:
                    break
                for col in range(lo[row][t], hi[row][t]):
                    if free[col]:
                        unit_of[col] = t
            rows += [row] * len(unit_of)
            cols += list(unit_of)
            units += list(unit_of.values())
        selected = np.zeros((b, S), dtype=bool)
        unit = np.zeros((b, S), dtype=np.int64)
        selected[rows, cols] = True
        unit[rows, cols] = units
        return selected, unit

    def mask_counting_dropped(self, tokens, vocab, u, max_predictions: int):
        """As __call__, plus dropped [b]: masked tokens of each sequence beyond the max_predictions slots
        (masked in the input, not predicted)."""
        b, S = tokens.shape
        inputs, positions, labels = super().__call__(tokens, vocab, u, S)  # [b,S] slots: nothing cut
        dropped = (labels[:, max_predictions:] != -100).sum(1)
        pad = max(0, max_predictions - S)
        positions = np.pad(positions[:, :max_predictions], ((0, 0), (0, pad)))
        labels = np.pad(labels[:, :max_predictions], ((0, 0), (0, pad)), constant_values=-100)
        return inputs, positions, labels, dropped

    def __call__(self, tokens, vocab, u, max_predictions: int, n_target=None):
        # n_target is not used: the count is elc-bert's binomial draw (see select)
        return self.mask_counting_dropped(tokens, vocab, u, max_predictions)[:3]


STRATEGIES = {cls.name: cls for cls in (SubwordMasking, WholeWordMasking, SpanMasking)}


def build_masking(name: str, mask_p: float = 0.15, random_p: float = 0.1, keep_p: float = 0.1):
    """A strategy by name ("subword", "whole_word", "span"), e.g. from a --masking flag."""
    if name not in STRATEGIES:
        raise UserError(f"--masking {name!r} must be one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](mask_p=mask_p, random_p=random_p, keep_p=keep_p)
