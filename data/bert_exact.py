"""The "bert_exact" instance layout: google-research/bert's create_pretraining_data.py (commit eedf571)
seed for seed. Our own code (none of the reference's): it makes the reference's random draws from
Python's own random.Random(seed), in the reference's order, so that data seed s gives THE SAME instances
as the reference run with --random_seed s under Python 3 (same pairs, truncation, masked positions,
replacement ids and final order) on the same tokenised documents. Python 2's shuffle draws differently.

The draws, in order (all from one random.Random(data_seed)):
- shuffle the documents (corpus order, empty documents and empty sentences dropped);
- for each dupe copy, for each document (shuffled order): random() < short_p, then randint(2,
  seq_length - 3) for a short target; per chunk (closed at the target or the document's end):
  randint(1, n - 1) only for n >= 2 sentences, random() < 0.5 only for n >= 2 (a one-sentence chunk is
  random-next without a draw); a random next draws randint over the documents (up to 10 times until
  another than this one) and randint over its sentences, and puts the chunk's unused sentences back;
- truncate_seq_pair: one random() per removed token (front if < 0.5), the longer side (B on ties);
- masks: shuffle the candidates (every position but [CLS]/[SEP]; whole words: a "##" piece joins the
  candidate before it, also across [SEP]), take them while they fit in min(max_predictions, max(1,
  round(mask_p * length))) tokens, and per token random() < 0.8 -> [MASK], else random() < 0.5 -> kept,
  else randint(0, vocab_size - 1) (vocab_words = the vocabulary in id order);
- shuffle all instances: the fixed order every pass visits them in.
A sequential Python pass (about 12 s per 100k instances, one core: 3 s for the 3 Gutenberg dev books
at length 128 and dupe 10, the bert layout 0.24 s; a 100M-sentence corpus would take hours), so meant
for corpora where that is affordable; the vectorised "bert" layout draws the same distribution.
"""

import random

import numpy as np

from data.masking import WholeWordMasking

RANDOM_DOCUMENT_TRIES = 10  # the reference's "for _ in range(10)"


def mask_decision_probabilities(random_p: float, keep_p: float) -> tuple[float, float]:
    """(p of [MASK], share of the rest kept): the reference's literal 0.8 and 0.5 at 10%/10%."""
    rest = random_p + keep_p
    return 1.0 - random_p - keep_p, (keep_p / rest if rest > 0 else 1.0)


def exact_masks(rng, ids, is_piece, specials, rule):
    """One instance's create_masked_lm_predictions draws. ids: the instance's token ids ([CLS] A [SEP] B
    [SEP]), is_piece [vocab] bool ("##" pieces), specials (cls, sep), rule (mask_p, max_predictions,
    whole_word, p of [MASK], kept share, vocab size) -> (sorted positions, placed ids; -1: [MASK])."""
    mask_p, max_predictions, whole_word, p_mask, keep_share, V = rule
    candidates, (cls_id, sep_id) = [], specials
    for i, token in enumerate(ids):
        if token == cls_id or token == sep_id:
            continue  # the reference skips them by name, also inside the text
        if whole_word and candidates and is_piece[ids[i]]:
            candidates[-1].append(i)
        else:
            candidates.append([i])
    rng.shuffle(candidates)
    n_predict = min(max_predictions, max(1, int(round(len(ids) * mask_p))))
    masked = {}  # position -> placed id
    for group in candidates:
        if len(masked) >= n_predict:
            break
        if len(masked) + len(group) > n_predict:
            continue  # groups never overlap here, so the reference's covered check never fires
        for i in group:
            if rng.random() < p_mask:
                masked[i] = -1  # [MASK], filled in by the caller
            elif rng.random() < keep_share:
                masked[i] = int(ids[i])
            else:
                masked[i] = rng.randint(0, V - 1)
    positions = sorted(masked)
    return positions, [masked[i] for i in positions]


def bert_exact_layout(
    offsets,
    doc_bounds,
    tokens,
    is_piece,
    special_ids,
    max_tokens: int,
    short_p: float,
    masking,
    max_predictions: int,
    data_seed: int,
    dupe_factor: int,
) -> dict:
    """offsets [n_sent + 1] token offsets of the sentences, doc_bounds [n_doc + 1] sentence offsets of
    the documents, tokens [n_tokens] the corpus, is_piece [vocab] bool, special_ids (cls, sep, mask),
    masking: its mask_p, random_p, keep_p and whether it masks whole words -> the arrays of the bert
    layout ("sentences" [n, 4], "is_random_next", "target", "copy", "order") plus "front" [n, 2] tokens
    cut from the front of A and B, "mask_positions" [n, P] (sorted, -1 padded) and "mask_ids" [n, P]
    the id placed there. Instance index = creation order (copy, shuffled document, chunk)."""
    cls_id, sep_id, mask_id = special_ids
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets).tolist()
    bounds = np.asarray(doc_bounds, dtype=np.int64).tolist()
    # all_documents: lists of (non-empty) sentence indices, corpus order, empty documents dropped
    documents = [[j for j in range(a, b) if lengths[j]] for a, b in zip(bounds[:-1], bounds[1:])]
    documents = [d for d in documents if d]
    rng = random.Random(data_seed)
    rng.shuffle(documents)
    whole_word, V = isinstance(masking, WholeWordMasking), len(is_piece)
    p_mask, keep_share = mask_decision_probabilities(masking.random_p, masking.keep_p)
    is_piece = np.asarray(is_piece, dtype=bool).tolist()
    D, P = len(documents), max_predictions
    mask_rule = (masking.mask_p, P, whole_word, p_mask, keep_share, V)
    rows, fronts, copies, mask_pos, mask_ids = [], [], [], [], []
    for copy in range(dupe_factor):
        for d in range(D):
            document = documents[d]
            target = max_tokens
            if rng.random() < short_p:
                target = rng.randint(2, max_tokens)
            chunk_first, chunk_len, i = 0, 0, 0
            while i < len(document):
                chunk_len += lengths[document[i]]
                if i == len(document) - 1 or chunk_len >= target:
                    n = i + 1 - chunk_first
                    a_end = rng.randint(1, n - 1) if n >= 2 else 1
                    a = document[chunk_first : chunk_first + a_end]
                    len_a = sum(lengths[j] for j in a)
                    if n == 1 or rng.random() < 0.5:
                        is_random = True
                        for _ in range(RANDOM_DOCUMENT_TRIES):
                            r = rng.randint(0, D - 1)
                            if r != d:
                                break
                        other = documents[r]
                        start = rng.randint(0, len(other) - 1)
                        len_b, k = 0, start
                        while k < len(other):  # sentences until they hold target - len(A) tokens
                            len_b += lengths[other[k]]
                            k += 1
                            if len_b >= target - len_a:
                                break
                        b = other[start:k]
                        i = chunk_first + a_end - 1  # put the unused sentences back
                    else:
                        is_random = False
                        b = document[chunk_first + a_end : i + 1]
                        len_b = chunk_len - len_a
                    front_a = front_b = 0
                    while len_a + len_b > max_tokens:  # truncate_seq_pair
                        front = rng.random() < 0.5
                        if len_a > len_b:
                            len_a, front_a = len_a - 1, front_a + front
                        else:
                            len_b, front_b = len_b - 1, front_b + front
                    a_start, b_start = offsets[a[0]] + front_a, offsets[b[0]] + front_b
                    a_ids, b_ids = tokens[a_start : a_start + len_a], tokens[b_start : b_start + len_b]
                    ids = [cls_id, *a_ids.tolist(), sep_id, *b_ids.tolist(), sep_id]
                    pos, placed = exact_masks(rng, ids, is_piece, (cls_id, sep_id), mask_rule)
                    rows.append((a[0], a[-1] + 1, b[0], b[-1] + 1, is_random, target))
                    fronts.append((front_a, front_b))
                    copies.append(copy)
                    mask_pos.append(pos + [-1] * (P - len(pos)))
                    mask_ids.append([mask_id if t < 0 else t for t in placed] + [-1] * (P - len(pos)))
                    chunk_first, chunk_len = i + 1, 0
                i += 1
    n = len(rows)
    order = list(range(n))
    rng.shuffle(order)  # the reference's rng.shuffle(instances): file position -> instance
    table = np.array(rows, dtype=np.int64).reshape(n, 6)
    index_type = np.int32 if len(offsets) < 2**31 else np.int64
    return {
        "sentences": table[:, :4].astype(index_type),
        "is_random_next": table[:, 4].astype(bool),
        "target": table[:, 5].astype(np.int16 if max_tokens < 2**15 else np.int32),
        "copy": np.array(copies, dtype=np.int16),
        "order": np.array(order, dtype=np.int32 if n < 2**31 else np.int64),
        "front": np.array(fronts, dtype=np.int32).reshape(n, 2),
        "mask_positions": np.array(mask_pos, dtype=np.int16 if max_tokens < 2**15 else np.int32).reshape(
            n, P
        ),
        "mask_ids": np.array(mask_ids, dtype=np.int32).reshape(n, P),
    }


def cached_exact_layout(data, folder, options: dict) -> dict:
    """The bert_exact layout of PretrainingData `data`, cached (data.bert_layout.cached_layout) under
    the bert layout's options plus this layout's own (its masks are part of it)."""
    from data.bert_layout import cached_layout

    is_piece = np.zeros(data.corpus.vocab_size, dtype=bool)  # the reference's rule: the "##" prefix
    for token, i in data.corpus.tokenizer().get_vocab().items():
        is_piece[i] = token.startswith("##")
    m, ids = data.masking, data.ids
    options = {**options, "layout": "bert_exact", "masking": repr(m), "max_predictions": data.max_predictions}
    specials = (ids.cls, ids.sep, ids.mask)
    args = (data.offsets, data.corpus.document_offsets, data.corpus.tokens, is_piece, specials)
    rest = (data.max_tokens, data.short_p, m, data.max_predictions, data.data_seed, data.dupe_factor)
    return cached_layout(folder, options, lambda: bert_exact_layout(*args, *rest))


def apply_stored_masks(tokens, positions, placed):
    """tokens [b,S], positions [b,P] (-1 padded), placed [b,P] -> inputs [b,S], positions [b,P] (pad 0),
    labels [b,P] (the original tokens; pad -100), as data.masking's strategies return them."""
    positions = np.asarray(positions, dtype=np.int64)
    valid = positions >= 0
    at = np.where(valid, positions, 0)
    rows = np.broadcast_to(np.arange(len(tokens))[:, None], at.shape)
    inputs = tokens.copy()
    inputs[rows[valid], at[valid]] = np.asarray(placed, dtype=np.int64)[valid]
    labels = np.where(valid, np.take_along_axis(tokens, at, axis=1), -100)
    return inputs, at, labels
