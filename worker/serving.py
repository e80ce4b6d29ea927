"""What the job types that run a saved model share: the model to serve, its quantization, one chunk submitted to
the model's batching engine."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import bindparam, select

from core import artifacts, runtime
from core.task_types import TaskType
from core.schema import TrainedModel

from .device import device
from .lease import Lease


def servable_model(session, model_id: int | None):
    """The model's ``artifact_dir`` and ``serving`` (a few columns, not the row's JSON blobs: this runs once per job);
    LookupError (the job fails with it as its message) when the model is gone or was deleted."""
    model = session.execute(_SERVABLE_MODEL, {"model_id": model_id}).first()
    if model is None:
        raise LookupError(f"model {model_id} no longer exists")
    if model.deleted_at is not None:
        raise LookupError(f"model {model_id} ({model.name}:{model.version}) was deleted: its files are gone, so this "
                          "job cannot run")
    return model


_SERVABLE_MODEL = (select(TrainedModel.artifact_dir, TrainedModel.serving, TrainedModel.deleted_at, TrainedModel.name,
                          TrainedModel.version, TrainedModel.params)
                   .where(TrainedModel.id == bindparam("model_id")))  # built once: it runs per job


def quantize_choice(requested: bool | None, model) -> bool:
    """The request's choice, else the model's serving default, else the deployment's."""
    if requested is not None:
        return requested
    default = (model.serving or {}).get("quantize")
    return bool(runtime.settings().quantize_default if default is None else default)


def engine_options(on_device: str | None = None):
    """The batching engines' options on ``on_device`` (default: this worker's device): the deployment's
    BATCH_WAIT_MS / MAX_BATCH_TOKENS / MAX_BATCH_SIZE / INFERENCE_STREAMS, each defaulting to the device's when
    unset (``ml.batching.EngineOptions.for_device``; ml reads no settings itself)."""
    from ml.batching import EngineOptions  # lazily: importing worker.tasks stays light

    settings = runtime.settings()
    return EngineOptions.for_device(on_device or device(), wait_ms=settings.batch_wait_ms,
                                    max_batch_tokens=settings.max_batch_tokens,
                                    max_batch_size=settings.max_batch_size, streams=settings.inference_streams)


_threads_for_streams: list[int] = []  # the stream count this process's torch threads were last split for


def predictor_for(artifact_dir: str, quantize: bool):
    """The model at ``artifact_dir`` (a model row's: its folder, or ``sql:<key>``, fetched into this host's cache
    first by ``core.artifacts.local_path``) loaded (once per process, ``ml.inference``'s cache) on this worker's
    device, its batching engine built with :func:`engine_options`. On the CPU the process's torch threads are split
    between the engine's streams first (each stream's forward pass gets its share of the cores)."""
    from ml.inference import get_predictor

    options = engine_options()
    if device() == "cpu" and _threads_for_streams[-1:] != [options.streams]:
        from ml.device import configure_torch_threads

        configure_torch_threads(streams=options.streams)
        _threads_for_streams[:] = [options.streams]
    return get_predictor(artifacts.local_path(runtime.settings(), artifact_dir), device(), quantize=quantize,
                         engine_options=options)


def submit(predictor, texts: list, pairs: list[str] | None, lease: Lease, **options: Any) -> Callable[[], list[dict]]:
    """Start classifying one chunk (texts, sentence pairs ``(texts[i], pairs[i])``, or a token model's pre-tokenized
    sentences) on the model's batching engine, shared with every concurrent job; returns a function that waits for
    its results (the backend's ``results``, given ``options`` such as a token model's ``aggregation_strategy``)."""
    engine = predictor.engine
    return waiter(engine, engine.submit(texts, pairs=pairs, should_stop=lease.should_stop), **options)


def waiter(engine, future, **options: Any) -> Callable[[], list[dict]]:
    """A function that waits for ``future`` (a request on ``engine``) and returns its results (the backend's
    ``results``, given ``options``)."""
    return lambda: engine.backend.results(future.result(), future.encoded, **options)


def prediction_row(index: int, text: str, result: dict, task_type: TaskType, row_id: str | None = None,
                   pair: str | None = None) -> dict:
    """A prediction row for ``core.results.insert_predictions``: the input, then the columns ``task_type`` stores for
    ``result`` (its ``prediction_columns``: the ``result`` JSON, and the columns its filters and exports read)."""
    # a pre-tokenized sentence is stored as its words joined by spaces (the words themselves are in the result); a
    # str subclass carrying more (a multiple-choice input) is stored as its plain text
    row = {"index": index, "text": str(text) if isinstance(text, str) else " ".join(text), "text_pair": pair,
           "row_id": row_id}
    row.update(task_type.prediction_columns(result))
    return row


def chunks(items: Iterator, size: int) -> Iterator[list]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
