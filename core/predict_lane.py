"""The /predict lane: small classify jobs handed to the classification workers through one Redis list instead of
one Celery message each.

A ``POST /api/v1/predict`` call still commits its job row first (SQL is the truth); then, while some classification
worker's lane drainer is alive (it keeps :data:`ALIVE_KEY` fresh), the web pushes the job id on :data:`LANE_KEY`
instead of sending a Celery message. A drainer pops many ids at once and runs them as one batch: one SELECT, the
texts of every job through the model's batching engine together, then one transaction that claims, stores and
finishes them all (``worker.predict_lane``). Per request that saves the Celery message (kombu's envelope, the ack,
the pool's dispatch) and four SQL round trips.

Nothing is lost if Redis drops an id or a drainer dies with ids popped: the job row stays ``queued`` and the
reconciler re-sends it as an ordinary Celery message (``core.jobs.lost_jobs``); a duplicate meets the claim's
``status = 'queued'`` condition and is dropped. With no drainer alive the web sends the usual Celery message.
Jobs queued for later (``POST /api/v1/jobs/classify``) always go through Celery.
"""
from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger(__name__)

LANE_KEY = "bertqueue:predict-lane"  # a list of job ids, pushed by the web, popped by drainers
ALIVE_KEY = "bertqueue:predict-lane:alive"  # set (with a TTL) by every live drainer
ALIVE_TTL_S = 15  # a drainer refreshes it every ALIVE_EVERY_S; a dead one stops being trusted after this
ALIVE_EVERY_S = 5.0
ALIVE_CACHE_S = 1.0  # how long the web trusts its last look at ALIVE_KEY
MAX_LANE_INPUTS = 64  # a /predict call with more inputs than this is an ordinary Celery job
BATCH_JOBS = 64  # job ids one drainer pops at once

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()
_alive_seen: dict[str, float] = {}  # redis_url -> monotonic time ALIVE_KEY was last seen


def client(redis_url: str) -> redis.Redis:
    """This process's shared client of ``redis_url`` (short timeouts: the lane is an optimisation, never a wait)."""
    with _clients_lock:
        found = _clients.get(redis_url)
        if found is None:
            found = _clients[redis_url] = redis.Redis.from_url(redis_url, socket_timeout=1.0,
                                                                socket_connect_timeout=0.5)
        return found


def push(redis_url: str, job_id: str) -> bool:
    """Hand committed job ``job_id`` to a lane drainer; False (the caller sends a Celery message instead) when no
    drainer is alive or Redis does not answer. Never raises."""
    try:
        seen = _alive_seen.get(redis_url)
        if seen is None or time.monotonic() - seen > ALIVE_CACHE_S:
            if not client(redis_url).exists(ALIVE_KEY):
                _alive_seen.pop(redis_url, None)
                return False
            _alive_seen[redis_url] = time.monotonic()
        client(redis_url).rpush(LANE_KEY, job_id)
        return True
    except redis.RedisError as exc:
        log.debug("predict lane: could not push job %s (%s)", job_id, exc)
        return False


def mark_alive(conn: redis.Redis) -> None:
    """A drainer says it is there (every ``ALIVE_EVERY_S``)."""
    conn.set(ALIVE_KEY, "1", ex=ALIVE_TTL_S)


def pop_batch(conn: redis.Redis, *, limit: int = BATCH_JOBS, wait_s: float = 1.0) -> list[str]:
    """Up to ``limit`` job ids, waiting at most ``wait_s`` for the first; [] when none came."""
    first = conn.blpop([LANE_KEY], timeout=wait_s)
    if first is None:
        return []
    ids = [first[1]]
    if limit > 1:
        try:  # LPOP with a count needs Redis >= 6.2; on an error the first id is still this drainer's to run
            ids.extend(conn.lpop(LANE_KEY, limit - 1) or [])
        except redis.RedisError as exc:
            log.debug("predict lane: could not pop more ids (%s)", exc)
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
