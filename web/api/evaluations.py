"""Evaluation jobs: score a saved model on a labelled dataset (accuracy, macro-F1, per-class metrics, confusion
matrix), on the classify queue and workers."""
from __future__ import annotations

from core.specs import EvaluateRequest

from .. import services
from ..auth import current
from . import bp
from .apidoc import QUEUED, documented
from .jobs import accepted

EVALUATE_DESCRIPTION = (
    "Columns left out default to the ones the model was trained on. Once the job has succeeded its `metrics` hold "
    "`accuracy`, `macro_f1`, `per_class` (`{label: {precision, recall, f1, support}}`), `confusion_matrix` "
    "(`{labels, matrix}`, rows = true label, columns = predicted; it sums to `examples`), `examples` (rows scored) "
    "and `skipped` (`empty_text`, `no_label`); a multitask model's per task under `tasks`; a multi-label model's "
    "subset accuracy (`accuracy`), `micro_f1`, `macro_f1` and per-label metrics."
)


@bp.post("/api/v1/jobs/evaluate")
@documented(
    "Queue an evaluation job: score a model on a labelled dataset",
    description=EVALUATE_DESCRIPTION,
    body=EvaluateRequest,
    creates_job=True,
    responses={
        202: QUEUED,
        404: "unknown model (by id or by name) or dataset",
        409: "the model was deleted (model_deleted)",
        422: "invalid body (model_id and model both or neither given, a model reference that is not NAME or "
        "NAME:VERSION, ...); label columns that do not fit the model (label_columns_mismatch), a pair column for a "
        "model of single texts (text_pair_mismatch), a dataset of the other task type (dataset_task_mismatch: a "
        "dataset of texts for a token model, a token dataset or a column of token lists for a text model), a "
        "column the dataset lacks (unknown_column), labels the model "
        "does not know (unknown_labels; error.labels lists them) or a 0/1 column holding something else "
        "(invalid_label)",
    },
)
def create_evaluate_job(body: EvaluateRequest):
    return accepted(services.start_evaluation(current(), body))
