"""Being told that a job ended, instead of polling SQL for it (``POST /api/v1/predict``).

Workers publish a job's terminal status (``succeeded``, ``failed``; ``ended`` otherwise) on
``core.queue.job_done_channel(job_id)``. Each web process keeps ONE Redis connection pattern-subscribed to those
channels, in a background thread, and wakes the request threads waiting for a job id. The signal is a hint: SQL
stays the truth. A waiter either registered before its job was sent (``services.classify_and_wait``: an announced
success is then confirmed by the query that reads the predictions) or re-reads the job's status after it registers
and whenever it wakes (``services.wait_for_status``), so a missed or lost message costs latency, never a result;
while Redis is unreachable the listener retries with backoff and waiters simply poll.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from core.queue import JOB_DONE_CHANNEL_PREFIX, read_done_message

log = logging.getLogger(__name__)

RECONNECT_MAX_S = 5.0


class Announcement(threading.Event):
    """Set when a job's end is announced; ``status`` is the status the announcement carried (a hint: the worker
    publishes it after committing, but SQL stays the truth); ``rows``, the prediction rows the job's success
    committed, when the worker relayed them (``core.queue.done_message``)."""

    status: str | None = None
    rows: list[dict] | None = None


class CompletionListener:
    """Routes job-done messages to the threads waiting for them. Starts its thread on first use."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.connected = threading.Event()
        self._waiters: dict[str, set[Announcement]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(self, job_id: str) -> Iterator[Announcement]:
        """An event set when ``job_id``'s end is announced, for the duration of the ``with`` block."""
        self._ensure_thread()
        event = Announcement()
        with self._lock:
            self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            with self._lock:
                events = self._waiters.get(job_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._waiters[job_id]

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-completion-listener", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(JOB_DONE_CHANNEL_PREFIX + "*")
                self.connected.set()
                delay = 0.1
                for message in pubsub.listen():
                    self._dispatch(message)
            except Exception as exc:  # noqa: BLE001 - keep listening whatever happens; waiters poll meanwhile
                self.connected.clear()
                log.info("job completion listener: %s; reconnecting in %.1fs", exc, delay)
                threading.Event().wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    def _dispatch(self, message: dict) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode("utf-8", "replace")
        if not channel or not channel.startswith(JOB_DONE_CHANNEL_PREFIX):
            return
        with self._lock:
            events = list(self._waiters.get(channel[len(JOB_DONE_CHANNEL_PREFIX):], ()))
        if not events:  # another process's job (every web process hears every announcement): nothing to parse
            return
        data = message.get("data")
        if isinstance(data, bytes):
            data = data.decode("utf-8", "replace")
        status, rows = read_done_message(data) if isinstance(data, str) else (None, None)
        for event in events:
            event.status, event.rows = status, rows
            event.set()
