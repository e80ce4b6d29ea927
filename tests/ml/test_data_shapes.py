"""ml.data task shapes: multi-label (separator, 0/1 columns), sentence pairs, text templates, normalization, tasks=."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from core.options import TrainConfig
from ml.config import IGNORE_INDEX, MIN_ROWS, TrainingDataError
from ml.data import (
    MULTI_LABEL_TASK,
    balanced_pos_weights,
    normalize_text,
    prepare_examples,
    resolve_class_weights,
    row_text,
    split_indices,
)

N = MIN_ROWS + 2


def _config(**fields):
    return TrainConfig(**fields)


def _raw(**fields):
    """A config object that skips TrainConfig's own checks (prepare_examples must not rely on them)."""
    base = {"family": "bert", "text_column": "text", "label_columns": ["label"], "multi_label": False,
            "label_separator": "|", "text_pair_column": None, "text_template": None, "text_normalization": "none"}
    return SimpleNamespace(**{**base, **fields})


# ---------------------------------------------------------------------------------------------- multi-label


def test_separator_cells_become_multi_hot_rows():
    cells = ["delay|food", "staff", "", " food | delay |", "billing", None] * 2
    rows = [{"text": f"text {i}", "tags": cell} for i, cell in enumerate(cells)]
    ex = prepare_examples(rows, _config(text_column="text", label_column="tags", multi_label=True))
    assert ex.multi_label and ex.tasks == {"tags": ["billing", "delay", "food", "staff"]}
    assert ex.labels["tags"][:6] == [[0, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert len(ex.texts) == 12 and ex.skipped["no_label"] == 0  # empty cells are kept as "no label applies"
    # another separator
    rows = [{"text": f"t{i}", "tags": "a;b" if i % 2 else "c"} for i in range(N)]
    ex = prepare_examples(rows, _config(text_column="text", label_column="tags", multi_label=True,
                                        label_separator=";"))
    assert ex.tasks == {"tags": ["a", "b", "c"]} and ex.labels["tags"][:2] == [[0, 0, 1], [1, 1, 0]]


def test_multi_label_needs_two_labels():
    rows = [{"text": f"t{i}", "tags": "only" if i % 2 else ""} for i in range(N)]
    with pytest.raises(TrainingDataError, match="only one label"):
        prepare_examples(rows, _config(text_column="text", label_column="tags", multi_label=True))


def test_zero_one_columns():
    values = [("1", "0", "yes"), ("0", "0", "no"), ("TRUE", "false", "0"), (1, 0, True), ("1.0", "0.0", "1")]
    rows = [{"text": f"t{i}", "a": a, "b": b, "c": c} for i, (a, b, c) in enumerate(values * 2)]
    rows[3]["b"] = "1"  # every label has a positive
    rows.append({"text": "unlabelled", "a": "", "b": None, "c": " "})
    config = _config(text_column="text", label_columns=["a", "b", "c"], multi_label=True)
    ex = prepare_examples(rows, config)
    assert ex.tasks == {MULTI_LABEL_TASK: ["a", "b", "c"]}  # column order, not sorted
    assert ex.labels[MULTI_LABEL_TASK][:5] == [[1, 0, 1], [0, 0, 0], [1, 0, 0], [1, 1, 1], [1, 0, 1]]
    assert ex.skipped["no_label"] == 1 and len(ex.texts) == 10


@pytest.mark.parametrize("cell", ["2", "maybe", "0.5", "-1", "yes please"])
def test_bad_zero_one_cell_is_named(cell):
    rows = [{"text": f"t{i}", "a": "1", "b": "0" if i % 2 else "1"} for i in range(N)]
    rows[4]["b"] = cell
    with pytest.raises(TrainingDataError, match=r"row 5, column 'b'.*not a 0/1"):
        prepare_examples(rows, _config(text_column="text", label_columns=["a", "b"], multi_label=True))


def test_zero_one_partly_empty_row_and_never_positive_label():
    rows = [{"text": f"t{i}", "a": "1", "b": "0" if i % 2 else "1"} for i in range(N)]
    config = _config(text_column="text", label_columns=["a", "b"], multi_label=True)
    rows[2]["b"] = ""
    with pytest.raises(TrainingDataError, match=r"row 3, column 'b' is empty"):
        prepare_examples(rows, config)
    rows = [{"text": f"t{i}", "a": "1", "b": "0"} for i in range(N)]
    with pytest.raises(TrainingDataError, match="'b'.*no row marked 1"):
        prepare_examples(rows, config)


def test_multi_label_refused_for_multitask():
    with pytest.raises(ValidationError, match="multi_label"):
        TrainConfig(family="multitask", text_column="text", label_columns=["a", "b"], multi_label=True)
    rows = [{"text": "t", "a": "x", "b": "y"}] * N
    with pytest.raises(TrainingDataError, match="multitask keeps single-label"):
        prepare_examples(rows, _raw(family="multitask", label_columns=["a", "b"], multi_label=True))


def test_multi_label_split_and_balanced_pos_weight():
    targets = [[1, 0], [0, 1], [1, 1], [0, 0]] * 5
    train, val, stratified = split_indices(targets, 0.25, seed=1)
    assert not stratified and sorted(train + val) == list(range(20)) and len(val) == 5
    assert split_indices(targets, 0.25, seed=1) == (train, val, stratified)  # seeded
    assert balanced_pos_weights([[1, 0], [1, 0], [0, 1], [1, 0]], 2) == [round(1 / 3, 6), 3.0]
    # a label on every row has no negatives: weight 1, not 0 (0 would switch its positive term off)
    assert balanced_pos_weights([[1, 0], [1, 1]], 2) == [1.0, 1.0]
    weights = resolve_class_weights("balanced", {"tags": ["a", "b"]}, {"tags": [[1, 0], [1, 0], [0, 1], [1, 0]]})
    assert weights == {"tags": [round(1 / 3, 6), 3.0]}


# ---------------------------------------------------------------------------------------------- pairs


def test_pairs_are_kept_aligned_and_empty_pairs_skipped():
    rows = [{"q": f"question {i}", "a": "" if i == 3 else f"answer {i}", "label": "yes" if i % 2 else "no"}
            for i in range(N + 1)]
    ex = prepare_examples(rows, _config(text_column="q", text_pair_column="a", label_column="label"))
    assert ex.skipped["empty_pair"] == 1 and len(ex.texts) == len(ex.pairs) == N
    assert all(t.replace("question", "answer") == p for t, p in zip(ex.texts, ex.pairs))
    assert "question 3" not in ex.texts
    with pytest.raises(TrainingDataError, match="column 'nope' not found"):
        prepare_examples(rows, _config(text_column="q", text_pair_column="nope", label_column="label"))
    assert prepare_examples(rows, _config(text_column="q", label_column="label")).pairs is None


# ---------------------------------------------------------------------------------------------- templates


def test_template_builds_the_text():
    rows = [{"speaker": f"S{i % 3}", "text": f"line {i}", "label": "a" if i % 2 else "b"} for i in range(N)]
    rows.append({"speaker": None, "text": None, "label": "a"})  # all template cells empty: no text
    rows.append({"speaker": "S9", "text": None, "label": "a"})  # partly empty: kept
    ex = prepare_examples(rows, _config(text_template="{speaker}: {text} {{literal}}", label_column="label"))
    assert ex.texts[0] == "S0: line 0 {literal}" and ex.texts[-1] == "S9:  {literal}"
    assert ex.skipped["empty_text"] == 1


def test_row_text_is_the_one_rule_for_training_evaluation_and_classification():
    assert row_text({"text": "hi", "x": "1"}, "text") == "hi"
    assert row_text({"x": "1"}, "text") == "" and row_text({"text": None}, "text") == ""
    assert row_text({"a": "1", "b": None}, None, "{a}/{b}") == "1/"
    assert row_text({"a": " ", "b": None}, None, "[{a}] {b}") == ""  # every template cell empty: no text


def test_template_naming_a_missing_column():
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(N)]
    with pytest.raises(TrainingDataError, match="'speaker'.*does not have"):
        prepare_examples(rows, _config(text_template="{speaker}: {text}", label_column="label"))


@pytest.mark.parametrize("template", [
    "{text.__class__}", "{text[0]}", "{text!r}", "{text:>99999}", "{0}", "{}", "{text.__init__.__globals__}",
    "no fields", "{text", "}{",
])
def test_hostile_templates_are_refused(template):
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(N)]
    with pytest.raises(ValidationError):
        TrainConfig(text_template=template, label_column="label")
    with pytest.raises(TrainingDataError):  # prepare_examples checks again on its own
        prepare_examples(rows, _raw(text_column=None, text_template=template))


# ---------------------------------------------------------------------------------------------- normalization


def test_social_normalization():
    assert normalize_text("@united my bag!! https://t.co/x1 see http://a.b @ me a@b.c", "social") == (
        "@user my bag!! http see http @ me a@b.c"
    )
    assert normalize_text("@united x", "none") == "@united x"
    assert normalize_text(normalize_text("@a http://x", "social"), "social") == "@user http"  # idempotent
    rows = [{"text": f"@airline{i} late https://t.co/{i}", "q": f"@x{i}", "label": "a" if i % 2 else "b"}
            for i in range(N)]
    ex = prepare_examples(rows, _config(text_column="text", text_pair_column="q", label_column="label",
                                        text_normalization="social"))
    assert set(ex.texts) == {"@user late http"} and set(ex.pairs) == {"@user"}


# ---------------------------------------------------------------------------------------------- tasks=


def test_validation_rows_use_the_training_label_ids():
    config = _config(text_column="text", label_column="label")
    train = prepare_examples([{"text": f"t{i}", "label": "abc"[i % 3]} for i in range(N)], config)
    assert train.tasks == {"label": ["a", "b", "c"]}
    # a small validation set with only some of the labels: ids follow the training label set
    val = prepare_examples([{"text": "v", "label": "c"}, {"text": "w", "label": "b"}], config, tasks=train.tasks)
    assert val.tasks == train.tasks and val.labels["label"] == [2, 1]
    with pytest.raises(TrainingDataError, match="'d', 'e'"):
        prepare_examples([{"text": "v", "label": "d"}, {"text": "w", "label": "e"}, {"text": "x", "label": "a"}],
                         config, tasks=train.tasks)
    with pytest.raises(TrainingDataError, match="no usable row"):
        prepare_examples([{"text": "", "label": "a"}], config, tasks=train.tasks)


def test_validation_rows_multi_label_and_multitask():
    ml_config = _config(text_column="text", label_column="tags", multi_label=True)
    tasks = {"tags": ["billing", "delay", "food"]}
    val = prepare_examples([{"text": "v", "tags": "food"}, {"text": "w", "tags": ""}], ml_config, tasks=tasks)
    assert val.labels["tags"] == [[0, 0, 1], [0, 0, 0]]
    with pytest.raises(TrainingDataError, match="'wifi'"):
        prepare_examples([{"text": "v", "tags": "food|wifi"}], ml_config, tasks=tasks)
    flags = _config(text_column="text", label_columns=["b", "a"], multi_label=True)
    val = prepare_examples([{"text": "v", "a": "1", "b": "0"}], flags, tasks={MULTI_LABEL_TASK: ["a", "b"]})
    assert val.labels[MULTI_LABEL_TASK] == [[1, 0]]  # reordered to the model's label order
    mt = _config(family="multitask", text_column="text", label_columns=["s", "t"])
    val = prepare_examples([{"text": "v", "s": "pos", "t": ""}], mt, tasks={"s": ["neg", "pos"], "t": ["x", "y"]})
    assert val.labels == {"s": [1], "t": [IGNORE_INDEX]}
    with pytest.raises(TrainingDataError, match="has 's'"):
        prepare_examples([{"text": "v", "s": "pos", "t": "x"}], mt, tasks={"s": ["neg", "pos"]})
