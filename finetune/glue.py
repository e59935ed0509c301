"""GLUE tasks from their standard TSV files (the layout of GLUE's download_glue_data.py)."""

from dataclasses import dataclass
from pathlib import Path

from utils.errors import UserError


@dataclass
class Example:
    id: str  # "<role>-<row>": train-17, dev-3, dev_mismatched-5 (whatever the file is called)
    texts: tuple  # one sentence or a sentence pair
    label: object  # int class index, float score (STS-B)


@dataclass(frozen=True)
class GlueTask:
    name: str
    text_columns: tuple  # header names, or column positions for header-less files (CoLA)
    label_column: object
    labels: tuple | None  # label strings in class-index order; None = regression
    metrics: tuple
    dev_files: tuple = ("dev.tsv",)  # the first is "test"; the others become "test_<suffix>"
    num_columns: int | None = None  # header-less files: the exact number of fields

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.labels else 1


NLI = ("entailment", "not_entailment")
GLUE_TASKS = {
    t.name: t
    for t in [
        GlueTask("cola", (3,), 1, ("0", "1"), ("matthews_correlation", "accuracy"), num_columns=4),
        GlueTask("sst2", ("sentence",), "label", ("0", "1"), ("accuracy",)),
        GlueTask("mrpc", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("f1", "accuracy")),
        GlueTask("qqp", ("question1", "question2"), "is_duplicate", ("0", "1"), ("f1", "accuracy")),
        GlueTask("stsb", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman")),
        GlueTask(
            "mnli",
            ("sentence1", "sentence2"),
            "gold_label",
            ("contradiction", "entailment", "neutral"),
            ("accuracy",),
            dev_files=("dev_matched.tsv", "dev_mismatched.tsv"),
        ),
        GlueTask("qnli", ("question", "sentence"), "label", NLI, ("accuracy",)),
        GlueTask("rte", ("sentence1", "sentence2"), "label", NLI, ("accuracy",)),
        GlueTask("wnli", ("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",)),
    ]
}


def extra_split_name(dev_file: str) -> str:
    """dev_mismatched.tsv -> test_mismatched: extra held-out evaluation sets keep their suffix."""
    stem = Path(dev_file).stem
    return "test" + stem[len("dev") :] if stem.startswith("dev_") else "test_" + stem


def read_glue_tsv(task: GlueTask, path: Path, role: str | None = None) -> list[Example]:
    """Every labelled row of a GLUE TSV, with ids "<role>-<row>" (role: default the file stem), so a
    subset file keeps the ids of the full one; the file is named in any error about it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: GLUE file not found (task {task.name})")
    with open(path, encoding="utf-8", newline="") as f:
        # GLUE TSVs are unquoted: split on tabs only (csv's quote handling mangles MNLI/QQP rows)
        rows = [line.rstrip("\r\n").split("\t") for line in f if line.strip()]
    if task.num_columns is None:
        if not rows:
            raise UserError(f"{path}: empty file, expected a header row")
        header, rows, first_line = rows[0], rows[1:], 2
        missing = [c for c in (*task.text_columns, task.label_column) if c not in header]
        if missing:
            raise UserError(f"{path}: missing column(s) {missing} for task {task.name} (header has {header})")
        text_idx = [header.index(c) for c in task.text_columns]
        label_idx, width = header.index(task.label_column), len(header)
    else:
        text_idx, label_idx, width, first_line = (
            list(task.text_columns),
            task.label_column,
            task.num_columns,
            1,
        )
    stem, examples = role or path.stem, []
    for row_number, row in enumerate(rows):
        where = f"{path}:{first_line + row_number}"
        if len(row) != width:
            raise UserError(f"{where}: expected {width} tab-separated fields for {task.name}, got {len(row)}")
        examples.append(
            Example(
                f"{stem}-{row_number}",
                tuple(row[i].strip() for i in text_idx),
                parse_label(task, row[label_idx], where),
            )
        )
    return examples


def parse_label(task: GlueTask, value: str, where: str):
    value = value.strip()
    if task.labels is None:
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{where}: label {value!r} is not a number (task {task.name})") from None
    if value not in task.labels:
        raise UserError(f"{where}: label {value!r} is not one of {list(task.labels)} (task {task.name})")
    return task.labels.index(value)


def task_file(name: str, data_dir, given=None, flag: str | None = None) -> Path:
    """`given` (the file that --train_file / --dev_file names), else DATA_DIR/name; neither: a UserError
    naming the flags."""
    if given:
        return Path(given)
    if data_dir is None:
        raise UserError(f"{f'{flag} or ' if flag else ''}--data_dir is required (to read {name})")
    return Path(data_dir) / name


def load_glue(task: GlueTask, data_dir: Path | None, train_file=None, dev_file=None):
    """(train, dev, extra): the labelled files; extra = {split name: examples} (MNLI mismatched)."""
    train = read_glue_tsv(task, task_file("train.tsv", data_dir, train_file, "--train_file"), "train")
    dev = read_glue_tsv(task, task_file(task.dev_files[0], data_dir, dev_file, "--dev_file"), "dev")
    extra = {extra_split_name(f): read_glue_tsv(task, task_file(f, data_dir)) for f in task.dev_files[1:]}
    return train, dev, extra
