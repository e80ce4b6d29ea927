"""Multiple choice: a context (and a question) with several candidate answers, one of them right -- SWAG-style
(``BertForMultipleChoice``), declared once.

Training data (column names settable, defaults in brackets):

- ``context_column`` [``context``]: the context (SWAG's ``sent1``);
- ``question_column`` [``question`` when the dataset has it]: a question or stem encoded after the context (SWAG's
  ``sent2``: the start of the ending);
- the choices: numbered columns ``choice_columns`` [every ``ending<N>`` column, by N], or one ``choices_column``
  holding a JSON array of strings. A row may have fewer choices than another (at least :data:`MIN_CHOICES`):
  numbered columns are read up to the first empty cell, and a filled cell after an empty one is refused (the
  positions would shift); the model pads and masks the missing ones, never scoring them;
- ``label_column`` [``label``]: the right choice, as its 0-based position (an integer cell) or as its text; a cell
  that is a position and the text of another choice (choices that are numbers) is refused, never guessed
  (:func:`label_index`).

Each (context [+ question], choice) pair is encoded as ``[CLS] context [SEP] question choice [SEP]`` and scored with
one logit; a softmax across the row's choices picks one. Metrics (:func:`choice_metrics`): ``accuracy`` (the
default early-stopping metric) and ``macro_f1`` over choice positions (what tells a model that always picks the
same position from one that reads the choices).

Predictions (``ml.mc_serving``): ``{"choice_index", "choice", "scores", "choices"}`` (``scores``: one softmax
probability per choice, in the choices' order). ``predictions.label`` holds the chosen position as text (``"0"``,
``"1"``, ...: the model's "labels" are positions, so ``?label=1`` finds the rows that picked the second choice),
``score`` its probability, ``scores`` ``{position: probability}``; ``text`` the context and ``text_pair`` the
question.

This module is torch-free (the web validates with it; the worker trains and scores with it).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import HFHead, RequestError, TaskType, register

NAME = "multiple-choice"
MIN_CHOICES = 2
MAX_CHOICES = 32  # choices of one row: more means a wrong column was picked (each choice is one encoder pass)
MAX_CHOICE_CHARS = 20_000  # a choice is a text like any other (the classify limit's default)
MAX_LABEL_DIGITS = 100  # a label cell of more digits is out of range, without converting it to an integer
DEFAULT_CONTEXT, DEFAULT_QUESTION, DEFAULT_LABEL = "context", "question", "label"
ENDING = re.compile(r"^ending(\d+)$")  # SWAG's numbered choice columns
TASK = "choice"  # the one task of a multiple-choice model; its labels are the choice positions "0", "1", ...


def _error(message: str, code: str = "invalid_choices"):
    from core.datasets import DatasetError  # core.datasets imports this package

    return DatasetError(message, code=code, status=422)


def ending_columns(columns: Iterable[str]) -> list[str]:
    """The ``ending<N>`` columns among ``columns``, by N (SWAG's ``ending0`` ... ``ending3``)."""
    numbered = [(int(m.group(1)), c) for c in columns if (m := ENDING.match(c))]
    return [c for _, c in sorted(numbered)]


def positions(count: int) -> list[str]:
    """The labels of a model whose rows have up to ``count`` choices: ``["0", "1", ...]``."""
    return [str(i) for i in range(count)]


# ---------------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """Where a dataset's rows keep their parts, resolved against its columns (see the module docstring)."""

    context_column: str
    question_column: str | None
    choice_columns: tuple[str, ...] | None  # numbered columns, or None with choices_column
    choices_column: str | None
    label_column: str | None  # None: unlabelled (classification)

    @property
    def columns(self) -> list[str]:
        """Every column the layout reads."""
        return [c for c in (self.context_column, self.question_column, *(self.choice_columns or ()),
                            self.choices_column, self.label_column) if c is not None]

    def to_params(self) -> dict:
        return {"context_column": self.context_column, "question_column": self.question_column,
                "choice_columns": list(self.choice_columns) if self.choice_columns is not None else None,
                "choices_column": self.choices_column, "label_column": self.label_column}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Layout":
        choice_columns = params.get("choice_columns")
        return cls(params["context_column"], params.get("question_column"),
                   tuple(choice_columns) if choice_columns is not None else None, params.get("choices_column"),
                   params.get("label_column"))

    def choices(self, row: Mapping[str, Any], number: int) -> list[str]:
        """One row's choices, checked: at least :data:`MIN_CHOICES`, at most :data:`MAX_CHOICES`, none blank
        (numbered columns: up to the first empty cell, nothing filled after it), no NUL."""
        if self.choices_column is not None:
            cell = row.get(self.choices_column, "")
            values: Any = cell
            if isinstance(cell, str):
                try:
                    values = json.loads(cell) if cell.strip() else None
                except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
                    values = None
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _error(f"row {number}: column {self.choices_column!r} must hold a JSON array of strings, got "
                             f"{str(cell)[:60]!r}")
            if not all(v.strip() for v in values):
                raise _error(f"row {number}: a choice in {self.choices_column!r} is empty")
            choices = list(values)
        else:
            cells = [str(row.get(c) or "") for c in self.choice_columns or ()]
            filled = [bool(cell.strip()) for cell in cells]
            count = filled.index(False) if False in filled else len(cells)
            if any(filled[count:]):
                later = self.choice_columns[count + filled[count:].index(True)]
                raise _error(f"row {number}: choice column {self.choice_columns[count]!r} is empty but "
                             f"{later!r} after it is not: the choices' positions would shift")
            choices = cells[:count]
        if len(choices) < MIN_CHOICES:
            raise _error(f"row {number}: {len(choices)} choice(s); a multiple-choice row needs at least "
                         f"{MIN_CHOICES}", "too_few_choices")
        if len(choices) > MAX_CHOICES:
            raise _error(f"row {number}: {len(choices)} choices; at most {MAX_CHOICES}", "too_many_choices")
        for choice in choices:
            if "\x00" in choice or len(choice) > MAX_CHOICE_CHARS:
                raise _error(f"row {number}: a choice holds a NUL character or is longer than {MAX_CHOICE_CHARS} "
                             "characters")
        return choices

    def context(self, row: Mapping[str, Any], number: int) -> tuple[str, str | None]:
        """One row's (context, question or None); a NUL character is refused, an empty context allowed (the
        choices alone may be what is judged)."""
        context = str(row.get(self.context_column) or "")
        question = str(row.get(self.question_column) or "") if self.question_column is not None else None
        if "\x00" in context or (question is not None and "\x00" in question):
            raise _error(f"row {number}: the context or question holds a NUL character")
        return context, question

    def label(self, row: Mapping[str, Any], choices: Sequence[str], number: int) -> int:
        """The right choice's position: an integer cell (``2``, or ``2.0``) is a 0-based position (in range), any
        other cell the text of exactly one choice (compared without surrounding whitespace)."""
        return label_index(row.get(self.label_column), choices, number, self.label_column)

    def example(self, row: Mapping[str, Any], number: int) -> "Example":
        """One labelled row, checked."""
        context, question = self.context(row, number)
        choices = self.choices(row, number)
        label = self.label(row, choices, number) if self.label_column is not None else None
        return Example(context, question, choices, label)


@dataclass(frozen=True)
class Example:
    """One multiple-choice row: what is encoded with each choice, the choices, and the right one (None: unknown)."""

    context: str
    question: str | None
    choices: list[str]
    label: int | None = None


class ChoiceInput(str):
    """One input of a classify job: its context (the ``str`` itself: what the prediction stores as ``text``) carrying
    its ``question`` and ``choices`` -- as ``ml.text_classification.PairRow`` is a token list carrying its token
    types, so that the shared classify code passes it along like any text."""

    __slots__ = ("question", "choices")

    def __new__(cls, context: str, question: str | None, choices: Sequence[str]) -> "ChoiceInput":
        value = super().__new__(cls, context)
        value.question, value.choices = question, list(choices)
        return value

    def example(self) -> "Example":
        return Example(str(self), self.question, list(self.choices))


def classify_layout(columns: Sequence[str], request: Any, model_params: Mapping[str, Any]) -> Layout:
    """Where a classify job reads a dataset's rows: the model's columns (``text_column`` / ``text_pair_column`` of
    the request, when given, name the context / question columns), resolved against the dataset's ``columns``
    (unlabelled); 422 as :func:`resolve_layout`."""
    params = dict(model_params or {})
    return resolve_layout(
        columns, context_column=getattr(request, "text_column", None) or params.get("context_column"),
        question_column=getattr(request, "text_pair_column", None) or params.get("question_column"),
        choice_columns=params.get("choice_columns"), choices_column=params.get("choices_column"), labelled=False)


def label_index(cell: Any, choices: Sequence[str], number: int, column: str | None = DEFAULT_LABEL) -> int:
    """A label cell as a choice position (see :meth:`Layout.label`): an integer cell (``2``, or ``2.0``) is a 0-based
    position, any other cell the text of exactly one choice (compared without surrounding whitespace). When the
    choices are numbers themselves, an integer cell may be both: read as the position it names when that choice is
    also the one whose text it is (or no choice's text is it), as the choice whose text it is when it names no
    position; a cell that names one position and is the text of another is refused (``ambiguous_label``, both
    readings) rather than guessed. 422 ``invalid_label`` for a cell that names no choice."""
    text = "" if cell is None else str(cell).strip()
    if not text:
        raise _error(f"row {number}: the label cell ({column!r}) is empty", "invalid_label")
    matches = [i for i, choice in enumerate(choices) if choice.strip() == text]
    if re.fullmatch(r"[+-]?\d+(\.0*)?", text):  # "2", or "2.0" as a spreadsheet or pandas writes it
        sign, digits = ("-" if text[0] == "-" else ""), text.lstrip("+-").split(".")[0].lstrip("0") or "0"
        # a position has a few digits: a longer integer is out of range without being converted (int() refuses
        # past 4300 digits) and is shown cut short
        index = int(sign + digits) if len(digits) <= MAX_LABEL_DIGITS else None
        if index is not None and 0 <= index < len(choices):
            others = [i for i in matches if i != index]
            if others:
                raise _error(f"row {number}: label {text[:60]!r} is ambiguous: it is position {index} (choice "
                             f"{choices[index][:60]!r}) and the text of the choice at position {others[0]}: give the "
                             "right choice's text, or positions with choices that are not numbers", "ambiguous_label")
            return index
        if len(matches) == 1:  # no position: the one choice of that text (choices "10", "20", "30", label "20")
            return matches[0]
        if not matches:
            shown = sign + (digits if index is not None else f"{digits[:20]}... ({len(digits)} digits)")
            raise _error(f"row {number}: label {shown} is out of range: the row has {len(choices)} choices "
                         f"(positions 0 to {len(choices) - 1})", "invalid_label")
    if len(matches) != 1:
        what = "matches no choice" if not matches else "matches several choices"
        raise _error(f"row {number}: label {text[:60]!r} {what}: give the right choice's position or its exact text",
                     "invalid_label")
    return matches[0]


def resolve_layout(columns: Sequence[str], *, context_column: str | None = None, question_column: str | None = None,
                   choice_columns: Sequence[str] | None = None, choices_column: str | None = None,
                   label_column: str | None = None, labelled: bool = True) -> Layout:
    """The :class:`Layout` of a dataset with ``columns`` (defaults as in the module docstring); 422
    ``unknown_column`` for a named column it lacks, ``invalid_columns`` when the choices cannot be found or a
    column plays two parts."""
    context = context_column or DEFAULT_CONTEXT
    question = question_column if question_column is not None else (
        DEFAULT_QUESTION if DEFAULT_QUESTION in columns else None)
    label = (label_column or DEFAULT_LABEL) if labelled else None
    if choices_column is None:
        numbered = list(choice_columns) if choice_columns is not None else ending_columns(columns)
        if not numbered:
            raise _error("the dataset has no ending<N> columns: name the choices with choice_columns (numbered "
                         "columns) or choices_column (a JSON array per row)", "invalid_columns")
        layout = Layout(context, question, tuple(numbered), None, label)
    else:
        layout = Layout(context, question, None, choices_column, label)
    used = layout.columns
    if len(set(used)) != len(used):
        twice = sorted({c for c in used if used.count(c) > 1})
        raise _error(f"column(s) {', '.join(map(repr, twice))} would play two parts (context, question, choice, "
                     "label)", "invalid_columns")
    missing = [c for c in used if c not in columns]
    if missing:
        shown = ", ".join(list(columns)[:50])
        raise _error(f"column(s) {', '.join(map(repr, missing))} not in the dataset; it has {shown}", "unknown_column")
    return layout


def config_layout(columns: Sequence[str], config: Any, *, labelled: bool = True) -> Layout:
    """:func:`resolve_layout` for a training config (``core.options.TrainConfig`` or its stored params)."""
    get = config.get if isinstance(config, Mapping) else lambda name: getattr(config, name, None)
    return resolve_layout(columns, context_column=get("context_column"), question_column=get("question_column"),
                          choice_columns=get("choice_columns"), choices_column=get("choices_column"),
                          label_column=get("label_column"), labelled=labelled)


def check_config(config: Any) -> None:
    """What a training request of this task type may hold, checked before any data is read (ValueError: 422):
    choices as numbered columns or one list column, not both; no class weights (positions are not classes)."""
    if config.choice_columns is not None and config.choices_column is not None:
        raise ValueError("give choice_columns (numbered columns) or choices_column (one JSON array per row), not both")
    if config.choice_columns is not None:
        if len(config.choice_columns) < MIN_CHOICES:
            raise ValueError(f"choice_columns needs at least {MIN_CHOICES} columns")
        if len(config.choice_columns) > MAX_CHOICES:
            raise ValueError(f"choice_columns may name at most {MAX_CHOICES} columns")
        if len(set(config.choice_columns)) != len(config.choice_columns):
            raise ValueError("choice_columns must not repeat a column")
    if config.label_columns is not None and (len(config.label_columns) != 1
                                             or config.label_columns[0] != (config.label_column or DEFAULT_LABEL)):
        raise ValueError("a multiple-choice model reads one label_column (the right choice's position or text)")
    if config.class_weights is not None:
        raise ValueError("class_weights do not apply to multiple choice: the labels are choice positions")
    config.context_column = config.context_column or DEFAULT_CONTEXT
    config.label_column = config.label_column or DEFAULT_LABEL
    config.label_columns = [config.label_column]


# ---------------------------------------------------------------------------------------------------- metrics


def choice_metrics(gold: Sequence[int], pred: Sequence[int]) -> dict[str, Any]:
    """``accuracy`` and ``macro_f1`` over choice positions (the mean F1 of every position that is a gold or a
    predicted answer somewhere, as scikit-learn's ``f1_score(average="macro")``), ``per_position`` ``{position:
    {precision, recall, f1, support}}`` and ``examples``; None each for no rows."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold answers but {len(pred)} predictions")
    if not gold:
        return {"accuracy": None, "macro_f1": None, "per_position": {}, "examples": 0}
    per_position: dict[str, dict[str, Any]] = {}
    for position in sorted(set(gold) | set(pred)):
        tp = sum(1 for g, p in zip(gold, pred) if g == p == position)
        predicted, support = sum(1 for p in pred if p == position), sum(1 for g in gold if g == position)
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_position[str(position)] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    accuracy = sum(1 for g, p in zip(gold, pred) if g == p) / len(gold)
    macro_f1 = sum(v["f1"] for v in per_position.values()) / len(per_position)
    return {"accuracy": accuracy, "macro_f1": macro_f1, "per_position": per_position, "examples": len(gold)}


# ---------------------------------------------------------------------------------------------------- predictions


def result_of(choices: Sequence[str], probabilities: Sequence[float]) -> dict[str, Any]:
    """The result of one row: ``{"choice_index", "choice", "scores", "choices"}`` (the first best on a tie)."""
    scores = [float(p) for p in probabilities]
    best = max(range(len(scores)), key=scores.__getitem__)
    return {"choice_index": best, "choice": choices[best], "scores": scores, "choices": list(choices)}


@dataclass(frozen=True)
class ChoiceExport:
    """JSONL: ``index``, ``id``?, ``text`` (the context), ``question``, ``choices``, ``choice_index``, ``choice``,
    ``score``, ``scores`` (one per choice). CSV: the same columns, ``choices`` and ``scores`` as JSON arrays (rows
    have different numbers of choices, so they cannot be columns of their own)."""

    with_id: bool = False
    columns: list[str] = field(init=False)
    csv_columns: list[str] = field(init=False)

    def __post_init__(self) -> None:
        columns = ["index", *(["id"] if self.with_id else []), "text", "question", "choices", "choice_index",
                   "choice", "score", "scores"]
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "csv_columns", columns)

    def row(self, p: Any) -> dict:
        result = p.result or {}
        row: dict = {"index": p.index}
        if self.with_id:
            row["id"] = p.row_id
        scores = result.get("scores") or []
        index = result.get("choice_index")
        row.update(text=p.text, question=p.text_pair, choices=list(result.get("choices") or []), choice_index=index,
                   choice=result.get("choice"), score=scores[index] if index is not None and scores else None,
                   scores=list(scores))
        return row

    def csv_rows(self, p: Any) -> list[dict]:
        row = self.row(p)
        row["choices"] = json.dumps(row["choices"], ensure_ascii=False)
        row["scores"] = json.dumps(row["scores"])
        return [row]


@dataclass(frozen=True)
class ChoiceEvaluationPlan:
    """What a multiple-choice model's evaluate job reads from each row (stored in the job's params; ``task_type``
    tells the worker which plan to read back)."""

    layout: Layout
    task_type: str = NAME

    def to_params(self) -> dict:
        return {**self.layout.to_params(), "task_type": self.task_type}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "ChoiceEvaluationPlan":
        return cls(Layout.from_params(params))

    @property
    def columns(self) -> list[str]:
        return self.layout.columns

    def example(self, row: Mapping[str, Any], number: int) -> Example:
        """One row, checked as training rows are (a label is required)."""
        return self.layout.example(row, number)

    def check_labels(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Every row usable (choices, a label that names one of them); 422 otherwise, before the job is queued."""
        from core.datasets import DatasetError
        from core.evaluation import EvaluationError

        count = 0
        try:
            for number, row in enumerate(rows, start=1):
                self.example(row, number)
                count += 1
        except DatasetError as exc:
            raise EvaluationError(exc.code, exc.message) from None
        if not count:
            raise EvaluationError("empty_dataset", "the dataset has no rows to evaluate on")


# ---------------------------------------------------------------------------------------------------- the type


@register
class MultipleChoice(TaskType):
    """Pick one of several candidate answers (``BertForMultipleChoice``)."""

    name = NAME
    pipeline_tag = "multiple-choice"
    label = "Multiple choice (pick the right answer)"
    default_metric = "accuracy"
    metrics = ("accuracy", "macro_f1", "val_loss")
    request_fields = frozenset({"context_column", "question_column", "choice_columns", "choices_column",
                                "label_column", "label_columns"})
    families = ("bert", "distilbert")
    # a row is one sequence per choice (six rows of 16 = 96 sequences): half the rows of the global 32 per step
    # doubles the optimizer steps of a small set; on 320 tweet-topic rows (bench/mc_topics.py) held-out accuracy
    # goes from 0.65 at 32 to 0.95 at 16
    training_defaults = {"batch_size": 16}
    # BertForMultipleChoice / DistilBertForMultipleChoice: the sequence classifiers' layers with one output (a score
    # per choice); transformers' config keeps no count of choices, so an imported model names two positions
    hf = HFHead(
        architectures={"bert": "BertForMultipleChoice", "distilbert": "DistilBertForMultipleChoice"},
        layers={"bert": {"classifier": 1}, "distilbert": {"pre_classifier": "hidden", "classifier": 1}},
        pooler=frozenset({"bert"}),
        dropout_field={"bert": "classifier_dropout", "distilbert": "seq_classif_dropout"},
        task=TASK,
        labels=tuple(positions(2)),
    )

    def check_classify_request(self, request: Any, model_id: Any, model_params: Mapping[str, Any]) -> None:
        """``choice_questions`` or a dataset (its text_column / text_pair_column name the context / question
        columns), nothing else inline."""
        if not request.from_dataset and not request.with_choice_questions:
            raise RequestError("choice_questions_required", f"model {model_id} is a multiple-choice model: send "
                               'choice_questions ({"context", "question"?, "choices": [...]} each) or a dataset_id')

    def misdirected(self, request: Any, model_id: Any, model_task_type: str) -> RequestError | None:
        """``choice_questions`` are for multiple-choice models only."""
        if request.with_choice_questions:
            return RequestError("choice_questions_not_supported", f"model {model_id} is a {model_task_type} model: "
                                "choice_questions are for multiple-choice models")
        return None

    def evaluation_plan_from_params(self, params: Mapping[str, Any]) -> "ChoiceEvaluationPlan":
        """A :class:`ChoiceEvaluationPlan`."""
        return ChoiceEvaluationPlan.from_params(params)

    def resolve_columns(self, config: Any) -> bool:
        """The request's columns (see :func:`check_config`); the dataset's own columns are resolved by
        :meth:`dataset_columns`."""
        check_config(config)
        return True

    def text_columns(self, config: Any) -> list[str]:
        """The columns the request names (context, question, choices); its defaults depend on the dataset
        (:meth:`dataset_columns`)."""
        return [c for c in (config.context_column, config.question_column, *(config.choice_columns or ()),
                            config.choices_column) if c is not None]

    def training_sequences(self, config: Any, columns: Sequence[str], row_count: int,
                           rows: Iterable[Mapping[str, Any]]) -> int:
        """One sequence per choice of every row: the numbered choice columns, or for a list column each row's own
        count (its JSON array read; a cell that is no array counts :data:`MIN_CHOICES`: the row checks refuse it);
        a layout that does not resolve is refused by the column checks."""
        from core.datasets import DatasetError

        try:
            layout = config_layout(columns, config)
        except DatasetError:
            return row_count
        if layout.choice_columns is not None:
            return row_count * len(layout.choice_columns)
        total = 0
        for row in rows:
            try:
                cell = json.loads(row.get(layout.choices_column) or "null")
            except (ValueError, RecursionError):  # deeply nested JSON: the row checks refuse it with a 422
                cell = None
            total += min(len(cell), MAX_CHOICES) if isinstance(cell, list) and cell else MIN_CHOICES
        return total

    def dataset_columns(self, config: Any, columns: Sequence[str]) -> tuple[list[str], list[str]]:
        """The layout's columns (:func:`config_layout`: defaults by what the dataset has; a 422 naming what does not
        fit): (context, question and choice columns, [label column]). A column the request names that the dataset
        lacks is left to the caller, which names it (``unknown_column``) before any layout problem."""
        from core.datasets import DatasetError

        try:
            layout = config_layout(list(columns), config)
        except DatasetError:
            named = config.text_columns()
            if any(c not in columns for c in named):
                return named, [config.label_column]
            raise
        return [c for c in layout.columns if c != layout.label_column], [layout.label_column]

    def check_classify_dataset(self, columns: Sequence[str], request: Any, model_params: Mapping[str, Any],
                               rows: Iterable[Mapping[str, str]] | None = None) -> bool:
        """A dataset classify request reads the model's columns (:func:`classify_layout`); 422 when they are not
        in the dataset, or when a row (``rows``, streamed) has no usable choices -- found before the job is queued,
        so a job never stops half-way through on one. ``text_template`` does not apply."""
        if getattr(request, "text_template", None) is not None:
            raise _error("text_template does not apply to a multiple-choice model: give text_column (the context) "
                         "and text_pair_column (the question), or leave them to the model's", "invalid_columns")
        layout = classify_layout(columns, request, model_params)
        id_column = getattr(request, "id_column", None)
        if id_column is not None and id_column in layout.columns:
            raise _error(f"id_column {id_column!r} is also a column the model reads", "invalid_columns")
        for number, row in enumerate(rows or (), start=1):
            layout.context(row, number)
            layout.choices(row, number)
        return True

    def classify_inputs(self, request: Any, dataset: tuple[bytes, str] | None,
                        model_params: Mapping[str, Any]) -> Iterator[tuple[int, ChoiceInput, str | None, Any]]:
        """Every input of a classify job as ``(index, ChoiceInput, question, row id)``: the request's
        ``choice_questions``, or each dataset row (its choices read as the model's layout; a row with unusable
        choices fails the job with the row's number)."""
        if dataset is None:
            for index, item in enumerate(request.choice_questions):
                yield index, ChoiceInput(item.context, item.question, item.choices), item.question, None
            return
        from core.datasets import open_rows

        layout: Layout | None = None
        for index, row in enumerate(open_rows(*dataset)):
            if layout is None:
                layout = classify_layout(list(row), request, model_params)
            context, question = layout.context(row, index + 1)
            row_id = row.get(request.id_column) if request.id_column else None
            yield index, ChoiceInput(context, question, layout.choices(row, index + 1)), question, row_id

    def check_training_rows(self, rows: Iterable[Mapping[str, str]], config: Any, *,
                            known: Mapping[str, set[str]] | None = None) -> dict[str, Counter]:
        """Every row a context, 2 to :data:`MAX_CHOICES` choices and a label naming one; returns ``{"choice":
        Counter of right positions}``. ``known`` (a validation dataset) changes nothing: any position is fine."""
        counts: Counter = Counter()
        layout: Layout | None = None
        for number, row in enumerate(rows, start=1):
            if layout is None:
                layout = config_layout(list(row), config)
            counts[str(layout.example(row, number).label)] += 1
        if not counts:
            raise _error("the dataset has no rows", "empty_dataset")
        return {TASK: counts}

    def prediction_columns(self, result: Mapping[str, Any]) -> dict[str, Any]:
        scores = [float(s) for s in result["scores"]]
        index = int(result["choice_index"])
        stored = {"choice_index": index, "choice": result["choice"], "scores": scores,
                  "choices": list(result["choices"])}
        return {"result": stored, "label": str(index), "score": scores[index],
                "scores": {str(i): s for i, s in enumerate(scores)}, "tasks": None, "labels": None}

    def prediction_fields(self, prediction: Any) -> dict[str, Any]:
        """``choice_index``, ``choice``, ``scores`` (one per choice), ``choices``."""
        return dict(prediction.result or {})

    def export_layout(self, *, model_tasks: Mapping[str, Sequence[str]] | None, model_params: Mapping[str, Any],
                      first: Any | None, with_id: bool, with_pair: bool) -> ChoiceExport:
        return ChoiceExport(with_id=with_id)

    def dataset_mismatch(self, columns: Sequence[str], list_columns: Collection[str],
                         used: Sequence[str] = (), model_params: Mapping[str, Any] | None = None) -> str | None:
        """A multiple-choice dataset resolves the model's layout (:func:`config_layout`; ``used``: a plan's columns,
        already resolved, whose missing ones the caller names) and holds texts, not token lists, in every column but
        a ``choices_column`` (whose cells are JSON arrays by design)."""
        from core.datasets import DatasetError

        params = dict(model_params or {})
        if used:
            read = list(used)
        else:
            try:
                read = config_layout(list(columns), params).columns
            except DatasetError as exc:
                return exc.message
        listed = [c for c in read if c in list_columns and c != params.get("choices_column")]
        if listed:
            return (f"column {listed[0]!r} holds token lists (JSON arrays of strings); a multiple-choice model reads "
                    "its context, question and choices as texts")
        return None

    def label_condition(self, session: Any, label: str, model_params: Mapping[str, Any]) -> Any:
        """The rows that picked position ``label`` (``"0"``, ``"1"``, ...; see the module docstring)."""
        from .text_classification import predicted_label_is

        return predicted_label_is(session, label, multi_label=False)

    def plan_evaluation(self, model_family: str, model_tasks: Mapping[str, list[str]],
                        model_params: Mapping[str, Any] | None, *, dataset_columns: Sequence[str] | None = None,
                        text_column: str | None = None, text_pair_column: str | None = None,
                        label_column: str | None = None, label_columns: list[str] | None = None,
                        **layout: Any) -> ChoiceEvaluationPlan:
        """The model's columns unless the request names others (``text_column`` / ``text_pair_column`` read as the
        context / question columns), resolved against ``dataset_columns``."""
        from core.datasets import DatasetError
        from core.evaluation import EvaluationError

        params = dict(model_params or {})
        if label_columns is not None and len(label_columns) != 1:
            raise EvaluationError("label_columns_mismatch", "a multiple-choice model is evaluated on one label column")
        given = {"context_column": layout.get("context_column") or text_column,
                 "question_column": layout.get("question_column") or text_pair_column,
                 "choice_columns": layout.get("choice_columns"), "choices_column": layout.get("choices_column"),
                 "label_column": label_column or (label_columns or [None])[0]}
        if given["choice_columns"] is None and given["choices_column"] is None:
            given["choice_columns"] = params.get("choice_columns")
            given["choices_column"] = params.get("choices_column")
        for key in ("context_column", "question_column", "label_column"):
            if given[key] is None:
                given[key] = params.get(key)
        try:
            return ChoiceEvaluationPlan(resolve_layout(list(dataset_columns or []), **given))
        except DatasetError as exc:
            raise EvaluationError(exc.code, exc.message) from None
