"""Rows for web tests, written straight through core (no worker, no torch)."""
from __future__ import annotations

import hashlib

from core import jobs as job_states
from core.datasets import parse_csv
from core.results import insert_predictions
from core.db import db
from core.schema import Dataset, JobType, Prediction, TrainedModel

CSV = b"text,label,topic\ngreat movie,pos,film\nawful plot,neg,film\nlovely song,pos,music\nboring album,neg,music\n"


def make_dataset(content: bytes = CSV, name: str = "reviews", owner_id: int | None = None, shared: bool = False) -> int:
    parsed = parse_csv(content)
    with db.session() as session:
        dataset = Dataset(
            owner_id=owner_id,
            shared=shared,
            name=name,
            filename=f"{name}.csv",
            columns=parsed.columns,
            row_count=parsed.row_count,
            size_bytes=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            content=content,
        )
        session.add(dataset)
        session.flush()
        return dataset.id


def make_model(
    *, family: str = "bert", tasks: dict | None = None, name: str = "sentiment", version: int = 1, metrics=None,
    owner_id: int | None = None, params: dict | None = None,
) -> int:
    tasks = tasks or {"label": ["neg", "pos"]}
    with db.session() as session:
        model = TrainedModel(
            owner_id=owner_id,
            name=name,
            version=version,
            family=family,
            encoder="default (all-MiniLM-L6-v2)",
            labels=next(iter(tasks.values())),
            tasks=tasks,
            metrics=metrics if metrics is not None else {"accuracy": 0.9, "macro_f1": 0.88},
            params={"family": family, **(params or {})},
            artifact_dir="/nonexistent",
        )
        session.add(model)
        session.flush()
        return model.id


def make_train_job(dataset_id: int | None = None, owner_id: int | None = None, **params) -> str:
    body = {"dataset_id": dataset_id, "text_column": "text", "label_column": "label", "label_columns": ["label"],
            "family": "bert", **params}
    with db.session() as session:
        return job_states.create_job(session, JobType.TRAIN, body, dataset_id=dataset_id, owner_id=owner_id).id


def make_classify_job(model_id: int, texts: list[str], owner_id: int | None = None) -> str:
    with db.session() as session:
        return job_states.create_job(
            session, JobType.CLASSIFY, {"model_id": model_id, "texts": texts}, model_id=model_id, owner_id=owner_id
        ).id


def make_dataset_classify_job(
    model_id: int, dataset_id: int, *, text_column: str = "text", id_column: str | None = None
) -> str:
    """A classify job on a stored dataset, with the params ``ClassifyRequest.job_params`` would store."""
    params = {"model_id": model_id, "dataset_id": dataset_id, "text_column": text_column, "text_count": 4}
    if id_column is not None:
        params["id_column"] = id_column
    with db.session() as session:
        return job_states.create_job(session, JobType.CLASSIFY, params, model_id=model_id, dataset_id=dataset_id).id


def finished(job_id: str, items: list[dict], **kwargs) -> str:
    """Start ``job_id``, store ``items`` through ``core.results.insert_predictions`` and succeed it."""
    start(job_id)
    with db.session() as session:
        insert_predictions(session, job_id, items)
    succeed(job_id, **kwargs)
    return job_id


def start(job_id: str, worker: str = "w1") -> None:
    with db.session() as session:
        claim = job_states.claim(session, job_id, worker, lease_seconds=60, max_attempts=3)
        assert claim.outcome is job_states.ClaimOutcome.CLAIMED


def progress(job_id: str, value: float, worker: str = "w1") -> None:
    with db.session() as session:
        assert job_states.heartbeat(session, job_id, worker, value)


def succeed(job_id: str, worker: str = "w1", **kwargs) -> None:
    with db.session() as session:
        assert job_states.succeed(session, job_id, worker, **kwargs)


def fail(job_id: str, message: str) -> None:
    with db.session() as session:
        assert job_states.fail(session, job_id, message)


def add_single_task_predictions(job_id: str, texts: list[str], order: list[int] | None = None) -> None:
    with db.session() as session:
        for i in order if order is not None else range(len(texts)):
            pos = 0.8 if i % 2 == 0 else 0.3
            session.add(
                Prediction(
                    job_id=job_id,
                    index=i,
                    text=texts[i],
                    label="pos" if pos > 0.5 else "neg",
                    score=max(pos, 1 - pos),
                    scores={"neg": 1 - pos, "pos": pos},
                )
            )


def add_multitask_predictions(job_id: str, texts: list[str]) -> None:
    with db.session() as session:
        for i, text in enumerate(texts):
            tasks = {
                "label": {"label": "pos", "score": 0.7, "scores": {"neg": 0.3, "pos": 0.7}},
                "topic": {"label": "film", "score": 0.6, "scores": {"film": 0.6, "music": 0.4}},
            }
            session.add(
                Prediction(job_id=job_id, index=i, text=text, label="pos", score=0.7, scores=tasks["label"]["scores"],
                           tasks=tasks)
            )
