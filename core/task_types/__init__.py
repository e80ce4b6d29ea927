"""Task types: the shape of a problem (text classification, token classification, ...), each declared once.

A task type is one module of this package that declares a :class:`TaskType` subclass and registers it with
:func:`register` (as redash's query runners do); the built-in modules are imported at the bottom of this file, so
adding a task type means adding its module and one line to ``_BUILT_IN``. Everything here is torch-free and
Flask-free: the web (validation, serialisation, exports, filters), ``core`` and the worker all read the same
declaration. The torch side of a task type (its head, its ``results``) lives in ``models`` / ``ml``.

What a task type declares (see :class:`TaskType`):

- who it is: ``name`` (the API's ``task_type`` value), Hugging Face's ``pipeline_tag``, a ``label`` for forms;
- its Hugging Face checkpoints: ``hf`` (an :class:`HFHead`: the transformers class of each family and its head's
  layers, which ``core.hf_format`` downloads and imports by), :meth:`TaskType.hf_export_problem` (why a model of
  its own is no plain checkpoint) and :meth:`TaskType.hf_import_fields` (what an imported model's config adds);
- training: its default early-stopping ``metric`` and the ``metrics`` it reports, the request fields it reads
  (``request_fields``); options are tied to task types by ``core.options.Opt.task_types``;
- predictions: the JSON stored per prediction (:meth:`TaskType.prediction_columns`, the ``predictions.result``
  column plus any legacy columns it keeps filled), how a stored row is serialised for the API
  (:meth:`TaskType.prediction_fields`) and exported (:meth:`TaskType.export_layout`), and the SQL condition of a
  ``?label=`` filter (:meth:`TaskType.label_condition`, whose docstring says how it is indexed);
- evaluation: its truth per dataset row (:meth:`TaskType.plan_evaluation`) and which datasets can give it
  (:meth:`TaskType.dataset_mismatch`);
- where the built-in text logic does not fit (question answering, multiple choice): a training request's columns
  (:meth:`TaskType.resolve_columns`: defaults and checks before any data is read; :meth:`TaskType.text_columns`:
  the columns its inputs are built from; :meth:`TaskType.dataset_columns`: what a given dataset is read by;
  :meth:`TaskType.training_sequences`: how many sequences training on a dataset encodes) and a classify job's
  inputs (:meth:`TaskType.classify_columns`: the columns a dataset job reads by default;
  :meth:`TaskType.check_classify_dataset`, :meth:`TaskType.classify_inputs`);
- what a classify request may send a model of it (:meth:`TaskType.check_classify_request`: its own rules;
  :meth:`TaskType.misdirected`: the error for its own inputs and result options sent to a model of another task
  type; :func:`check_classify_request` walks them all), whether a dataset's cells are JSON word lists
  (``reads_words_in_cells``), and how an evaluate job's params are read back (:meth:`TaskType.evaluation_plan_from_params`).

The shared machinery (``web.services``, ``core.options``, ``worker.jobs``) reads these hooks and names no task type:
a new one touches its own modules plus one line in each registry table (``_BUILT_IN`` here, ``ml.inference.BACKENDS``,
``ml.loop.TASK_DATA``, ``ml.evaluation.EVALUATORS``).
"""
from __future__ import annotations

import importlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

DEFAULT = "text-classification"  # the task type of every request, job, model and prediction that names none

# the modules that register the built-in task types, in the order forms list them
_BUILT_IN = ("core.task_types.text_classification", "core.task_types.token_classification",
             "core.task_types.question_answering", "core.task_types.multiple_choice")


class ExportLayout(Protocol):
    """A classify job's export columns, fixed before the first row is written. A layout whose CSV has other lines
    than its JSONL objects (token classification: a line per entity) also has ``csv_columns`` and ``csv_rows(p) ->
    [dict]`` (``web.exports`` uses them when present)."""

    @property
    def columns(self) -> list[str]:
        """Column names in order (the CSV header; the keys of every JSONL object)."""

    def row(self, prediction: Any) -> dict:
        """One prediction (a row with the columns of ``core.schema.Prediction``) as a dict keyed by
        :attr:`columns`."""


@dataclass(frozen=True)
class HFHead:
    """How the ``bert`` / ``distilbert`` models of a task type are plain transformers checkpoints, read by
    ``core.hf_format`` for downloads and imports alike (a family left out has no transformers equivalent).

    ``layers``: per family, the head's linear layers as transformers names them (the platform's are
    ``head.<name>``), in order, each with its output size: ``"labels"`` (one per label), ``"hidden"`` (the encoder's
    width) or a number. Every layer reads the encoder's width. ``pooler``: the families whose checkpoint keeps BERT's
    pooler (a sequence head pools through it; a token head has none). ``dropout_field``: per family, the
    ``config.json`` field of the head's own dropout (absent: the head uses the encoder's). ``problem_type``: what
    ``config.json`` says (an import accepts it or none). ``task``: the task name an imported model's labels are
    stored under. ``head_options``: per family, the head options of an imported model beyond the common ones.
    ``labels``: the labels every imported model gets, whatever its ``config.json`` says (None: its ``id2label``;
    multiple choice, whose head has one output, names choice positions); a download's ``config.json`` then names
    none.
    """

    architectures: Mapping[str, str]
    layers: Mapping[str, Mapping[str, str | int]]
    pooler: frozenset[str] = frozenset()
    dropout_field: Mapping[str, str] = field(default_factory=dict)
    problem_type: str | None = None
    task: str = "label"
    head_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None


class RequestError(ValueError):
    """A classify request a model of this task type cannot take: the API answers ``status`` with ``code`` and
    ``message``."""

    def __init__(self, code: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class TaskType:
    """The base of every task type: override what differs, keep the class attributes' meaning.

    A subclass is registered with :func:`register`; one instance serves every request (keep it stateless).
    """

    name: ClassVar[str]  # the API's task_type value, e.g. "text-classification"
    pipeline_tag: ClassVar[str]  # Hugging Face's pipeline tag (a model card's metadata)
    label: ClassVar[str]  # what forms show
    default_metric: ClassVar[str]  # what picks the best checkpoint and drives early stopping by default
    metrics: ClassVar[tuple[str, ...]]  # the validation metrics it reports (and a request's ``metric`` may name)
    # the data fields of a training request it reads (options are tied to task types by ``Opt.task_types``)
    request_fields: ClassVar[frozenset[str]] = frozenset()

    # the model families it trains (None: every family)
    families: ClassVar[tuple[str, ...] | None] = None
    # how its bert / distilbert models are plain transformers checkpoints (None: never)
    hf: ClassVar[HFHead | None] = None
    # whether a classify job's dataset cells are JSON arrays of words (pre-tokenized sentences), not texts
    reads_words_in_cells: ClassVar[bool] = False
    # training options it trains with unless a request sets them, instead of the option's declared default (e.g.
    # question answering's longer windows); ``core.options`` applies them, forms leave such fields empty
    training_defaults: ClassVar[Mapping[str, Any]] = {}

    # ------------------------------------------------------------------------------------ Hugging Face checkpoints

    def hf_export_problem(self, config: Mapping[str, Any]) -> str | None:
        """Why a model of this task type (its ``bertqueue_config.json``), of a family ``hf`` declares, is still no
        plain transformers checkpoint giving the same results; None when it is one. The family, the encoder and
        text normalization are checked by ``core.hf_format`` for every task type."""
        return None

    def hf_import_fields(self, labels: Sequence[str], max_length: int) -> dict[str, Any]:
        """What the ``bertqueue_config.json`` of an imported checkpoint with ``labels`` (in id order) adds to the
        fields every model has (``models.io``)."""
        return {}

    # ------------------------------------------------------------------------------------ training data

    def resolve_columns(self, config: Any) -> bool:
        """Resolve a training config's data columns for this task type in place (defaults, ``label_columns``) and
        check them (ValueError: a 422), before any data is read; False leaves it to ``core.options``' own checks
        (text and token classification)."""
        return False

    def text_columns(self, config: Any) -> list[str]:
        """Every column a training config's (``core.options.TrainConfig``) inputs are built from, as the request
        names them (``TrainConfig.text_columns`` asks this). By default (text classification): the text column or
        the template's columns, then the pair column."""
        from core.options import template_columns  # lazily: core.options imports this package

        columns = template_columns(config.text_template) if config.text_template else [config.text_column]
        return [*columns, *([config.text_pair_column] if config.text_pair_column else [])]

    def dataset_columns(self, config: Any, columns: Sequence[str]) -> tuple[list[str], list[str]]:
        """(text columns, label columns) that training on a dataset with ``columns`` reads (checked to exist before
        any row is read; a task type whose defaults depend on the dataset resolves them here)."""
        return config.text_columns(), list(config.label_columns)

    def training_sequences(self, config: Any, columns: Sequence[str], row_count: int,
                           rows: Iterable[Mapping[str, Any]]) -> int:
        """How many sequences (encoder inputs of at most ``max_length`` tokens) training ``config`` on a dataset of
        ``row_count`` rows with ``columns`` encodes per epoch (a lower bound where only a tokenizer could say): what
        the training-work limit (``MAX_TRAINING_WORK``) counts, before any job is queued. ``rows``: the dataset's
        rows, streamed (loaded only when iterated), for a task type whose rows become a number of sequences only
        they tell (question answering's windows); it must not need a tokenizer. Raises
        ``core.datasets.DatasetError`` (422) for a row it cannot read. By default one sequence per row."""
        return row_count

    def check_training_rows(self, rows: Any, config: Any, *, known: Mapping[str, set[str]] | None = None
                            ) -> dict[str, Any]:
        """Validate a training dataset's rows (dicts of cells, read once, in bounded memory) for ``config`` (a
        ``core.options.TrainConfig`` whose columns exist); returns ``{task: Counter of labels}``. ``known``: the
        training data's label sets, which a separate validation dataset's labels must stay within. Raises
        ``core.datasets.DatasetError`` (422) for bad rows."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ classification

    def check_classify_dataset(self, columns: Sequence[str], request: Any, model_params: Mapping[str, Any],
                               rows: Iterable[Mapping[str, str]] | None = None) -> bool:
        """Check a classify request that reads a dataset with ``columns`` (``core.specs.ClassifyRequest``) against
        the model's ``params`` (and its ``rows``, streamed, when the task type must read them); raise
        ``core.datasets.DatasetError`` (422) when it cannot be read. Return True when done, False to leave the
        columns to the web's text-column defaults and checks (:meth:`classify_columns`) -- after checks of its own,
        or none."""
        return False

    def classify_columns(self, request: Any, model_id: Any, model_params: Mapping[str, Any]) -> dict[str, Any]:
        """The columns a dataset classify request (``core.specs.ClassifyRequest``) leaves out, read as the model
        (``model_id``, trained with ``model_params``) was trained: ``{field: column}`` to complete the request with
        (empty: nothing to add). By default (text classification): its text column or ``text_template``, and for a
        pair model its ``text_pair_column``; :class:`RequestError` ``missing_column`` when the model records no
        text column (an imported model)."""
        update: dict[str, Any] = {}
        if request.text_column is None and request.text_template is None:
            if model_params.get("text_template") is not None:
                update["text_template"] = model_params["text_template"]
            elif model_params.get("text_column") is not None:
                update["text_column"] = model_params["text_column"]
            else:
                raise RequestError("missing_column", f"give text_column: model {model_id} does not record the "
                                   "column it was trained on")
        if request.text_pair_column is None and model_params.get("text_pair_column") is not None:
            update["text_pair_column"] = model_params["text_pair_column"]
        return update

    def classify_inputs(self, request: Any, dataset: tuple[bytes, str] | None,
                        model_params: Mapping[str, Any]) -> Any:
        """Every input of a classify job as ``(index, text, text_pair, row id)`` (``text``: what the model's backend
        encodes and the prediction stores -- a ``str``, or a subclass carrying more), from the request or the
        dataset's (content, format); None: the worker's text and token inputs."""
        return None

    def check_classify_request(self, request: Any, model_id: Any, model_params: Mapping[str, Any]) -> None:
        """This task type's own rules for a classify or predict request (``core.specs``) to model ``model_id``
        (trained with ``model_params``), after other task types' inputs were refused (:func:`check_classify_request`);
        raise :class:`RequestError`. By default (text classification): pairs go to a model trained on sentence
        pairs (``text_pair_column``), single texts to any other."""
        trained_on_pairs = model_params.get("text_pair_column") is not None
        if trained_on_pairs and not request.with_pairs:
            source = "text_pair_column" if request.from_dataset else "pairs"
            raise RequestError("pairs_required", f"model {model_id} was trained on sentence pairs: give "
                               f"{source} ([text, text_pair] per input) instead of single texts")
        if request.with_pairs and not trained_on_pairs:
            raise RequestError("pairs_not_supported", f"model {model_id} classifies single texts: pairs are "
                               "for models trained with a text_pair_column")

    def misdirected(self, request: Any, model_id: Any, model_task_type: str) -> RequestError | None:
        """The error for a classify request to model ``model_id``, of another task type (``model_task_type``),
        that sends inputs or result options only this task type takes; None when it sends none (text
        classification's texts and pairs are everyone's)."""
        return None

    # ------------------------------------------------------------------------------------ predictions

    def prediction_columns(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """The ``predictions`` columns for one result of the model's ``results`` (``ml``): ``result`` (the JSON
        stored for this task type) plus whatever other columns the task type keeps filled."""
        raise NotImplementedError

    def prediction_fields(self, prediction: Any) -> dict[str, Any]:
        """The API fields of one stored prediction after ``index``, ``text`` and ``text_pair``, in order (``id``
        follows them). ``prediction.result`` may be None for rows stored before the column existed."""
        raise NotImplementedError

    def export_layout(self, *, model_tasks: Mapping[str, Sequence[str]] | None, model_params: Mapping[str, Any],
                      first: Any | None, with_id: bool, with_pair: bool) -> ExportLayout:
        """The export columns of a classify job: from the model's ``{task: labels}`` and training params (None,
        {}: the model is deleted) and the job's first prediction (None: the job has none)."""
        raise NotImplementedError

    def label_condition(self, session: Any, label: str, model_params: Mapping[str, Any]) -> Any:
        """The SQL condition of ``GET .../predictions?label=``: the predictions that predicted ``label``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ evaluation

    def plan_evaluation(self, model_family: str, model_tasks: Mapping[str, list[str]],
                        model_params: Mapping[str, Any] | None, **columns: Any) -> Any:
        """Resolve an evaluation request against a model: what each dataset row's truth is (a plan the worker
        reads back from the job's params). ``columns``: the request's columns, and ``dataset_columns`` (the
        dataset's, for a task type whose columns default by what the dataset has)."""
        raise NotImplementedError

    def evaluation_plan_from_params(self, params: Mapping[str, Any]) -> Any:
        """The evaluation plan (:meth:`plan_evaluation`'s) stored in an evaluate job's ``params``."""
        from core.evaluation import EvaluationPlan  # lazily: core.evaluation imports this package

        return EvaluationPlan.from_params(params)

    def dataset_mismatch(self, columns: Sequence[str], list_columns: Collection[str],
                         used: Sequence[str] = (), model_params: Mapping[str, Any] | None = None) -> str | None:
        """Why a dataset cannot give this task type's evaluation data, or None when it can. ``columns``: the
        dataset's columns; ``list_columns``: those whose every filled cell is a JSON array of strings (a token
        dataset's tokens and tags: its profile's ``list_stats``, ``core.datasets.Profiler``); ``used``: the columns
        an evaluation plan reads (empty: judge the dataset as a whole, as the model page's list does);
        ``model_params``: the model's training params (how it was trained may decide what data fits)."""
        raise NotImplementedError


_REGISTRY: dict[str, TaskType] = {}


def register(cls: type[TaskType]) -> type[TaskType]:
    """Class decorator: make ``cls`` (a :class:`TaskType`) known under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"task type {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get(name: str | None) -> TaskType:
    """The task type called ``name`` (None: the default); KeyError for an unknown name."""
    return _REGISTRY[name or DEFAULT]


def names() -> tuple[str, ...]:
    """Every registered task type's name, in registration order (the default first)."""
    return tuple(_REGISTRY)


def check_classify_request(request: Any, model_params: Mapping[str, Any] | None) -> None:
    """Check what a classify or predict request sends against its model (trained with ``model_params``): every
    other task type refuses its own inputs and result options (:meth:`TaskType.misdirected`), the model's task
    type applies its rules (:meth:`TaskType.check_classify_request`); :class:`RequestError` for the first that
    fails. The task types are asked newest first, the model's own in its place: its rules (a question-answering
    model's ``questions_required``) then cover the inputs of the task types registered before it."""
    kind = of_params(model_params)
    for other in reversed(_REGISTRY.values()):
        if other is kind:
            kind.check_classify_request(request, request.model_id, model_params or {})
            continue
        error = other.misdirected(request, request.model_id, kind.name)
        if error is not None:
            raise error


def of_params(params: Mapping[str, Any] | None) -> TaskType:
    """The task type recorded in a job's or a model's params (older rows record none: the default)."""
    return get((params or {}).get("task_type"))


for _module in _BUILT_IN:
    importlib.import_module(_module)
