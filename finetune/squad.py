"""SQuAD v1.1: reading the official JSON, and the official exact-match / F1 (evaluate-v1.1.py)."""

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError


@dataclass
class SquadExample:
    id: str
    title: str  # the article: splits keep an article's questions together
    context: str
    question: str
    answers: list  # [{"text": str, "answer_start": int}, ...]

    @property
    def texts(self) -> tuple:  # the de-duplication key (exact text), as GLUE's Example.texts
        return (self.context, self.question)


def _field(obj, key, kind, where, path):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{path}: {where} is missing the field {key!r}")
    if not isinstance(obj[key], kind):
        raise UserError(f"{path}: {where}.{key} should be a {kind.__name__}, got {type(obj[key]).__name__}")
    return obj[key]


def read_squad(path: Path) -> list[SquadExample]:
    """Every question of a SQuAD v1.1 file; missing fields or answers outside the context are errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: SQuAD file not found")
    try:
        dataset = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    examples = []
    for a, article in enumerate(_field(dataset, "data", list, "the top level", path)):
        title = article.get("title", f"article-{a}") if isinstance(article, dict) else None
        for p, paragraph in enumerate(_field(article, "paragraphs", list, f"data[{a}]", path)):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, where, path)
            for q, qa in enumerate(_field(paragraph, "qas", list, where, path)):
                qwhere = f"{where}.qas[{q}]"
                answers = _field(qa, "answers", list, qwhere, path)
                if not answers:
                    raise UserError(f"{path}: {qwhere} has no answers (SQuAD v1.1 questions all have one)")
                for i, answer in enumerate(answers):
                    text = _field(answer, "text", str, f"{qwhere}.answers[{i}]", path)
                    start = _field(answer, "answer_start", int, f"{qwhere}.answers[{i}]", path)
                    if context[start : start + len(text)] != text:
                        raise UserError(
                            f"{path}: {qwhere}.answers[{i}] does not match the context at {start}"
                        )
                qid = _field(qa, "id", str, qwhere, path)
                examples.append(
                    SquadExample(qid, title, context, _field(qa, "question", str, qwhere, path), answers)
                )
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
        raise UserError(f"{path}: question ids are not unique")
    return examples


# --- the official v1.1 evaluation (same normalisation and per-question max over the gold answers) ---


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    num_same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision, recall = num_same / len(pred_tokens), num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def score_question(prediction: str, gold_answers: list[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction: the best over the gold answers, in [0, 1]."""
    return (
        max(exact_match_score(prediction, g) for g in gold_answers),
        max(f1_score(prediction, g) for g in gold_answers),
    )


def evaluate(examples: list[SquadExample], predictions: dict[str, str]) -> dict:
    """{"exact_match", "f1"} in percent over all questions; an unanswered question scores 0."""
    em = f1 = 0.0
    for ex in examples:
        if ex.id in predictions:
            e, f = score_question(predictions[ex.id], [a["text"] for a in ex.answers])
            em, f1 = em + e, f1 + f
    n = max(len(examples), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}
