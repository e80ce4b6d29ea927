"""Prometheus metrics: request counters and latency per route, and job counts read from SQL at scrape time.

Each app has its own registry (several apps can live in one test process). Under a multi-process server each
process reports its own request counters; the SQL-backed gauges are the same everywhere.
"""
from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from core.db import db
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


class Metrics:
    def __init__(self) -> None:
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
