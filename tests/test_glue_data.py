"""GLUE metrics against hand-computed values; GLUE TSV readers on tiny files and on real SST-2."""

import math

import numpy as np
import pytest

from finetune import metrics
from finetune.glue import GLUE_TASKS, load_glue, read_glue_tsv
from utils.errors import UserError


def test_accuracy_f1_matthews_by_hand():
    labels, preds = [1, 1, 0, 0, 1], [1, 0, 1, 0, 1]  # tp=2 fp=1 fn=1 tn=1
    assert metrics.accuracy(labels, preds) == pytest.approx(3 / 5)
    assert metrics.f1_binary(labels, preds) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert metrics.matthews_corrcoef(labels, preds) == pytest.approx(
        (2 * 1 - 1 * 1) / math.sqrt(3 * 3 * 2 * 2)
    )
    # three classes (Gorodkin): c=4 s=6 t=(2,2,2) p=(2,3,1) -> (24-12)/sqrt((36-14)(36-12))
    assert metrics.matthews_corrcoef([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]) == pytest.approx(
        12 / math.sqrt(22 * 24)
    )
    # degenerate cases follow sklearn: no positives -> F1 0, constant predictions -> MCC 0
    assert metrics.f1_binary([0, 0, 1], [0, 0, 0]) == 0.0
    assert metrics.matthews_corrcoef([0, 1, 1], [1, 1, 1]) == 0.0
    assert metrics.matthews_corrcoef([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)


def test_pearson_spearman_by_hand():
    # dx=(-1.5,-.5,.5,1.5) dy=(-3,-1,0,4): 11 / sqrt(5 * 26)
    assert metrics.pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130))
    np.testing.assert_allclose(metrics.rankdata([10, 20, 10, 30, 20, 20]), [1.5, 4, 1.5, 6, 4, 4])
    # ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5)
    assert metrics.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert metrics.spearman([1, 5, 7], [0.1, 0.2, 100]) == pytest.approx(1.0)  # monotone, not linear
    assert math.isnan(metrics.pearson([1, 1, 1], [1, 2, 3]))


GLUE_ROWS = {  # (header or None, one row) in the layout of GLUE's download_glue_data.py
    "cola": (None, ["gj04", "1", "", "Our friends won't buy this analysis."]),
    "sst2": (["sentence", "label"], ["a charming journey ", "1"]),
    "mrpc": (["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["1", "7", "8", "A said.", "A told."]),
    "qqp": (
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        ["0", "1", "2", "Why?", "How?", "0"],
    ),
    "stsb": (
        [
            "index",
            "genre",
            "filename",
            "year",
            "old_index",
            "source1",
            "source2",
            "sentence1",
            "sentence2",
            "score",
        ],
        ["0", "main", "f", "2012", "1", "s", "s", "A plane.", "An air plane.", "5.000"],
    ),
    "mnli": (
        ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"],
        ["0", "1", "1e", "gov", "He ran.", "He moved.", "entailment", "entailment"],
    ),
    "qnli": (["index", "question", "sentence", "label"], ["0", "Who?", "Me.", "not_entailment"]),
    "rte": (["index", "sentence1", "sentence2", "label"], ["0", "A b.", "A.", "entailment"]),
    "wnli": (["index", "sentence1", "sentence2", "label"], ["0", "I saw it.", "It saw.", "0"]),
}


def write_tsv(path, header, rows):
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(r) + "\n" for r in lines), encoding="utf-8")


@pytest.mark.parametrize("name", sorted(GLUE_ROWS))
def test_every_glue_task_reads_its_layout(tmp_path, name):
    task, (header, row) = GLUE_TASKS[name], GLUE_ROWS[name]
    for f in ("train.tsv", *task.dev_files):
        write_tsv(tmp_path / f, header, [row, row])
    train, dev, extra = load_glue(task, tmp_path)
    assert len(train) == 2 and len(dev) == 2 and train[1].id == "train-1"
    assert list(extra) == (["test_mismatched"] if name == "mnli" else [])
    expected_label = {"cola": 1, "sst2": 1, "mrpc": 1, "qqp": 0, "stsb": 5.0, "mnli": 1, "qnli": 1, "rte": 0}
    assert train[0].label == expected_label.get(name, 0)
    assert len(train[0].texts) == (1 if name in ("cola", "sst2") else 2)
    assert all(t and t == t.strip() for t in train[0].texts)


def test_bad_tsv_names_the_file_and_problem(tmp_path):
    task = GLUE_TASKS["sst2"]
    write_tsv(tmp_path / "a.tsv", ["text", "label"], [["x", "1"]])
    with pytest.raises(UserError, match=r"a\.tsv: missing column\(s\) \['sentence'\]"):
        read_glue_tsv(task, tmp_path / "a.tsv")
    write_tsv(tmp_path / "b.tsv", ["sentence", "label"], [["x", "1"], ["y"]])
    with pytest.raises(UserError, match=r"b\.tsv:3: expected 2 tab-separated fields"):
        read_glue_tsv(task, tmp_path / "b.tsv")
    write_tsv(tmp_path / "c.tsv", ["sentence", "label"], [["x", "positive"]])
    with pytest.raises(UserError, match=r"c\.tsv:2: label 'positive' is not one of"):
        read_glue_tsv(task, tmp_path / "c.tsv")
    with pytest.raises(UserError, match="not found"):
        read_glue_tsv(task, tmp_path / "missing.tsv")


def test_real_sst2_counts(data_root):
    train, dev, _ = load_glue(GLUE_TASKS["sst2"], data_root / "sst2")
    assert (len(train), len(dev)) == (67349, 872)  # the counts of data/sst2/SOURCE.txt
    assert sum(ex.label for ex in train) == 37569 and sum(ex.label for ex in dev) == 444
