"""SQuAD windows over long contexts (tokenizer offsets) and n-best span decoding back to context text."""

from dataclasses import dataclass

import numpy as np

from finetune.squad import SquadExample


@dataclass
class QAFeature:
    example_index: int  # which SquadExample this window belongs to
    input_ids: list  # [CLS] question [SEP] context window [SEP]
    token_type_ids: list  # 0 for [CLS] question [SEP], 1 for the window and its [SEP]
    context_start: int  # position of the window's first context token in input_ids
    offsets: np.ndarray  # [n_window, 2] character spans of the window's tokens in the context
    start_position: int  # gold answer tokens (first answer); 0 = [CLS] when it is not in this window
    end_position: int

    def __getitem__(self, key):  # collate() reads features as mappings
        return getattr(self, key)


def answer_token_span(offsets: np.ndarray, char_start: int, char_end: int) -> tuple[int, int]:
    """First and last context tokens overlapping the answer's characters [char_start, char_end)."""
    overlap = (offsets[:, 1] > char_start) & (offsets[:, 0] < char_end)
    hits = np.flatnonzero(overlap)
    return (int(hits[0]), int(hits[-1])) if len(hits) else (-1, -1)


def make_features(
    examples: list[SquadExample], tokenizer, special, max_seq_length=384, doc_stride=128, max_query_length=64
) -> list[QAFeature]:
    """Windows of at most max_seq_length tokens; consecutive windows start doc_stride context tokens
    apart (the original BERT run_squad.py meaning of doc_stride), so every token is in some window."""
    contexts = sorted({ex.context for ex in examples})
    encoded = dict(zip(contexts, tokenizer.encode_batch(contexts, add_special_tokens=False)))
    questions = tokenizer.encode_batch([ex.question for ex in examples], add_special_tokens=False)
    features = []
    for index, (ex, question) in enumerate(zip(examples, questions)):
        context = encoded[ex.context]
        ctx_ids, ctx_offsets = np.asarray(context.ids), np.asarray(context.offsets).reshape(-1, 2)
        q_ids = question.ids[:max_query_length]
        window = max_seq_length - len(q_ids) - 3  # [CLS] q [SEP] window [SEP]
        answer = ex.answers[0]
        a_start, a_end = answer_token_span(
            ctx_offsets, answer["answer_start"], answer["answer_start"] + len(answer["text"])
        )
        start = 0
        while True:
            length = min(len(ctx_ids) - start, window)
            prefix = [special.cls, *q_ids, special.sep]
            in_window = start <= a_start and a_end < start + length
            s, e = (a_start - start + len(prefix), a_end - start + len(prefix)) if in_window else (0, 0)
            features.append(
                QAFeature(
                    index,
                    prefix + ctx_ids[start : start + length].tolist() + [special.sep],
                    [0] * len(prefix) + [1] * (length + 1),
                    len(prefix),
                    ctx_offsets[start : start + length],
                    s,
                    e,
                )
            )
            if start + length >= len(ctx_ids):
                break
            start += min(length, doc_stride)
    return features


def best_span(feature: QAFeature, start_logits, end_logits, n_best: int, max_answer_length: int):
    """(score, char_start, char_end) of the best valid span in one window, or None."""
    n = len(feature.offsets)
    lo = feature.context_start
    starts_l, ends_l = np.asarray(start_logits[lo : lo + n]), np.asarray(end_logits[lo : lo + n])
    starts = np.argsort(-starts_l, kind="stable")[:n_best]
    ends = np.argsort(-ends_l, kind="stable")[:n_best]
    s, e = np.meshgrid(starts, ends, indexing="ij")  # [n_best, n_best] candidate pairs
    valid = (e >= s) & (e - s + 1 <= max_answer_length)
    if not valid.any():
        return None
    scores = np.where(valid, starts_l[s] + ends_l[e], -np.inf)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    return float(scores[i, j]), int(feature.offsets[s[i, j], 0]), int(feature.offsets[e[i, j], 1])


def decode_predictions(
    examples, features, start_logits, end_logits, n_best=20, max_answer_length=30
) -> dict[str, str]:
    """{question id: answer text}: the highest start+end logit span over all windows of a question."""
    best = {}
    for feature, sl, el in zip(features, start_logits, end_logits):
        span = best_span(feature, sl, el, n_best, max_answer_length)
        if span and (feature.example_index not in best or span[0] > best[feature.example_index][0]):
            best[feature.example_index] = span
    predictions = {}
    for index, ex in enumerate(examples):
        _, a, b = best.get(index, (None, 0, 0))
        predictions[ex.id] = ex.context[a:b]
    return predictions
