"""What workers tell the web about themselves, through Redis: one snapshot per worker process, with a short TTL.

Each worker process that runs jobs (the classification worker's process; each prefork child of a training worker)
writes a JSON snapshot every ``INTERVAL_S`` seconds to ``bertqueue:worker:<node>:<pid>`` with a TTL of
``TTL_S`` (``worker.telemetry``): its device, GPU memory used / total, its batching limits, and its metrics since it
started -- batches (rows per batch as histogram buckets, real and padded tokens), model memory cache loads / hits /
evictions, the host's model file cache (``core.artifacts.cache_stats``), job durations per job type and task type (histogram buckets). The web reads them when ``/metrics`` is
scraped (``web.metrics.WorkerCollector``) and when ``/readyz`` is asked (the device lines). A worker that stops
disappears within ``TTL_S``; its counters go with it (Prometheus' ``rate`` treats that as a counter reset).

Why Redis and not a port per worker or a multiprocess directory: every worker already reaches Redis, workers may
run on several hosts (and in containers without published ports), and Prometheus then scrapes one target, the
web, which also holds the SQL-backed job gauges. No torch here: both sides import it.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from typing import Any

log = logging.getLogger(__name__)

KEY_PREFIX = "bertqueue:worker:"
INTERVAL_S = 10.0
TTL_S = 35  # a few missed beats before a worker is forgotten
# rows per batch, and seconds per job
BATCH_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
JOB_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 12 * 3600)


def worker_key(node: str, pid: int) -> str:
    """The Redis key of one worker process's snapshot."""
    return f"{KEY_PREFIX}{node}:{pid}"


class Histogram:
    """A cumulative histogram in plain numbers (JSON-able): per-bucket counts (non-cumulative), count and sum."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, bound in enumerate(self.bounds) if value <= bound), len(self.bounds))
        self.counts[index] += 1
        self.count += 1
        self.sum += value

    def to_json(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "count": self.count, "sum": self.sum}


def cumulative_buckets(histogram: dict[str, Any]) -> list[tuple[str, float]]:
    """A snapshot histogram as Prometheus buckets ``[(le, cumulative count)]``, ending with ``+Inf``."""
    out, total = [], 0
    for bound, count in zip([*histogram["bounds"], "+Inf"], histogram["counts"]):
        total += count
        out.append((bound if isinstance(bound, str) else _le(bound), total))
    return out


def _le(bound: float) -> str:
    return str(float(bound))


def read_snapshots(client: Any, limit: int = 1000) -> list[dict[str, Any]]:
    """Every live worker snapshot in Redis (``client``: a redis-py client), oldest node name first; malformed
    entries are skipped. At most ``limit`` workers."""
    keys = sorted(key.decode() if isinstance(key, bytes) else key
                  for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=200))[:limit]
    if not keys:
        return []
    snapshots = []
    for key, raw in zip(keys, client.mget(keys)):
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            snapshot = json.loads(raw)
        except ValueError:
            log.warning("telemetry: %s is not JSON", key)
            continue
        if isinstance(snapshot, dict) and isinstance(snapshot.get("worker"), str):
            snapshots.append(snapshot)
    return snapshots


def device_lines(snapshots: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """What ``/readyz`` says about each worker process: its name, queues, device and GPU memory, batch limits."""
    fields = ("worker", "queues", "device", "cuda_visible_devices", "device_name", "amp", "gpu_memory_used_bytes",
              "gpu_memory_total_bytes", "max_batch_tokens", "max_batch_size", "inference_streams")
    return [{name: snapshot.get(name) for name in fields} for snapshot in snapshots]
