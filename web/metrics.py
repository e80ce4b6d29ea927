"""Prometheus metrics: request counters and latency per route, job counts read from SQL at scrape time, and from
Redis (:class:`RedisCollector`) the depth of each queue and every worker's own metrics.

Each app has its own registry (several apps can live in one test process). Under a multi-process server each
process reports its own request counters; the SQL- and Redis-backed metrics are the same everywhere.

Worker metrics reach Prometheus through this endpoint: each worker process writes a snapshot to Redis every few
seconds (``core.telemetry``, ``worker.telemetry``) and the scrape turns the live snapshots into metric families
with a ``worker`` label (``<node>:<pid>``): device and GPU memory, batch limits, rows per batch, real and padded
tokens (the padding ratio), model memory cache loads / hits / evictions, job durations per type and task type.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from core import telemetry
from core.db import db
from core.queue import CLASSIFY_QUEUE, TRAIN_QUEUE
from core.schema import Dataset, Job, JobStatus, JobType, TrainedModel

log = logging.getLogger(__name__)


class SqlCollector(Collector):
    """Job counts by type and status, and model/dataset totals, queried when Prometheus scrapes."""

    def collect(self):
        up = 1
        counts = {(t.value, s.value): 0 for t in JobType for s in JobStatus}
        totals = {"models": 0, "datasets": 0}
        try:
            with db.session() as session:
                for job_type, status, n in session.execute(
                    select(Job.type, Job.status, func.count()).group_by(Job.type, Job.status)
                ):
                    counts[(job_type, status)] = n
                totals["models"] = session.scalar(select(func.count()).select_from(TrainedModel))
                totals["datasets"] = session.scalar(select(func.count()).select_from(Dataset)
                                                    .where(Dataset.deleted_at.is_(None)))
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database is down
            log.warning("metrics: could not read job counts", exc_info=True)
            up = 0
        yield GaugeMetricFamily("bertqueue_sql_up", "1 if the metrics query against SQL succeeded", value=up)
        if not up:
            return
        jobs = GaugeMetricFamily("bertqueue_jobs", "Jobs in SQL by type and status", labels=["type", "status"])
        for (job_type, status), n in counts.items():
            jobs.add_metric([job_type, status], n)
        yield jobs
        yield GaugeMetricFamily("bertqueue_models", "Trained models in SQL", value=totals["models"])
        yield GaugeMetricFamily("bertqueue_datasets", "Datasets in SQL", value=totals["datasets"])


def redis_client(url: str):
    """A function returning one shared redis-py client for ``url`` (short timeouts: a scrape must not hang)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return lambda: client


class RedisCollector(Collector):
    """Queue depths (``LLEN`` of each Celery queue: messages waiting, not yet taken by a worker) and the workers'
    snapshots, read from Redis when Prometheus scrapes. ``client``: a function returning a redis-py client."""

    QUEUES = (TRAIN_QUEUE, CLASSIFY_QUEUE)

    def __init__(self, client) -> None:
        self.client = client

    def collect(self):
        try:
            client = self.client()
            depths = {queue: client.llen(queue) for queue in self.QUEUES}
            snapshots = telemetry.read_snapshots(client)
        except Exception:  # noqa: BLE001 - a scrape must not fail because Redis is down
            log.warning("metrics: could not read Redis", exc_info=True)
            yield GaugeMetricFamily("bertqueue_redis_up", "1 if the metrics read from Redis succeeded", value=0)
            return
        yield GaugeMetricFamily("bertqueue_redis_up", "1 if the metrics read from Redis succeeded", value=1)
        queue = GaugeMetricFamily("bertqueue_queue_depth", "Messages waiting in each Celery queue (Redis LLEN)",
                                  labels=["queue"])
        for name, depth in depths.items():
            queue.add_metric([name], depth)
        yield queue
        yield from worker_families(snapshots)


def worker_families(snapshots: list[dict]):
    """Prometheus metric families from the workers' snapshots (``core.telemetry``), labelled per worker process."""
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    info = GaugeMetricFamily("bertqueue_worker_info", "A live worker process (1), its device and queues",
                             labels=["worker", "device", "device_name", "amp", "queues"])
    used = GaugeMetricFamily("bertqueue_worker_gpu_memory_used_bytes", "GPU memory in use on the worker's device "
                             "(every process on it)", labels=["worker", "device"])
    total = GaugeMetricFamily("bertqueue_worker_gpu_memory_total_bytes", "GPU memory of the worker's device",
                              labels=["worker", "device"])
    limits = GaugeMetricFamily("bertqueue_worker_batch_limit", "The worker's batching limits (max_batch_tokens, "
                               "max_batch_size, inference_streams)", labels=["worker", "limit"])
    rows = HistogramMetricFamily("bertqueue_engine_batch_rows", "Rows per forward pass of the batching engine",
                                 labels=["worker"])
    tokens = CounterMetricFamily("bertqueue_engine_tokens", "Tokens the engine ran: real ones, and padded "
                                 "(rows x longest row); padding ratio = 1 - real / padded", labels=["worker", "kind"])
    padding = GaugeMetricFamily("bertqueue_engine_padding_ratio", "Share of the engine's padded tokens that were "
                                "padding, since the worker started", labels=["worker"])
    cache = {event: CounterMetricFamily(f"bertqueue_model_memory_cache_{event}", f"Models {what} by the worker's "
                                        "in-memory model cache (ml.inference)", labels=["worker"])
             for event, what in (("loads", "loaded from disk"), ("hits", "found in memory"),
                                 ("evictions", "evicted (least recently used)"))}
    disk = {event: CounterMetricFamily(f"bertqueue_model_disk_cache_{event}", f"Models {what} this host's model file "
                                       "cache (core.artifacts, MODEL_STORE=sql)", labels=["worker"])
            for event, what in (("hits", "found complete in"), ("loads", "downloaded from the SQL store into"),
                                ("evictions", "evicted (least recently used) from"),
                                ("fetch_failures", "failed to download (retried) into"))}
    jobs = HistogramMetricFamily("bertqueue_job_duration_seconds", "Job attempts by type, task type and outcome, "
                                 "timed by the worker that ran them", labels=["worker", "type", "task_type", "outcome"])
    for snapshot in snapshots:
        worker = f"{snapshot['worker']}:{snapshot.get('pid', '')}"
        device = str(snapshot.get("device") or "")
        info.add_metric([worker, device, str(snapshot.get("device_name") or ""), str(snapshot.get("amp") or ""),
                         ",".join(snapshot.get("queues") or [])], 1)
        if snapshot.get("gpu_memory_total_bytes") is not None:
            used.add_metric([worker, device], snapshot.get("gpu_memory_used_bytes") or 0)
            total.add_metric([worker, device], snapshot["gpu_memory_total_bytes"])
        for limit in ("max_batch_tokens", "max_batch_size", "inference_streams"):
            if snapshot.get(limit) is not None:
                limits.add_metric([worker, limit], snapshot[limit])
        if isinstance(snapshot.get("batch_rows"), dict):
            histogram = snapshot["batch_rows"]
            rows.add_metric([worker], telemetry.cumulative_buckets(histogram), histogram.get("sum", 0))
        real, padded = snapshot.get("real_tokens") or 0, snapshot.get("padded_tokens") or 0
        tokens.add_metric([worker, "real"], real)
        tokens.add_metric([worker, "padded"], padded)
        if padded:
            padding.add_metric([worker], 1 - real / padded)
        for event, family in cache.items():
            family.add_metric([worker], (snapshot.get("model_memory_cache") or {}).get(event, 0))
        for event, family in disk.items():
            family.add_metric([worker], (snapshot.get("model_disk_cache") or {}).get(event, 0))
        for job in snapshot.get("jobs") or []:
            jobs.add_metric([worker, job["type"], job["task_type"], job["outcome"]],
                            telemetry.cumulative_buckets(job["seconds"]), job["seconds"].get("sum", 0))
    yield from (info, used, total, limits, rows, tokens, padding, *cache.values(), *disk.values(), jobs)


class Metrics:
    def __init__(self, redis_client=None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bertqueue_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bertqueue_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.registry.register(SqlCollector())
        if redis_client is not None:  # none in eager mode: no queues, no workers
            self.registry.register(RedisCollector(redis_client))

    def init_app(self, app: Flask) -> None:
        @app.before_request
        def _start_timer():
            g._metrics_started = time.perf_counter()

        @app.after_request
        def _record(response):
            started = g.pop("_metrics_started", None)
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            self.requests.labels(request.method, route, str(response.status_code)).inc()
            if started is not None:
                self.latency.labels(request.method, route).observe(time.perf_counter() - started)
            return response

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
