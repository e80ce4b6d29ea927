"""The /predict lane: small classify jobs handed to the classification workers through one Redis list instead of
one Celery message each.

A ``POST /api/v1/predict`` call still commits its job row first (SQL is the truth); then, while some classification
worker's lane drainer is alive (it keeps :data:`ALIVE_KEY` fresh), the web pushes the job id on :data:`LANE_KEY`
instead of sending a Celery message. A drainer pops many ids at once and runs them as one batch: one SELECT, the
texts of every job through the model's batching engine together, then one transaction that claims, stores and
finishes them all (``worker.predict_lane``). Per request that saves the Celery message (kombu's envelope, the ack,
the pool's dispatch) and four SQL round trips.

A drainer moves the ids it pops onto a list of its own (:func:`taken_key`) and deletes that list once their batch is
finished or handed to Celery; its worker process keeps a holder key fresh (:func:`mark_alive`). When a process dies
with ids taken (SIGKILL, the machine gone), its holder key expires within :data:`ALIVE_TTL_S` and any live drainer
process puts the ids back at the front of the lane (:func:`recover`), so the waiting calls are answered by another
worker (or the killed one's restart) within about 20 s instead of waiting for the reconciler. Nothing is lost either
if Redis drops an id: the job row stays ``queued`` and the reconciler re-sends it as an ordinary Celery message
(``core.jobs.lost_jobs``). A duplicate meets the claim's ``status = 'queued'`` condition and is dropped. With no
drainer alive the web sends the usual Celery message. Jobs queued for later (``POST /api/v1/jobs/classify``) always
go through Celery.
"""
from __future__ import annotations

import logging
import threading
import time

import redis

log = logging.getLogger(__name__)

LANE_KEY = "bertqueue:predict-lane"  # a list of job ids, pushed by the web, popped by drainers
ALIVE_KEY = "bertqueue:predict-lane:alive"  # set (with a TTL) by every live drainer
TAKEN_PREFIX = "bertqueue:predict-lane:taken:"  # + holder/drainer: the ids one drainer popped and has not finished
HOLDER_PREFIX = "bertqueue:predict-lane:holder:"  # + holder: set (with a TTL) while that worker process lives
ALIVE_TTL_S = 15  # a drainer refreshes it every ALIVE_EVERY_S; a dead one stops being trusted after this
ALIVE_EVERY_S = 5.0
ALIVE_CACHE_S = 1.0  # how long the web trusts its last look at ALIVE_KEY
MAX_LANE_INPUTS = 64  # a /predict call with more inputs than this is an ordinary Celery job
# ... and one whose inputs hold more characters than this: a drainer reads a whole batch's inputs at once, so a
# batch holds at most BATCH_JOBS x 64 Ki characters (4 Mi), not 64 x 64 texts of MAX_TEXT_CHARS (80 Mi)
MAX_LANE_CHARS = 65_536
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


def fits(inputs: list) -> bool:
    """Whether a job of ``inputs`` (texts, pairs, questions, pre-tokenized sentences) is small enough for the lane:
    at most :data:`MAX_LANE_INPUTS` inputs of at most :data:`MAX_LANE_CHARS` characters in all."""
    if len(inputs) > MAX_LANE_INPUTS:
        return False
    total, left = 0, list(inputs)
    while left:
        item = left.pop()
        if isinstance(item, str):
            total += len(item)
            if total > MAX_LANE_CHARS:
                return False
        elif isinstance(item, dict):
            left.extend(item.values())
        elif isinstance(item, (list, tuple)):
            left.extend(item)
    return True


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


def mark_alive(conn: redis.Redis, holder: str | None = None, *, serving: bool = True) -> None:
    """A drainer process says it is there (every ``ALIVE_EVERY_S``): ``serving``, its drainers take ids (the web
    may push); ``holder``, its name (:func:`taken_key`), whose taken ids stay its own while this is fresh."""
    with conn.pipeline(transaction=False) as pipe:
        if serving:
            pipe.set(ALIVE_KEY, "1", ex=ALIVE_TTL_S)
        if holder is not None:
            pipe.set(HOLDER_PREFIX + holder, "1", ex=ALIVE_TTL_S)
        pipe.execute()


def release_holder(conn: redis.Redis, holder: str) -> None:
    """A process stopping: its holder key goes at once (whatever it still has taken is recovered without waiting)."""
    conn.delete(HOLDER_PREFIX + holder)


def taken_key(holder: str, drainer: int) -> str:
    """The list of the ids drainer ``drainer`` of process ``holder`` (``host:pid:random``) popped and has not
    finished."""
    return f"{TAKEN_PREFIX}{holder}/{drainer}"


# LRANGE + LTRIM + RPUSH in one step: the ids move from the lane to the drainer's list, never in neither
_TAKE_MORE = """
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids > 0 then
  redis.call('LTRIM', KEYS[1], #ids, -1)
  redis.call('RPUSH', KEYS[2], unpack(ids))
end
return ids
"""
# a dead drainer's ids back at the front of the lane in their order (they have waited longest), its list gone,
# in one step
_GIVE_BACK = """
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
for i = #ids, 1, -1 do
  redis.call('LPUSH', KEYS[2], ids[i])
end
redis.call('DEL', KEYS[1])
return #ids
"""


def pop_batch(conn: redis.Redis, taken: str, *, limit: int = BATCH_JOBS, wait_s: float = 1.0) -> list[str]:
    """Up to ``limit`` job ids, waiting at most ``wait_s`` for the first; [] when none came. The ids are moved onto
    ``taken``, the drainer's own list (:func:`taken_key`): delete it once they are finished. A Redis error
    propagates: the drainer then gives its whole list back (what moved is unknown when a reply is lost)."""
    first = conn.blmove(LANE_KEY, taken, wait_s, "LEFT", "RIGHT")
    if first is None:
        return []
    ids = [first]
    if limit > 1:
        ids.extend(conn.eval(_TAKE_MORE, 2, LANE_KEY, taken, limit - 1) or [])
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


def give_back(conn: redis.Redis, taken: str) -> int:
    """Put the ids on list ``taken`` back at the front of the lane and delete the list; how many there were."""
    return int(conn.eval(_GIVE_BACK, 2, taken, LANE_KEY))


def recover(conn: redis.Redis) -> int:
    """Give back the taken ids of every drainer whose process's holder key expired (it died with them); how many.
    A holder that was only late gets its jobs run twice at worst, which the claim makes harmless."""
    moved = 0
    for key in conn.scan_iter(match=TAKEN_PREFIX + "*", count=100):
        name = key.decode() if isinstance(key, bytes) else str(key)
        holder = name[len(TAKEN_PREFIX):].rpartition("/")[0]
        if not conn.exists(HOLDER_PREFIX + holder):
            moved += give_back(conn, name)
    if moved:
        log.warning("predict lane: %d job id(s) taken by a drainer that died went back on the lane", moved)
    return moved
