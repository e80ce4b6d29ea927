"""The Celery side that web and worker share: one configuration, task names, and sending by name.

The web never imports the worker (or torch): it sends messages by task name, carrying the job id only.
"""
from __future__ import annotations

import json
import logging
import threading

import redis
from celery import Celery

from .config import Settings
from .schema import JobType

TRAIN_TASK = "bertqueue.train"
CLASSIFY_TASK = "bertqueue.classify"
EVALUATE_TASK = "bertqueue.evaluate"
RECONCILE_TASK = "bertqueue.reconcile"

TRAIN_QUEUE = "train"
CLASSIFY_QUEUE = "classify"

TASK_FOR_JOB_TYPE = {JobType.TRAIN.value: TRAIN_TASK, JobType.CLASSIFY.value: CLASSIFY_TASK,
                     JobType.EVALUATE.value: EVALUATE_TASK}
# An evaluation is inference over a labelled dataset: it shares the classify workers and their batching engines.
# The reconciler runs as its own process (worker.reconciler); its task exists to run one pass on demand.
QUEUE_FOR_TASK = {TRAIN_TASK: TRAIN_QUEUE, CLASSIFY_TASK: CLASSIFY_QUEUE, EVALUATE_TASK: CLASSIFY_QUEUE,
                  RECONCILE_TASK: CLASSIFY_QUEUE}

# A training's own deadline (worker.lease.Lease) stops it at TRAIN_TIME_LIMIT_S; Celery's hard limit kills the
# prefork child only if the work is stuck this much longer (a hung C call never polls its deadline).
HARD_TIME_LIMIT_GRACE_S = 60.0

log = logging.getLogger(__name__)

# Worker remote-control command (celery.worker.control): drop a deleted model from the predictor cache.
DROP_MODEL_COMMAND = "bertqueue_drop_model"
BROADCAST_CONNECT_S = 2.0

JOB_DONE_CHANNEL_PREFIX = "bertqueue:job-done:"  # + job id; a worker publishes "succeeded", "failed" or "ended"


def celery_config(settings: Settings) -> dict:
    """Celery settings: JSON only, late acks, redelivery on worker loss, one message prefetched at a time."""
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": broker_transport_options(settings.broker_visibility_timeout_s),
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_ignore_result": True,  # results live in SQL
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_routes": {name: {"queue": queue} for name, queue in QUEUE_FOR_TASK.items()},
        "task_default_queue": CLASSIFY_QUEUE,
        # Only the prefork training worker can enforce a hard limit (thread pools cannot kill a thread); the
        # classify worker relies on the cooperative deadline alone.
        "task_annotations": {TRAIN_TASK: {"time_limit": settings.train_time_limit_s + HARD_TIME_LIMIT_GRACE_S}},
        "task_always_eager": settings.celery_eager,
        "task_eager_propagates": False,
        "worker_hijack_root_logger": False,
    }


def broker_transport_options(visibility_timeout_s: float) -> dict:
    """Redis transport options: an unacked message is redelivered ``visibility_timeout_s`` after delivery.

    A training that runs longer than that gets its message back while still running: the copy meets the job's
    fresh lease and is dropped (core.jobs.claim), so it is neither run twice nor failed. kombu looks for overdue
    messages every ``interval x throttle`` seconds (100 s by default); a short timeout gets a matching sweep.
    """
    sweep_s = min(100.0, max(1.0, visibility_timeout_s / 10))
    interval = min(10.0, sweep_s)
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": max(1, round(sweep_s / interval)),
    }


def make_celery(settings: Settings, main: str = "bertqueue") -> Celery:
    """A Celery app configured from ``settings`` (used by the web as a client and by the worker)."""
    app = Celery(main)
    app.conf.update(celery_config(settings))
    return app


def send(app: Celery, task_name: str, job_id: str) -> None:
    """Send ``task_name(job_id)``. In eager mode, run it in-process if the task is registered here."""
    if app.conf.task_always_eager and task_name in app.tasks:
        app.tasks[task_name].apply(args=[job_id])
        return
    app.send_task(task_name, args=[job_id], queue=QUEUE_FOR_TASK.get(task_name))


def enqueue_job(app: Celery, job_id: str, job_type: str) -> None:
    """Send the message for a committed job row."""
    send(app, TASK_FOR_JOB_TYPE[job_type], job_id)


def broadcast_model_deleted(app: Celery, model_dir: str) -> bool:
    """Ask every running worker to drop the model saved at ``model_dir`` from its predictor cache (the remote-control
    command ``DROP_MODEL_COMMAND``, registered by ``worker.tasks``; no reply awaited). Sent through the Celery app
    only: the web imports no worker code.

    Best effort: True if sent. Skipped in eager mode (no workers: the process that ran the jobs evicts a model whose
    directory is gone on its next lookup, as every worker does); a broker that does not answer within
    ``BROADCAST_CONNECT_S`` is given up on (False), since kombu would otherwise retry the publish for ever.
    """
    if app.conf.task_always_eager:
        return False
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0.2, interval_max=0.2, timeout=BROADCAST_CONNECT_S)
        app.control.broadcast(DROP_MODEL_COMMAND, arguments={"model_dir": model_dir}, connection=connection)
    return True


def job_done_channel(job_id: str) -> str:
    """The Redis pub/sub channel on which a job's end is announced (a hint: SQL holds the truth)."""
    return JOB_DONE_CHANNEL_PREFIX + job_id


_publishers: dict[str, redis.Redis] = {}
_publishers_lock = threading.Lock()


def announce_job_done(redis_url: str, job_id: str, status: str) -> None:
    """Publish ``status`` on the job's channel. Best effort: a waiter that misses it re-reads SQL, so only latency
    is lost; never raises."""
    announce_jobs_done(redis_url, [job_id], status)


def announce_jobs_done(redis_url: str, job_ids: list[str], status: str,
                       stored: dict[str, list[dict]] | None = None) -> None:
    """:func:`announce_job_done` for several jobs, in one round trip (a pipeline). ``stored``: per job, the
    prediction rows its success committed (``core.results.stored_columns``, every row of the job), relayed with
    the announcement when small (:data:`RELAYED_ROWS_MAX_BYTES`) so that the waiting ``/predict`` call answers
    without reading them back."""
    if not job_ids:
        return
    with _publishers_lock:
        client = _publishers.get(redis_url)
        if client is None:
            client = _publishers[redis_url] = redis.Redis.from_url(
                redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
            )
    try:
        with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.publish(job_done_channel(job_id), done_message(status, (stored or {}).get(job_id)))
            pipe.execute()
    except redis.RedisError as exc:
        log.debug("could not announce jobs %s: %s", job_ids[:3], exc)


# A job's stored rows ride along with its announcement up to this size (every web process receives every
# announcement, and parses the one it waits for); larger ones are read from SQL.
RELAYED_ROWS_MAX_BYTES = 16_384


def done_message(status: str, rows: list[dict] | None = None) -> str:
    """The announcement of a job's end: its status alone, or ``{"status", "rows"}`` as JSON with the rows the
    job's success committed (when given and at most :data:`RELAYED_ROWS_MAX_BYTES`)."""
    if rows is not None:
        try:  # ASCII (other characters escaped): its length is its size, and any text (a lone surrogate too) encodes
            message = json.dumps({"status": status, "rows": rows}, separators=(",", ":"))
        except (TypeError, ValueError):  # a cell JSON cannot hold: the waiting call reads the rows from SQL
            return status
        if len(message) <= RELAYED_ROWS_MAX_BYTES:
            return message
    return status


def read_done_message(message: str) -> tuple[str | None, list[dict] | None]:
    """(status, relayed rows or None) of an announcement (:func:`done_message`); (None, None) if unreadable."""
    if not message.startswith("{"):
        return message, None
    try:
        found = json.loads(message)
        status, rows = found["status"], found["rows"]
    except (ValueError, TypeError, KeyError):
        return None, None
    if not isinstance(status, str) or not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        return None, None
    return status, rows
