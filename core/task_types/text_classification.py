"""Text classification: a text (or a pair of texts) in, a label out -- or several labels (multi-label), or one label
per label column (the multitask family). The default task type; today's behaviour, declared in one place.

Shapes (chosen by the training request; a model's ``params`` keep it):

- single-label: one label column, softmax; a prediction is ``{label, score, scores}``.
- multi-label (``multi_label``): one column of labels joined by ``label_separator``, or one 0/1 column per label;
  sigmoid with a threshold per label; a prediction is ``{labels, scores}`` (``label``/``score``: the top one).
- multitask (family ``multitask``): one single-label task per label column; a prediction is ``{tasks: {task:
  {label, score, scores}}}``.
- pairs (``text_pair_column``): any of the above on ``[CLS] a [SEP] b [SEP]``.

Label cells are read here only (:data:`TRUE_CELLS`, :func:`flag_cell`, :func:`row_labels`): the upload check
(``core.datasets``), training (``ml.data``) and evaluation (``core.evaluation``) share them.

Stored predictions: ``predictions.result`` holds the result JSON above; the older columns ``label`` / ``score`` /
``scores`` / ``labels`` / ``tasks`` stay filled as before, so the ``?label=`` filter and rows stored before
``result`` existed read exactly as they always did (a row whose ``result`` is NULL is read from those columns).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import HFHead, TaskType, register

# ---------------------------------------------------------------------------------------------------- label cells

# the cells of a 0/1 label column (multi-label), lower-cased; training, the upload check and evaluation share them
TRUE_CELLS = frozenset({"1", "1.0", "true", "yes"})
FALSE_CELLS = frozenset({"0", "0.0", "false", "no"})


def flag_cell(value: Any) -> bool | None:
    """A 0/1 label cell: True (``1``, ``true``, ``yes``...), False (``0``, ``false``, ``no``...) or None (empty);
    ValueError for anything else (each caller words its own error: a 422, a failed training, a failed evaluation)."""
    folded = ("" if value is None else str(value)).strip().lower()
    if folded in TRUE_CELLS:
        return True
    if folded in FALSE_CELLS:
        return False
    if not folded:
        return None
    raise ValueError(f"{folded[:60]!r} is not a 0/1 label")


def row_labels(row: Mapping[str, str], config: Any) -> list[str] | None:
    """The labels of one row under ``config`` (a ``core.options.TrainConfig``): one per label column for single-label
    and multitask data, the labels present for multi-label data. None when a 0/1 cell holds anything else, or when
    a row fills some of its 0/1 cells and leaves others empty (training refuses both; an all-empty row is skipped)."""
    columns = config.label_columns
    if not config.multi_label:
        return [row.get(c, "").strip() for c in columns]
    if len(columns) == 1:
        cell = row.get(columns[0], "")
        return [part.strip() for part in cell.split(config.label_separator) if part.strip()]
    present, empty = [], 0
    for column in columns:
        try:
            flag = flag_cell(row.get(column, ""))
        except ValueError:
            return None
        if flag:
            present.append(column)
        elif flag is None:
            empty += 1
    return None if 0 < empty < len(columns) else present


# ---------------------------------------------------------------------------------------------------- results


def stored_result(prediction: Any) -> dict[str, Any]:
    """A stored prediction's result JSON: its ``result`` column, or for a row stored before that column existed the
    same JSON rebuilt from ``label`` / ``score`` / ``scores`` / ``labels`` / ``tasks``."""
    if prediction.result is not None:
        return prediction.result
    if prediction.tasks is not None:
        return {"tasks": prediction.tasks}
    result = {"label": prediction.label, "score": prediction.score, "scores": prediction.scores}
    if prediction.labels is not None:
        result["labels"] = prediction.labels
    return result


@dataclass(frozen=True)
class TextClassificationExport:
    """The export columns of a text-classification job: ``index``, ``id``?, ``text``, ``text_pair``?, then

    - single-label: ``label``, ``score``, ``score_<label>`` per label;
    - multi-label: ``labels`` (a list; the CSV joins it with ``|``), ``score_<label>`` per label;
    - multitask: ``<task>_label``, ``<task>_score``, ``<task>_score_<label>`` per task and label.
    """

    tasks: dict[str, list[str]]  # {task: labels} in the model's order; single-task: exactly one entry
    multitask: bool = False
    multi_label: bool = False
    with_id: bool = False
    with_pair: bool = False
    columns: list[str] = field(init=False)

    def __post_init__(self) -> None:
        columns = ["index", *(["id"] if self.with_id else []), "text", *(["text_pair"] if self.with_pair else [])]
        if self.multi_label:
            columns += ["labels", *(f"score_{label}" for label in self._single_labels)]
        elif self.multitask:
            for task, labels in self.tasks.items():
                columns += [f"{task}_label", f"{task}_score", *(f"{task}_score_{label}" for label in labels)]
        else:
            columns += ["label", "score", *(f"score_{label}" for label in self._single_labels)]
        object.__setattr__(self, "columns", columns)  # computed once: every exported row reads it

    @property
    def _single_labels(self) -> list[str]:
        return next(iter(self.tasks.values()), [])

    def row(self, p: Any) -> dict:
        """One prediction row as a flat dict keyed by :attr:`columns`."""
        row: dict = {"index": p.index}
        if self.with_id:
            row["id"] = p.row_id
        row["text"] = p.text
        if self.with_pair:
            row["text_pair"] = p.text_pair
        result = stored_result(p)
        if self.multi_label:
            scores = result.get("scores") or {}
            row["labels"] = list(result.get("labels") or [])
            row.update((f"score_{label}", scores.get(label)) for label in self._single_labels)
        elif self.multitask:
            for task, labels in self.tasks.items():
                one = (result.get("tasks") or {}).get(task) or {}
                scores = one.get("scores") or {}
                row[f"{task}_label"] = one.get("label")
                row[f"{task}_score"] = one.get("score")
                row.update((f"{task}_score_{label}", scores.get(label)) for label in labels)
        else:
            scores = result.get("scores") or {}
            row["label"], row["score"] = result.get("label"), result.get("score")
            row.update((f"score_{label}", scores.get(label)) for label in self._single_labels)
        return row


def predicted_label_is(session: Any, label: str, *, multi_label: bool) -> Any:
    """A WHERE clause for the predictions that predicted ``label``: ``Prediction.label``, or for a multi-label model
    membership in ``Prediction.labels`` (every label over its threshold, not only the top one). JSON membership is
    written per dialect: PostgreSQL's jsonb ``@>``, SQLite's ``json_each``.

    Indexing (both dialects): the filter always comes with ``Prediction.job_id == ...``, which the unique b-tree
    ``job_index (job_id, index)`` answers in index order; the label test then runs on that job's rows only -- a
    plain comparison of the ``label`` column, or for multi-label the JSON membership above (PostgreSQL: ``labels::jsonb
    @> '["x"]'``; SQLite: an ``EXISTS`` over ``json_each(labels)``). Neither needs an index of its own (a job's rows
    are bounded by its size; an index on ``label`` alone would not help a filter scoped to one job)."""
    from sqlalchemy import cast, func, select
    from sqlalchemy.dialects import postgresql

    from core.schema import Prediction

    if not multi_label:
        return Prediction.label == label
    if session.get_bind().dialect.name == "postgresql":
        return cast(Prediction.labels, postgresql.JSONB).contains([label])
    members = func.json_each(Prediction.labels).table_valued("value")
    return select(1).select_from(members).where(members.c.value == label).exists()


# ---------------------------------------------------------------------------------------------------- the type


@register
class TextClassification(TaskType):
    """Single-label, multi-label, sentence-pair and multitask text classification."""

    name = "text-classification"
    pipeline_tag = "text-classification"
    label = "Text classification"
    default_metric = "macro_f1"
    metrics = ("macro_f1", "accuracy", "micro_f1", "val_loss")
    request_fields = frozenset({"text_column", "text_template", "text_pair_column", "label_column", "label_columns"})
    # BertForSequenceClassification classifies the pooler's output; DistilBERT's head has a layer of its own first
    hf = HFHead(
        architectures={"bert": "BertForSequenceClassification", "distilbert": "DistilBertForSequenceClassification"},
        layers={"bert": {"classifier": "labels"}, "distilbert": {"pre_classifier": "hidden", "classifier": "labels"}},
        pooler=frozenset({"bert"}),
        dropout_field={"bert": "classifier_dropout", "distilbert": "seq_classif_dropout"},
        problem_type="single_label_classification",
        task="label",
        head_options={"bert": {"pooling": "pooler"}},
    )

    def hf_export_problem(self, config: Mapping[str, Any]) -> str | None:
        """Exact for one single-label task (bert: pooled by the encoder's pooler, as transformers' head is)."""
        head = config.get("head") or {}
        if len(config.get("tasks") or {}) != 1:
            return "it has several tasks"
        if head.get("multi_label"):
            return "it is multi-label (its per-label decision thresholds have no transformers equivalent)"
        if config.get("family") == "bert" and head.get("pooling") != "pooler":
            return (f"it pools with {head.get('pooling')!r}: BertForSequenceClassification classifies the encoder's "
                    "pooler output (pooling 'pooler')")
        return None

    def check_training_rows(self, rows: Any, config: Any, *, known: Mapping[str, set[str]] | None = None
                            ) -> dict[str, Any]:
        """``core.datasets.check_text_rows``: a label (or labels) per row with text, at least 2 classes a task."""
        from core.datasets import check_text_rows  # core.datasets imports this module

        return check_text_rows(rows, config, known=known)

    def prediction_columns(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """``result`` is the predictor's: ``{label, score, scores}``, ``+ labels`` (multi-label) or ``{tasks}``.
        ``label`` / ``score`` / ``scores`` hold the first task's (multitask) or the top label's (multi-label)."""
        if "tasks" in result:
            first = next(iter(result["tasks"].values()))
            return {"result": {"tasks": result["tasks"]}, "label": first["label"], "score": float(first["score"]),
                    "scores": first["scores"], "tasks": result["tasks"], "labels": None}
        stored = {"label": result["label"], "score": float(result["score"]), "scores": result["scores"]}
        labels = list(result["labels"]) if "labels" in result else None
        if labels is not None:
            stored["labels"] = labels
        return {"result": stored, "label": stored["label"], "score": stored["score"], "scores": stored["scores"],
                "tasks": None, "labels": labels}

    def prediction_fields(self, prediction: Any) -> dict[str, Any]:
        """Single-task: ``label, score, scores``; multi-label: ``labels, scores``; multitask: ``tasks``."""
        result = stored_result(prediction)
        if "tasks" in result:
            return {"tasks": result["tasks"]}
        if "labels" in result:
            return {"labels": result["labels"], "scores": result["scores"]}
        return {"label": result["label"], "score": result["score"], "scores": result["scores"]}

    def export_layout(self, *, model_tasks: Mapping[str, Sequence[str]] | None, model_params: Mapping[str, Any],
                      first: Any | None, with_id: bool, with_pair: bool) -> TextClassificationExport:
        """The rows decide the shape (they are what was written); without rows, the model's params. Labels come
        from the model row, else (model deleted) from the first prediction."""
        result = stored_result(first) if first is not None else None
        if result is not None:
            multitask, multi_label = "tasks" in result, "labels" in result
        else:
            multitask = len(model_tasks or {}) > 1
            multi_label = bool(model_params.get("multi_label"))
        if model_tasks:
            tasks = {task: list(labels) for task, labels in model_tasks.items()}
            tasks = tasks if multitask else dict([next(iter(tasks.items()))])
        elif result is None:
            tasks = {}
        elif multitask:
            tasks = {task: list(one.get("scores") or {}) for task, one in result["tasks"].items()}
        else:
            tasks = {"label": list(result.get("scores") or {})}
        return TextClassificationExport(tasks=tasks, multitask=multitask, multi_label=multi_label, with_id=with_id,
                                        with_pair=with_pair)

    def label_condition(self, session: Any, label: str, model_params: Mapping[str, Any]) -> Any:
        """:func:`predicted_label_is` (multitask: the first task's label; multi-label: any of the labels)."""
        return predicted_label_is(session, label, multi_label=bool(model_params.get("multi_label")))

    def plan_evaluation(self, model_family: str, model_tasks: Mapping[str, list[str]],
                        model_params: Mapping[str, Any] | None, **columns: Any) -> Any:
        """``core.evaluation.plan_evaluation``: label columns that fit the model's shape; truth per row."""
        from core.evaluation import plan_evaluation  # imports core.options, which imports this package

        columns.pop("dataset_columns", None)  # its columns are the model's or the request's, whatever the dataset has
        return plan_evaluation(model_family, model_tasks, model_params, **columns)

    def dataset_mismatch(self, columns: Sequence[str], list_columns: Collection[str],
                         used: Sequence[str] = (), model_params: Mapping[str, Any] | None = None) -> str | None:
        """Texts and labels are plain cells: a dataset whose every column holds token lists (a CoNLL upload) or a
        plan column of token lists is refused."""
        lists = [c for c in used if c in list_columns]
        if lists:
            return (f"column {lists[0]!r} holds token lists (JSON arrays of strings, a token dataset's column); a "
                    "text-classification model reads texts and labels")
        if columns and set(columns) <= set(list_columns):
            return ("it is a token dataset (every column holds token lists); a text-classification model is "
                    "evaluated on a dataset of texts and labels")
        return None
