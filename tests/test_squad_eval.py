"""SQuAD v1.1: official normalisation and EM/F1 on crafted predictions; windows and span decoding."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from finetune.squad import SquadExample, evaluate, normalize_answer, read_squad, score_question
from finetune.squad_features import decode_predictions, make_features
from utils.errors import UserError


def test_official_normalisation():
    assert normalize_answer("The  Quick, Brown\tfox!") == "quick brown fox"  # case, punctuation, space
    assert normalize_answer("an apple a day") == "apple day"  # articles are whole words only...
    assert normalize_answer("Theatre anthem") == "theatre anthem"  # ...not prefixes
    assert normalize_answer("U.S.") == "us"  # punctuation is deleted, not replaced by space
    assert normalize_answer("the") == "" and normalize_answer("") == ""


def test_em_f1_crafted_predictions():
    assert score_question("the Denver Broncos", ["Denver Broncos"]) == (1.0, 1.0)
    # several gold answers: the best EM and the best F1 may come from different answers
    em, f1 = score_question("Denver", ["Denver Broncos", "the Broncos team", "Broncos"])
    assert em == 0.0 and f1 == pytest.approx(2 * 1 * 0.5 / 1.5)
    em, f1 = score_question("Broncos of Denver", ["Denver Broncos", "Broncos"])
    assert em == 0.0 and f1 == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert score_question("", ["Denver"]) == (0.0, 0.0)  # an empty answer scores nothing
    assert score_question("a", ["the"]) == (1.0, 0.0)  # both normalise to "": EM 1, F1 0 (as the script)
    # repeated tokens count with multiplicity (Counter intersection)
    assert score_question("New New York", ["New York"])[1] == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    examples = [
        SquadExample(q, "t", "c", "q?", [{"text": a, "answer_start": 0}])
        for q, a in [("1", "x"), ("2", "y z")]
    ]
    # question 2 unanswered: it scores 0 but still counts in the denominator
    assert evaluate(examples, {"1": "X."}) == {"exact_match": 50.0, "f1": 50.0}
    assert evaluate(examples, {"1": "x", "2": "z"}) == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2}
    )


def test_squad_json_errors(tmp_path):
    good = {
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "ab cd",
                        "qas": [
                            {"id": "q1", "question": "?", "answers": [{"text": "cd", "answer_start": 3}]}
                        ],
                    }
                ],
            }
        ]
    }
    (tmp_path / "ok.json").write_text(json.dumps(good))
    assert read_squad(tmp_path / "ok.json")[0].answers[0]["text"] == "cd"
    del good["data"][0]["paragraphs"][0]["qas"][0]["id"]
    (tmp_path / "bad.json").write_text(json.dumps(good))
    with pytest.raises(
        UserError, match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] is missing the field 'id'"
    ):
        read_squad(tmp_path / "bad.json")
    (tmp_path / "nodata.json").write_text(json.dumps({"version": "1.1"}))
    with pytest.raises(UserError, match="missing the field 'data'"):
        read_squad(tmp_path / "nodata.json")
    good["data"][0]["paragraphs"][0]["qas"][0].update(id="q1", answers=[{"text": "cd", "answer_start": 2}])
    (tmp_path / "off.json").write_text(json.dumps(good))
    with pytest.raises(UserError, match="does not match the context"):
        read_squad(tmp_path / "off.json")


@pytest.fixture
def word_tokenizer():
    """Word-level tokenizer (lower-casing, so offsets must map back to the original-cased text)."""
    words = "[PAD] [UNK] [CLS] [SEP] [MASK] w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 what is the answer ? , .".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok, SimpleNamespace(pad=0, unk=1, cls=2, sep=3, mask=4)


def test_windows_cover_the_context_and_locate_the_answer(word_tokenizer):
    tok, special = word_tokenizer
    words = [f"W{i % 10}" for i in range(40)]
    context = " ".join(words[:30]) + ", ANSWER here. " + " ".join(words[30:])
    start = context.index("ANSWER")
    ex = SquadExample(
        "q", "t", context, "what is the answer?", [{"text": "ANSWER here", "answer_start": start}]
    )
    features = make_features([ex], tok, special, max_seq_length=20, doc_stride=6, max_query_length=3)
    n_context_tokens = len(tok.encode(context, add_special_tokens=False).ids)
    covered = set()
    for f in features:
        assert len(f.input_ids) <= 20 and len(f.input_ids) == len(f.token_type_ids)
        assert f.input_ids[0] == special.cls and f.input_ids[-1] == special.sep
        assert (
            f.input_ids[f.context_start - 1] == special.sep and f.context_start == 1 + 3 + 1
        )  # query cut to 3
        covered |= {(int(a), int(b)) for a, b in f.offsets}
    assert len(covered) == n_context_tokens  # every context token is in some window
    starts = [f.offsets[0, 0] for f in features]
    assert all(b - a > 0 for a, b in zip(starts, starts[1:]))
    with_answer = [f for f in features if f.start_position > 0]
    assert with_answer and len(with_answer) < len(features)  # windows without the answer point at [CLS]
    for f in with_answer:
        a, b = (
            f.offsets[f.start_position - f.context_start, 0],
            f.offsets[f.end_position - f.context_start, 1],
        )
        assert context[a:b] == "ANSWER here"  # original case, from the offsets

    # decoding: peaked logits at the gold span give its text; spans longer than the limit are refused
    def logits(f, s, e, bonus=5.0):
        sl, el = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
        sl[s], el[e] = bonus, bonus
        return sl, el

    sl, el = zip(
        *[
            logits(f, f.start_position, f.end_position) if f.start_position else logits(f, 0, 0)
            for f in features
        ]
    )
    assert decode_predictions([ex], features, sl, el) == {"q": "ANSWER here"}
    f0 = features[0]
    sl0, el0 = logits(f0, f0.context_start, f0.context_start + 5, bonus=50.0)
    preds = decode_predictions([ex], features[:1], [sl0], [el0], max_answer_length=6)
    assert preds["q"] == context[f0.offsets[0, 0] : f0.offsets[5, 1]]
    preds = decode_predictions([ex], features[:1], [sl0], [el0], max_answer_length=5)
    assert len(preds["q"].split()) <= 5
