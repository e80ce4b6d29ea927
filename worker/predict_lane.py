"""The classification worker's side of the /predict lane (``core.predict_lane``): drainer threads that pop many
job ids at once and run them as one batch.

A batch costs one SELECT of its jobs (and one of each model), the inputs of every job submitted to the model's
batching engine together, and one transaction that claims the jobs still queued (``core.jobs.claim_queued_many``),
inserts all their predictions and marks them succeeded; then one pipelined publish wakes the waiting web requests.
Jobs go from queued to succeeded in that one transaction: a crash before it leaves them queued (the reconciler
re-sends them through Celery), a job cancelled or claimed elsewhere meanwhile is simply not claimed, so every job
is run exactly once. Whatever is not the plain case -- a model that is gone, an input the model refuses, a dataset
-- is handed to the ordinary Celery task, whose per-job path records the precise error.

Each drainer keeps the ids it popped on its own Redis list until their batch is done; the process's keeper thread
keeps its holder key fresh and puts back on the lane the ids of drainers whose process died (``core.predict_lane``).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from sqlalchemy import bindparam, select

from core import jobs, predict_lane, runtime
from core.db import db
from core.queue import CLASSIFY_TASK, announce_jobs_done, send
from core.results import insert_columns_of_jobs, stored_columns
from core.schema import Job, JobStatus, JobType, utcnow

from . import telemetry
from . import text_classification as tc
from .jobs.classify import ClassifyWork
from .lease import start_attempt
from .serving import engine_options, predictor_for, waiter

log = logging.getLogger(__name__)

# Drainer threads per worker process: while one batch's rows are written to SQL, the next one's forward passes run;
# at least one per engine stream, so every stream has a batch to run (worker.serving.engine_options)
MIN_DRAINERS = 2


class _NeverStop:
    """What the batching engine polls for a lane job: never cancelled mid-way (it is claimed only at the end)."""

    @staticmethod
    def should_stop() -> bool:
        return False


_stop = threading.Event()  # the drainers' (a warm stop: they finish the batch in hand)
_keeper_stop = threading.Event()  # the keeper's: it stops after the drainers
_drainers: list[threading.Thread] = []
_keeper: list[threading.Thread] = []
_started: dict[str, str] = {}  # redis_url and holder of the running drainers (stop lets the holder key go)
_progress: dict[int, float] = {}  # drainer number -> monotonic time it last finished a pop or a batch


def holder_name() -> str:
    """A name for this process's drainers on the lane (``host:pid:random``, unique even where two live processes
    share a host name and a pid, as containers on the host network can): their taken lists carry it."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def drainer_count() -> int:
    """How many drainers this process runs: :data:`MIN_DRAINERS`, or one per stream of its engines if more."""
    try:
        return max(MIN_DRAINERS, engine_options().streams)
    except Exception:  # noqa: BLE001 - a device that cannot be resolved fails its jobs with the reason, not here
        return MIN_DRAINERS


def start(app: Any) -> list[threading.Thread]:
    """Start this process's drainers and their keeper (none in eager mode, and only once); ``app``: the Celery app
    that takes the jobs the lane hands back."""
    settings = runtime.settings()
    if settings.celery_eager or not settings.predict_lane or any(t.is_alive() for t in _drainers + _keeper):
        return _drainers + _keeper
    _stop.clear()
    _keeper_stop.clear()
    _progress.clear()
    holder = holder_name()
    _started.update(redis_url=settings.redis_url, holder=holder)
    try:  # the holder key before the first pop: no other keeper may take this process's first ids for a dead one's
        predict_lane.mark_alive(predict_lane.client(settings.redis_url), holder)
    except redis.RedisError as exc:
        log.warning("predict lane: Redis unreachable at start (%s); the drainers retry", exc)
    _drainers[:] = [threading.Thread(target=_drain, name=f"predict-lane-{n}", daemon=True,
                                     args=(app, settings.redis_url, predict_lane.taken_key(holder, n), n))
                    for n in range(drainer_count())]
    _keeper[:] = [threading.Thread(target=_keep, args=(settings.redis_url, holder), name="predict-lane-keeper",
                                   daemon=True)]
    for thread in _drainers + _keeper:
        thread.start()
    log.info("predict lane: %d drainer(s) started", len(_drainers))
    return _drainers + _keeper


def stop(timeout_s: float = 10.0) -> None:
    """Let the drainers finish the batch in hand, then end (a warm shutdown); then the keeper, and the process's
    holder key goes at once if they all ended, so nothing of theirs waits for the key to expire."""
    _stop.set()
    for thread in _drainers:
        thread.join(timeout_s)
    _keeper_stop.set()
    for thread in _keeper:
        thread.join(timeout_s)
    if _started and not any(thread.is_alive() for thread in _drainers):
        try:
            predict_lane.release_holder(predict_lane.client(_started["redis_url"]), _started["holder"])
        except redis.RedisError:
            pass
        _started.clear()


def _keep(redis_url: str, holder: str) -> None:
    """Every ``ALIVE_EVERY_S``: keep this process's holder key fresh while its drainer threads live (their taken ids
    stay theirs, however long a batch runs), say the lane is served (the web then pushes onto it) only while some
    drainer made progress within the keys' TTL (a stuck drainer must not draw calls to a lane nobody pops), and
    put back on the lane the ids of drainers whose process died."""
    conn = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
    while not _keeper_stop.is_set():
        now = time.monotonic()
        living = any(thread.is_alive() for thread in _drainers)
        working = living and any(now - seen < predict_lane.ALIVE_TTL_S for seen in _progress.values())
        try:
            if living:
                predict_lane.mark_alive(conn, holder, serving=working)
            predict_lane.recover(conn)
        except redis.RedisError as exc:
            log.debug("predict lane: keeper could not reach Redis (%s)", exc)
        _keeper_stop.wait(predict_lane.ALIVE_EVERY_S)


def _drain(app: Any, redis_url: str, taken: str, number: int) -> None:
    # a connection of its own: BLMOVE holds it while waiting
    conn = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=2)
    failing, unsure = False, False
    while not _stop.is_set():
        try:
            if unsure:  # a Redis error may have lost a pop's reply with ids already moved: run them (again)
                predict_lane.give_back(conn, taken)
                unsure = False
            job_ids = predict_lane.pop_batch(conn, taken, wait_s=1.0)
            failing = False
            _progress[number] = time.monotonic()
        except redis.RedisError as exc:
            if not failing:  # once per outage: the web sends Celery messages meanwhile (the alive key expires)
                log.warning("predict lane: Redis unreachable (%s); retrying", exc)
            failing, unsure = True, True
            _stop.wait(1.0)
            continue
        if job_ids:
            try:
                run_batch(app, job_ids)
            except Exception:  # noqa: BLE001 - the jobs are still queued in SQL: the ordinary path takes them
                log.exception("predict lane: a batch of %d job(s) failed; handing them to Celery", len(job_ids))
                _to_celery(app, job_ids)
            _progress[number] = time.monotonic()
            try:
                conn.delete(taken)  # finished or handed to Celery: no longer this drainer's to give back
            except redis.RedisError as exc:  # they stay listed while this process lives; the next batch clears them
                log.debug("predict lane: could not clear the taken ids (%s)", exc)


def run_batch(app: Any, job_ids: list[str]) -> list[str]:
    """Classify, store and finish the jobs ``job_ids`` (those still queued) as one batch; the ids this call
    finished. Jobs it cannot run plainly are sent to the Celery ``classify`` task instead."""
    started, started_at = time.monotonic(), utcnow()
    works, handed_back = db.transact(lambda session: _read(session, job_ids), what="predict lane: read")
    by_engine: dict[int, tuple[Any, list]] = {}  # id(engine) -> (engine, [(work, chunk, encoded request)])
    predictors: dict = {}
    for work in works:
        try:
            chunk = list(work.inputs())
            engine = _predictor(predictors, work).engine
            texts, pairs = tc.chunk_texts(work.request, chunk)
            by_engine.setdefault(id(engine), (engine, []))[1].append((work, chunk, engine.encode(texts, pairs)))
        except Exception as exc:  # noqa: BLE001 - the Celery path runs it again and records the precise error
            log.info("predict lane: job %s goes to Celery (%s: %s)", work.job_id, type(exc).__name__, exc)
            handed_back.append(work.job_id)
    pending = []
    for engine, mine in by_engine.values():
        # every job of this model at once: they share the engine's next forward pass instead of trickling in
        futures = engine.enqueue([(request, _NeverStop.should_stop) for _work, _chunk, request in mine])
        pending += [(work, chunk, waiter(engine, future, **work.result_options))
                    for (work, chunk, _request), future in zip(mine, futures)]
    results = []
    for work, chunk, wait in pending:  # every job's texts are in the engine: they share its batches
        try:
            results.append((work, work.rows(chunk, wait())))
        except Exception as exc:  # noqa: BLE001 - as above
            log.info("predict lane: job %s goes to Celery (%s: %s)", work.job_id, type(exc).__name__, exc)
            handed_back.append(work.job_id)
    seconds = time.monotonic() - started
    owner = start_attempt()
    stored = db.transact(lambda session: _finish(session, results, owner, seconds, started_at),
                         what="predict lane: store")
    finished = list(stored)
    announce_jobs_done(runtime.settings().redis_url, finished, JobStatus.SUCCEEDED.value,
                       {job_id: rows for job_id, rows in stored.items() if rows is not None})
    for work, _rows in results:
        if work.job_id in stored:
            telemetry.recorder.job_finished(JobType.CLASSIFY.value, work.task_type.name, "succeeded", seconds)
    _to_celery(app, handed_back)
    return finished


def _predictor(predictors: dict, work: ClassifyWork):
    """The job's model, loaded once per batch: a model that cannot be loaded (its store unreachable, say) fails
    once for all its jobs of the batch, which go to Celery at once instead of each retrying the fetch."""
    key = (work.artifact_dir, work.quantize)
    if key not in predictors:
        try:
            predictors[key] = predictor_for(work.artifact_dir, work.quantize)
        except Exception as exc:  # noqa: BLE001 - raised again for each job of this model
            predictors[key] = exc
    found = predictors[key]
    if isinstance(found, Exception):
        raise found
    return found


def _read(session, job_ids: list[str]) -> tuple[list[ClassifyWork], list[str]]:
    """The batch's jobs that are still queued, read as an attempt reads them; and those to hand back."""
    rows = session.connection().execute(_QUEUED_CLASSIFY_JOBS, {"ids": list(job_ids)}).all()
    works, handed_back, models = [], [], {}
    for row in rows:
        try:
            work = ClassifyWork.read(session, row, resumed=False, models=models)
        except Exception as exc:  # noqa: BLE001 - a vanished model, say: the Celery path fails the job with it
            log.info("predict lane: job %s goes to Celery (%s: %s)", row.id, type(exc).__name__, exc)
            handed_back.append(row.id)
            continue
        (handed_back.append(row.id) if work.dataset is not None else works.append(work))
    return works, handed_back


# built once (per batch, building it cost about what running it does)
_QUEUED_CLASSIFY_JOBS = select(Job.id, Job.params, Job.inputs).where(
    Job.id.in_(bindparam("ids", expanding=True)), Job.status == JobStatus.QUEUED.value,
    Job.type == JobType.CLASSIFY.value)


def _finish(session, results: list[tuple[ClassifyWork, list[dict]]], owner: str, seconds: float,
            started_at) -> dict[str, list[dict] | None]:
    """Claim the jobs still queued, store their predictions and mark them succeeded: one transaction. Per job
    finished, the rows stored (``core.results.stored_columns``) when this insert stored every row of the job, else
    None (an earlier attempt's rows were kept: what the job holds is read from SQL)."""
    claimed = set(jobs.claim_queued_many(session, [work.job_id for work, _rows in results], owner,
                                         max_attempts=runtime.settings().job_max_attempts, now=started_at))
    mine = [(work, rows) for work, rows in results if work.job_id in claimed]
    columns = {work.job_id: [stored_columns(item) for item in rows] for work, rows in mine}  # stored and relayed
    inserted = insert_columns_of_jobs(session, columns)
    metrics = {work.job_id: {**work.metrics(session, seconds), "batch_jobs": len(mine)} for work, _rows in mine}
    jobs.succeed_many(session, owner, metrics)
    session.commit()
    return {job_id: shaped if inserted[job_id] == len(shaped) else None for job_id, shaped in columns.items()}


def _to_celery(app: Any, job_ids: list[str]) -> None:
    """Send the ordinary Celery message of each job (still queued in SQL: a lost send is the reconciler's)."""
    for job_id in job_ids:
        try:
            send(app, CLASSIFY_TASK, job_id)
        except Exception:  # noqa: BLE001
            log.warning("predict lane: could not send job %s to Celery; the reconciler will", job_id, exc_info=True)
