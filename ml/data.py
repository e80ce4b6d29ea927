"""Rows -> training examples: texts (templates, pairs, normalization), label ids, the split, class weights. No torch.

1. **Rows -> examples** (:func:`prepare_examples`). The text is ``text_column``'s cell, or ``text_template``
   filled with the row's cells (:func:`render_template`); with ``text_normalization="social"`` user handles and
   links are normalised (:func:`normalize_text`). Rows with empty text (or, with ``text_pair_column``, an empty
   pair text) are skipped and counted. Labels, by task shape:

   * single-label (``bert``, ``distilbert``, ``bert_lstm``): one column; rows with an empty label are skipped.
   * multitask: one task per column; an empty label becomes ``-100`` for that task (the row still trains the other
     tasks); rows with no label at all are skipped.
   * multi-label, one column: the cell holds labels joined by ``label_separator``; the task is named after the
     column. An **empty cell is kept as an all-zero target** ("none of the labels applies"): in multi-label data
     that is an answer, not a missing one, and dropping such rows would teach the model that some label always
     applies.
   * multi-label, several ``label_columns``: one 0/1 column per label (label = column name, in the given order),
     also ``true/false`` and ``yes/no``; the task is named ``"labels"``. A row whose label cells are all empty is
     skipped; any other cell that is not one of those values is a :class:`TrainingDataError` naming it.

   Single-label tasks' labels are sorted (deterministic ids). Every task needs >= 2 labels and the data
   >= ``MIN_ROWS`` usable rows, else :class:`TrainingDataError` (message meant for the user). With ``tasks=``
   (a separate validation set) those label ids are used instead, and labels they lack are an error listing them.
2. **Split** (:func:`split_indices`). ``validation_split`` of the rows is held out, stratified on the (first) task's
   label when every class has >= 2 rows (sklearn ``train_test_split``), else a plain seeded random split.
   ``validation_split=0`` trains on everything and reports ``None`` for the validation metrics.
3. **Class weights** (:func:`resolve_class_weights`): ``"balanced"`` from the training labels (multi-label: the
   ``pos_weight`` negatives/positives of each label).
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.task_types.text_classification import flag_cell
from core.options import template_columns
from core.schema import LABEL_MAX
from ml.config import IGNORE_INDEX, MIN_ROWS, TrainConfig, TrainingDataError

MULTI_LABEL_TASK = "labels"  # the task name of a multi-label model trained on several 0/1 columns
NORMALIZATIONS = ("none", "social")
# "social" normalisation as in TweetEval / cardiffnlp: a whitespace-delimited token starting with "@" (and more)
# becomes "@user", one starting with "http" becomes "http"
_HANDLE = re.compile(r"(?<!\S)@\S+")
_LINK = re.compile(r"(?<!\S)http\S*")


@dataclass
class Examples:
    """Usable rows: texts, pair texts and, per task, labels.

    ``labels[task]``: label ids (``-100`` = no label for that task); multi-label (one task): multi-hot rows
    (N, C) of 0/1. ``pairs``: the second text of each row (sentence pairs) or ``None``.
    """

    texts: list[str]
    labels: dict[str, list[int]] | dict[str, list[list[int]]]
    tasks: dict[str, list[str]]
    skipped: dict[str, int] = field(default_factory=dict)
    pairs: list[str] | None = None
    multi_label: bool = False


def normalize_text(text: str, mode: str | None) -> str:
    """``"social"``: ``@anyone`` -> ``@user``, ``http...`` -> ``http`` (TweetEval's preprocessing); ``"none"``: as is.

    Idempotent, so applying it to already normalised text changes nothing.
    """
    if mode in (None, "none"):
        return text
    if mode != "social":
        raise TrainingDataError(f"unknown text_normalization {mode!r}; choose one of {', '.join(NORMALIZATIONS)}")
    return _LINK.sub("http", _HANDLE.sub("@user", text))


def template_fields(template: str) -> list[str]:
    """The columns of a text template; TrainingDataError unless every field is a plain ``{column}``
    (:func:`core.options.template_columns`: no attribute or index access, conversion or format spec)."""
    try:
        return template_columns(template)
    except ValueError as error:
        raise TrainingDataError(str(error)) from None


def render_template(template: str, row: Mapping[str, Any]) -> str:
    """``template`` (e.g. ``"{speaker}: {text}"``) filled with the row's cells (missing or ``None`` -> empty).

    Only plain ``{column}`` fields pass :func:`template_fields`, so ``str.format_map`` on a dict of plain strings
    cannot reach anything but those cells (no ``{a.__class__}``, ``{a[0]}``, ``{a!r}`` or ``{a:>1000000}``).
    """
    columns = template_fields(template)
    return template.format_map({c: "" if row.get(c) is None else str(row[c]) for c in columns})


def row_text(row: Mapping[str, Any], text_column: str | None, template: str | None = None) -> str:
    """One row's text as training builds it, for training, evaluation and classification alike: ``template``
    filled with the row's cells, else ``text_column``'s cell (missing -> ""). A row whose template cells are all
    empty has no text (""), whatever literal text the template adds."""
    if template is not None:
        if not any(_cell(row, c) for c in template_fields(template)):
            return ""
        return render_template(template, row)
    value = row.get(text_column)
    return "" if value is None else str(value)


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _flag(value: str, row_number: int, column: str) -> int | None:
    """A 0/1 label cell -> 1, 0 or None (empty); TrainingDataError naming the cell otherwise."""
    try:
        flag = flag_cell(value)
    except ValueError:
        raise TrainingDataError(
            f"row {row_number}, column {column!r}: {value[:60]!r} is not a 0/1 label "
            "(multi_label with several label_columns: each cell is 0/1, true/false or yes/no)"
        ) from None
    return None if flag is None else int(flag)


def _check_columns(rows: Sequence[Mapping[str, Any]], config: Any, columns: list[str]) -> None:
    available = list(rows[0].keys())
    text_column = getattr(config, "text_column", None)
    template = getattr(config, "text_template", None)
    pair_column = getattr(config, "text_pair_column", None)
    if template is None and not text_column:
        raise TrainingDataError("choose the text column (or a text_template)")
    if template is not None:
        missing = [c for c in template_fields(template) if c not in available]
        if missing:
            raise TrainingDataError(
                f"text_template names column(s) {', '.join(map(repr, missing))} that the dataset does not have; "
                f"its columns are: {', '.join(map(str, available))}"
            )
    needed = [*([] if template is not None else [text_column]), *([pair_column] if pair_column else []), *columns]
    for column in needed:
        if column not in available:
            raise TrainingDataError(
                f"column {column!r} not found; the dataset's columns are: {', '.join(map(str, available))}"
            )
    for column in (text_column, pair_column):
        if column is not None and column in columns:
            raise TrainingDataError(f"column {column!r} cannot be both a text and a label")
    if pair_column is not None and pair_column == text_column:
        raise TrainingDataError("text_pair_column must differ from text_column")


def prepare_examples(
    rows: Sequence[Mapping[str, Any]],
    config: TrainConfig,
    tasks: Mapping[str, Sequence[str]] | None = None,
) -> Examples:
    """Validate the columns and turn rows into :class:`Examples` (see the module docstring; raises
    :class:`TrainingDataError`).

    ``tasks``: the label sets of the training data (``Examples.tasks`` of the training rows), given when these
    rows are a separate validation set, so that label ids agree; labels missing from them raise an error listing
    them, and the minimum-size checks of training data do not apply.
    """
    multitask = config.family == "multitask"
    multi_label = bool(getattr(config, "multi_label", False))
    columns = list(config.label_columns or [])
    if not columns:
        raise TrainingDataError("choose the label column to train on")
    if len(set(columns)) != len(columns):
        raise TrainingDataError("a label column is listed twice")
    if multi_label and multitask:
        raise TrainingDataError("multitask keeps single-label tasks; multi_label needs bert, distilbert or bert_lstm")
    if not multitask and not multi_label and len(columns) != 1:
        raise TrainingDataError(
            f"family {config.family!r} trains on exactly one label column (got {len(columns)}); "
            "use the multitask family for several, or multi_label with one 0/1 column per label"
        )
    if not rows:
        raise TrainingDataError("the dataset has no rows")
    _check_columns(rows, config, columns)
    template = getattr(config, "text_template", None)
    pair_column = getattr(config, "text_pair_column", None)
    normalization = getattr(config, "text_normalization", "none")
    separator = getattr(config, "label_separator", "|") or "|"
    flag_columns = multi_label and len(columns) > 1
    if template is not None:
        template_fields(template)  # a bad template fails here, before any row

    texts: list[str] = []
    pairs: list[str] | None = [] if pair_column else None
    raw: list[Any] = []  # per kept row: [label per column] | set of labels (separator) | [0/1 per column]
    skipped = {"empty_text": 0, "no_label": 0, **({"empty_pair": 0} if pair_column else {})}
    for number, row in enumerate(rows, start=1):
        text = row_text(row, config.text_column, template)
        if not text.strip():
            skipped["empty_text"] += 1
            continue
        pair = _cell(row, pair_column) if pair_column else None
        if pair_column and not pair:
            skipped["empty_pair"] += 1
            continue
        if flag_columns:
            flags = [_flag(_cell(row, c), number, c) for c in columns]
            if all(f is None for f in flags):
                skipped["no_label"] += 1
                continue
            if any(f is None for f in flags):
                empty = columns[flags.index(None)]
                raise TrainingDataError(
                    f"row {number}, column {empty!r} is empty while other label columns of the row are filled: "
                    "give 0 or 1 in every label column (or leave the whole row's labels empty to skip it)"
                )
            labels: Any = flags
        elif multi_label:
            labels = {part.strip() for part in _cell(row, columns[0]).split(separator)} - {""}
        else:
            labels = [_cell(row, c) for c in columns]
            if (not multitask and not labels[0]) or not any(labels):
                skipped["no_label"] += 1
                continue
        texts.append(normalize_text(text, normalization))
        if pairs is not None:
            pairs.append(normalize_text(pair, normalization))
        raw.append(labels)

    if tasks is None and len(texts) < MIN_ROWS:
        raise TrainingDataError(
            f"need at least {MIN_ROWS} rows with text and a label to train; found {len(texts)} "
            f"({_skipped_summary(skipped)})"
        )
    if not texts:
        raise TrainingDataError(f"no usable row: every row was skipped ({_skipped_summary(skipped)})")

    if flag_columns:
        found = {MULTI_LABEL_TASK: list(columns)}
    elif multi_label:
        found = {columns[0]: sorted(set().union(*raw))}
    else:
        found = {c: sorted({labels[j] for labels in raw if labels[j]}) for j, c in enumerate(columns)}
    _check_labels(found, flag_columns)
    label_sets = _label_sets(found, tasks, multi_label, raw if flag_columns else None)

    label_ids: dict[str, Any] = {}
    if flag_columns:
        order = [columns.index(label) for label in label_sets[MULTI_LABEL_TASK]]
        label_ids[MULTI_LABEL_TASK] = [[flags[k] for k in order] for flags in raw]
    elif multi_label:
        task = columns[0]
        label_ids[task] = [[int(label in labels) for label in label_sets[task]] for labels in raw]
    else:
        for j, column in enumerate(columns):
            index = {label: i for i, label in enumerate(label_sets[column])}
            label_ids[column] = [index[labels[j]] if labels[j] else IGNORE_INDEX for labels in raw]
    return Examples(texts=texts, labels=label_ids, tasks=label_sets, skipped=skipped, pairs=pairs,
                    multi_label=multi_label)


def _skipped_summary(skipped: Mapping[str, int]) -> str:
    words = {"empty_text": "had empty text", "empty_pair": "had an empty pair text", "no_label": "had no label"}
    return ", ".join(f"{n} rows {words[k]}" for k, n in skipped.items())


def _check_labels(found: Mapping[str, list[str]], flag_columns: bool) -> None:
    """Label names must fit the prediction table (the web refuses longer ones; old datasets may still have them)."""
    if flag_columns:
        return  # column names: bounded by the request's validation
    for column, values in found.items():
        too_long = [v for v in values if len(v) > LABEL_MAX]
        if too_long:
            raise TrainingDataError(
                f"column {column!r} has labels longer than {LABEL_MAX} characters (e.g. {too_long[0][:60]!r}...): "
                "is it a text column?"
            )


def _label_sets(
    found: dict[str, list[str]],
    tasks: Mapping[str, Sequence[str]] | None,
    multi_label: bool,
    flags: list[list[int]] | None,
) -> dict[str, list[str]]:
    """The label set of every task: the data's own (training), or ``tasks`` (a validation set) checked against it."""
    if tasks is None:
        for task, values in found.items():
            if len(values) < 2:
                what = "labels" if multi_label else "different labels"
                has = f"only one label ({values[0]!r})" if values else "no labels"
                raise TrainingDataError(f"column {task!r} has {has}; a classifier needs at least 2 {what}")
        if flags is not None:
            never = [label for k, label in enumerate(found[MULTI_LABEL_TASK]) if not any(f[k] for f in flags)]
            if never:
                raise TrainingDataError(
                    f"label column(s) {', '.join(map(repr, never))} have no row marked 1: nothing to learn them from"
                )
        return found
    if set(tasks) != set(found):
        raise TrainingDataError(
            f"these rows give the task(s) {', '.join(map(repr, found))} but the model has {', '.join(map(repr, tasks))}"
        )
    out = {}
    for task, values in found.items():
        known = [str(label) for label in tasks[task]]
        unknown = [v for v in values if v not in set(known)]
        if unknown:
            shown = ", ".join(map(repr, unknown[:20])) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
            raise TrainingDataError(
                f"column {task!r} has labels the training data does not: {shown}; "
                f"known labels: {', '.join(map(repr, known[:50]))}"
            )
        if flags is not None and sorted(known) != sorted(values):
            raise TrainingDataError(
                f"the label columns {', '.join(map(repr, values))} differ from the model's "
                f"{', '.join(map(repr, known))}"
            )
        out[task] = known
    return out


def split_indices(
    labels: Sequence[int] | Sequence[Sequence[int]], validation_split: float, seed: int
) -> tuple[list[int], list[int], bool]:
    """Seeded train/validation split of ``range(len(labels))``; stratified when possible.

    Returns ``(train, validation, stratified)``. Stratifies on ``labels`` (``-100`` counts as its own group)
    when every group has >= 2 rows and both parts can hold one row of every group. Multi-label rows (multi-hot
    lists) are split at random: their label combinations are mostly too rare to stratify on.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    indices = list(range(n))
    if validation_split <= 0:
        return indices, [], False
    n_val = min(n - 2, max(1, round(n * validation_split)))
    counts: dict[Any, int] = {}
    for y in labels:
        key = tuple(y) if isinstance(y, (list, tuple)) else y
        counts[key] = counts.get(key, 0) + 1
    multi_hot = any(isinstance(y, (list, tuple)) for y in labels)
    stratify = not multi_hot and min(counts.values()) >= 2 and n_val >= len(counts) and n - n_val >= len(counts)
    train, val = train_test_split(
        indices, test_size=n_val, random_state=seed, shuffle=True, stratify=list(labels) if stratify else None
    )
    return sorted(train), sorted(val), stratify


def balanced_class_weights(label_ids: Sequence[int], num_classes: int) -> list[float]:
    """sklearn's "balanced" weights ``n / (k * count_c)`` over labelled rows; 1.0 for a class with no rows."""
    counts = [0] * num_classes
    for y in label_ids:
        if y != IGNORE_INDEX:
            counts[y] += 1
    total = sum(counts)
    return [round(total / (num_classes * c), 6) if c else 1.0 for c in counts]


def balanced_pos_weights(targets: Sequence[Sequence[int]], num_labels: int) -> list[float]:
    """Multi-label "balanced": each label's ``pos_weight`` = negatives / positives (1.0 for a label never seen).

    BCE's ``pos_weight`` scales the positive term only, so negatives/positives is sklearn's balanced weighting of
    the label's two classes (``n / (2 * count)``) up to a common factor.
    """
    positives = [0] * num_labels
    for row in targets:
        for k, value in enumerate(row):
            positives[k] += int(value)
    n = len(targets)
    # a label on every row has no negatives: weight 1 (0 would switch its positive term off entirely)
    return [round((n - p) / p, 6) if 0 < p < n else 1.0 for p in positives]


def resolve_class_weights(
    setting: None | str | Mapping[str, Sequence[float]] | Sequence[float],
    tasks: Mapping[str, Sequence[str]],
    train_labels: Mapping[str, Sequence[int]],
) -> dict[str, list[float]] | None:
    """``TrainConfig.class_weights`` -> ``{task: [w per label]}`` with ``"balanced"`` computed from the train split.

    Multi-label (``train_labels`` holds multi-hot rows): the weights are ``pos_weight`` values and ``"balanced"``
    is :func:`balanced_pos_weights`.

    ``"balanced"`` may also be given per task (``{"topic": "balanced"}``). Explicit weights must list one number
    per label in the task's label order (sorted; 0/1 label columns: their order) (:class:`TrainingDataError`
    otherwise, naming the order).
    """
    if setting is None:
        return None
    if isinstance(setting, str):
        if setting != "balanced":
            raise TrainingDataError(
                f"class_weights must be 'balanced', a list of numbers or {{task: [...]}}, got {setting!r}"
            )
        setting = {task: "balanced" for task in tasks}
    elif not isinstance(setting, Mapping):
        if len(tasks) != 1:
            raise TrainingDataError("with several tasks give class_weights as {task: [weights]} or 'balanced'")
        setting = {next(iter(tasks)): setting}
    out: dict[str, list[float]] = {}
    for task, weights in setting.items():
        if task not in tasks:
            raise TrainingDataError(f"class_weights names unknown task {task!r}; tasks are: {', '.join(tasks)}")
        labels = tasks[task]
        if weights is None:
            continue
        if isinstance(weights, str):
            if weights != "balanced":
                raise TrainingDataError(f"class_weights for {task!r} must be 'balanced' or numbers, got {weights!r}")
            rows = train_labels[task]
            multi_hot = any(isinstance(y, (list, tuple)) for y in rows)
            balanced = balanced_pos_weights if multi_hot else balanced_class_weights
            out[task] = balanced(rows, len(labels))
            continue
        weights = list(weights)
        if len(weights) != len(labels):
            raise TrainingDataError(
                f"class_weights for {task!r} has {len(weights)} numbers but the data has {len(labels)} labels; "
                f"give one weight per label in this order: {', '.join(labels)}"
            )
        try:
            values = [float(w) for w in weights]
        except (TypeError, ValueError):
            raise TrainingDataError(f"class_weights for {task!r} must be numbers: {weights}") from None
        if any(not math.isfinite(w) or w < 0 for w in values) or not any(w > 0 for w in values):
            raise TrainingDataError(f"class_weights for {task!r} must be >= 0 and not all 0: {values}")
        out[task] = values
    return out or None
