"""Evaluating a saved model on a labelled dataset: which columns to read, and each row's true labels.

Pure (no SQL, no torch): the web plans and checks an evaluation with it before the job is queued (columns that
match the model's task shape, labels the model does not know), and the worker reads the rows with the same
:class:`EvaluationPlan`, stored in the job's params.

Task shapes (from the model's training params):

- single-label: one label column; its cell is the label (empty: the row is not scored).
- multitask: ``label_columns`` are the model's task names; an empty cell leaves that task out for the row.
- multi-label: either one column whose cells hold labels joined by the model's ``label_separator`` (empty: no
  label), or one 0/1 column per label, named after the label (every label of the model).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .options import FAMILY_INFO, template_columns
from .task_types.text_classification import flag_cell
MAX_UNKNOWN_LISTED = 100  # labels named in an unknown_labels error (a text column given as labels has thousands)


class EvaluationError(ValueError):
    """A request that cannot be evaluated against this model or dataset (a 422 at submission, else a failed job).

    ``code`` is the API error code; ``labels`` lists the labels the model does not know (``unknown_labels``).
    """

    def __init__(self, code: str, message: str, *, labels: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.labels = code, message, labels


@dataclass(frozen=True)
class EvaluationPlan:
    """What an evaluate job reads from each row, resolved against the model once, at submission."""

    tasks: dict[str, list[str]]  # the model's {task: labels}, in its order
    label_columns: list[str]  # dataset columns; single-label and multitask: one per task, in task order
    text_column: str | None = None  # None: ``text_template`` builds the text
    text_template: str | None = None
    text_pair_column: str | None = None
    multi_label: bool = False
    label_separator: str | None = None  # multi-label with one column; None with 0/1 columns (one per label)

    # ---------------------------------------------------------------- (de)serialising for job params

    def to_params(self) -> dict:
        return asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "EvaluationPlan":
        """The plan stored in a job's params (other keys, such as ``model_id``, are ignored)."""
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})

    # ---------------------------------------------------------------- reading rows

    @property
    def columns(self) -> list[str]:
        """Every dataset column the evaluation reads."""
        texts = template_columns(self.text_template) if self.text_template else [self.text_column]
        return [*texts, *([self.text_pair_column] if self.text_pair_column else []), *self.label_columns]

    @property
    def task(self) -> str:
        """The model's first (for single-label and multi-label models: only) task."""
        return next(iter(self.tasks))

    def truth(self, row: Mapping[str, Any]) -> dict[str, str | list[str] | None]:
        """A row's true labels per model task: a label (None: no label for that task), or for a multi-label
        model the list of its labels. Raises :class:`EvaluationError` for a 0/1 cell that is neither."""
        if self.multi_label:
            if self.label_separator is not None:
                cell = _cell(row, self.label_columns[0])
                labels = [part.strip() for part in cell.split(self.label_separator)] if cell else []
                return {self.task: list(dict.fromkeys(label for label in labels if label))}
            return {self.task: [column for column in self.label_columns if _flag(row, column)]}
        return {task: (_cell(row, column) or None) for task, column in zip(self.tasks, self.label_columns)}

    def check_labels(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Raise ``unknown_labels`` naming every label of ``rows`` the model cannot predict."""
        self.check_truths(self.truth(row) for row in rows)

    def check_truths(self, truths: Iterable[Mapping[str, Any]]) -> None:
        """As :meth:`check_labels`, for rows already read with :meth:`truth`."""
        known = {task: set(labels) for task, labels in self.tasks.items()}
        unknown: dict[str, set[str]] = {}
        for truth in truths:
            for task, value in truth.items():
                for label in value if isinstance(value, list) else [value] if value is not None else []:
                    if label not in known[task]:
                        unknown.setdefault(task, set()).add(label)
        if not unknown:
            return
        listed = {task: sorted(labels) for task, labels in unknown.items()}
        flat = sorted({label for labels in listed.values() for label in labels})[:MAX_UNKNOWN_LISTED]
        where = "; ".join(f"{task}: {', '.join(repr(label[:60]) for label in labels[:20])}"
                          f"{f' and {len(labels) - 20} more' if len(labels) > 20 else ''}"
                          for task, labels in listed.items())
        knows = "; ".join(f"{task}: {', '.join(map(repr, self.tasks[task]))}" for task in listed)
        raise EvaluationError("unknown_labels", f"the dataset has labels the model does not know ({where}); the "
                              f"model knows {knows}", labels=flat)


def plan_evaluation(
    model_family: str,
    model_tasks: Mapping[str, list[str]],
    model_params: Mapping[str, Any] | None,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    label_columns: list[str] | None = None,
) -> EvaluationPlan:
    """Resolve an evaluation request against a model: columns left out default to the model's training columns;
    the label columns must fit the model's task shape (:class:`EvaluationError` ``label_columns_mismatch``,
    ``text_pair_mismatch`` otherwise)."""
    params = dict(model_params or {})
    tasks = {task: list(labels) for task, labels in model_tasks.items()}
    multi_label = bool(params.get("multi_label"))
    trained_pairs = params.get("text_pair_column") is not None
    if text_pair_column is not None and not trained_pairs:
        raise EvaluationError("text_pair_mismatch", "text_pair_column is for models trained on sentence pairs; "
                              "this model takes single texts")
    if trained_pairs:
        text_pair_column = text_pair_column or params["text_pair_column"]
    template = None if text_column is not None else params.get("text_template")
    text_column = text_column or (None if template else params.get("text_column"))
    if text_column is None and template is None:
        raise EvaluationError("missing_column", "give text_column: the model does not record the one it was "
                              "trained on")
    columns = label_columns or ([label_column] if label_column else None)
    trained = list(params.get("label_columns") or ([params["label_column"]] if params.get("label_column") else []))
    # (the text normalization the model was trained with is the predictor's to apply: it is saved with the model)
    common = {"tasks": tasks, "text_column": text_column, "text_template": template,
              "text_pair_column": text_pair_column}

    if multi_label:
        labels = tasks[next(iter(tasks))]
        columns = columns or trained or list(labels)
        if len(columns) == 1 and columns[0] not in labels:  # one column of joined labels
            separator = params.get("label_separator") or "|"
            return EvaluationPlan(**common, label_columns=columns, multi_label=True, label_separator=separator)
        if set(columns) != set(labels):
            raise EvaluationError(
                "label_columns_mismatch",
                "a multi-label model takes one label column (labels joined by "
                f"{params.get('label_separator') or '|'!r}) or one 0/1 column per label: "
                f"{', '.join(map(repr, labels))}" + _difference(columns, labels))
        return EvaluationPlan(**common, label_columns=list(labels), multi_label=True)

    family = FAMILY_INFO.get(model_family)
    if family is not None and family.multitask:
        columns = columns or list(tasks)
        if set(columns) != set(tasks):
            raise EvaluationError(
                "label_columns_mismatch",
                f"a multitask model is evaluated on label_columns named after its tasks: "
                f"{', '.join(map(repr, tasks))}" + _difference(columns, list(tasks)))
        return EvaluationPlan(**common, label_columns=list(tasks))

    columns = columns or trained[:1]
    if len(columns) != 1:
        raise EvaluationError("label_columns_mismatch", "this model has one task: give one label_column")
    return EvaluationPlan(**common, label_columns=columns)


def _difference(given: list[str], expected: list[str]) -> str:
    missing = [c for c in expected if c not in given]
    extra = [c for c in given if c not in expected]
    parts = [f"missing {', '.join(map(repr, missing))}" if missing else "",
             f"not the model's: {', '.join(map(repr, extra))}" if extra else ""]
    return f" ({'; '.join(p for p in parts if p)})" if missing or extra else ""


def _cell(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    return "" if value is None else str(value).strip()


def _flag(row: Mapping[str, Any], column: str) -> bool:
    cell = _cell(row, column)
    try:
        return bool(flag_cell(cell))  # scoring, an empty 0/1 cell says "not this label"
    except ValueError:
        raise EvaluationError("invalid_label", f"column {column!r} holds {cell.lower()[:60]!r}: a 0/1 label column "
                              "holds 0 or 1") from None
