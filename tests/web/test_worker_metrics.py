"""Workers' devices and metrics reach /metrics and /readyz through Redis snapshots (core.telemetry,
worker.telemetry); queue depths are LLEN of the Celery queues. The Redis tests use the real server (db 13)."""
from __future__ import annotations

import json
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core import telemetry
from core.telemetry import Histogram, cumulative_buckets, read_snapshots
from ml import batching
from web import schemas
from web.metrics import worker_families
from worker import telemetry as worker_telemetry

DB = 13


def _samples(families):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def test_histogram_snapshot_becomes_cumulative_prometheus_buckets():
    histogram = Histogram((1, 4, 16))
    for value in (1, 2, 3, 20):
        histogram.observe(value)
    data = histogram.to_json()
    assert data["counts"] == [1, 2, 0, 1] and data["count"] == 4 and data["sum"] == 26
    assert cumulative_buckets(data) == [("1.0", 1), ("4.0", 3), ("16.0", 3), ("+Inf", 4)]


def test_recorder_counts_batches_padding_cache_and_job_durations(monkeypatch):
    from core import artifacts
    from ml import inference

    recorder = worker_telemetry.Recorder()
    monkeypatch.setattr(inference, "cache_stats", {"loads": 2, "hits": 40, "evictions": 1})
    monkeypatch.setattr(artifacts, "cache_stats", {"hits": 5, "loads": 3, "evictions": 2, "fetch_failures": 1})
    recorder.on_batch(None, 4, 30, 40, 0.01)
    recorder.on_batch(None, 64, 1000, 1024, 0.05)
    recorder.job_finished("classify", "text-classification", "succeeded", 0.2)
    recorder.job_finished("train", "token-classification", "failed", 120.0)
    metrics = recorder.metrics()
    assert metrics["real_tokens"] == 1030 and metrics["padded_tokens"] == 1064
    assert metrics["batch_rows"]["count"] == 2
    assert metrics["model_memory_cache"] == {"loads": 2, "hits": 40, "evictions": 1}
    snapshot = {"worker": "classify-gpu0@h", "pid": 7, "device": "cuda:0", "device_name": "H200", "amp": "bf16",
                "queues": ["classify"], "gpu_memory_used_bytes": 5, "gpu_memory_total_bytes": 10,
                "max_batch_tokens": 32768, "max_batch_size": 256, **metrics}
    samples = _samples(worker_families([snapshot]))
    worker = ("worker", "classify-gpu0@h:7")
    assert samples[("bertqueue_worker_gpu_memory_total_bytes", (("device", "cuda:0"), worker))] == 10
    assert samples[("bertqueue_worker_batch_limit", (("limit", "max_batch_size"), worker))] == 256
    assert samples[("bertqueue_engine_padding_ratio", (worker,))] == pytest.approx(1 - 1030 / 1064)
    assert samples[("bertqueue_model_memory_cache_hits_total", (worker,))] == 40
    assert samples[("bertqueue_model_memory_cache_evictions_total", (worker,))] == 1
    assert samples[("bertqueue_model_disk_cache_loads_total", (worker,))] == 3  # the host's model file cache
    assert samples[("bertqueue_model_disk_cache_fetch_failures_total", (worker,))] == 1
    assert samples[("bertqueue_engine_batch_rows_count", (worker,))] == 2
    job = (("outcome", "failed"), ("task_type", "token-classification"), ("type", "train"), worker)
    assert samples[("bertqueue_job_duration_seconds_count", job)] == 1
    assert samples[("bertqueue_job_duration_seconds_sum", job)] == 120.0


def test_the_engine_feeds_the_recorder(monkeypatch):
    recorder = worker_telemetry.Recorder()
    monkeypatch.setattr(batching, "BATCH_OBSERVERS", [recorder.on_batch])

    class Echo:
        def encode(self, inputs):
            return [[1] * len(text) for text in inputs]

        def forward(self, rows):
            return [len(r) for r in rows]

        def results(self, outputs, encoded=None):
            return outputs

    engine = batching.BatchingEngine(Echo(), wait_ms=0)
    assert engine.predict(["abcd", "ab"]) == [4, 2]
    assert (recorder.real_tokens, recorder.padded_tokens) == (6, 8)


def test_a_job_attempt_is_timed_with_its_type_and_task_type(settings, monkeypatch):
    """The skeleton records every claimed attempt's duration and outcome (here a classify job whose model files
    are missing: it fails at once); a message whose job is not claimable records nothing."""
    import worker.jobs  # noqa: F401  (registers the job handlers)
    from worker.skeleton import run_job

    from . import factories as f

    seen = []
    monkeypatch.setattr(worker_telemetry.recorder, "job_finished", lambda *args: seen.append(args))
    model_id = f.make_model(params={"task_type": "text-classification"})
    job_id = f.make_classify_job(model_id, ["hello"])
    run_job(job_id, "classify")
    assert len(seen) == 1
    job_type, task_type, outcome, seconds = seen[0]
    assert (job_type, task_type, outcome) == ("classify", "text-classification", "failed") and seconds >= 0
    run_job(job_id, "classify")  # finished: not claimable, dropped
    assert len(seen) == 1


@pytest.fixture
def redis_db(redis_url):
    import redis

    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    client = redis.Redis.from_url(url)
    yield url, client
    for key in client.scan_iter(match=f"{telemetry.KEY_PREFIX}test-*"):
        client.delete(key)
    client.delete("classify", "train")
    client.close()


def test_a_published_snapshot_reaches_metrics_and_readyz(redis_db, settings, monkeypatch):
    from web import create_app

    url, client = redis_db
    node = f"test-{uuid.uuid4().hex[:8]}@host"
    runtime_settings = settings.replace(redis_url=url, celery_eager=False, metrics_public=True)
    from core import runtime

    runtime.configure(runtime_settings)
    publisher = worker_telemetry.Publisher(node, ["classify"], url)
    worker_telemetry.recorder.on_batch(None, 8, 50, 64, 0.01)
    publisher.publish_once(client)
    ttl = client.ttl(telemetry.worker_key(node, __import__("os").getpid()))
    assert 0 < ttl <= telemetry.TTL_S
    mine = [s for s in read_snapshots(client) if s["worker"] == node]
    assert len(mine) == 1 and mine[0]["device"] == "cpu" and mine[0]["amp"] == "fp32"
    assert (mine[0]["max_batch_tokens"], mine[0]["max_batch_size"]) == (8192, 64)  # the CPU's defaults
    from ml.batching import cpu_streams

    assert mine[0]["inference_streams"] == cpu_streams()
    client.rpush("classify", json.dumps({"fake": "message"}), json.dumps({"fake": 2}))

    app = create_app({"TESTING": True, "SETTINGS": runtime_settings})
    body = app.test_client().get("/metrics").get_data(as_text=True)
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body) for s in family.samples}
    assert samples[("bertqueue_queue_depth", (("queue", "classify"),))] == 2
    assert samples[("bertqueue_queue_depth", (("queue", "train"),))] == 0
    assert samples[("bertqueue_redis_up", ())] == 1
    worker = f"{node}:{__import__('os').getpid()}"
    assert samples[("bertqueue_worker_batch_limit", (("limit", "max_batch_tokens"), ("worker", worker)))] == 8192
    assert samples[("bertqueue_engine_tokens_total", (("kind", "padded"), ("worker", worker)))] >= 64

    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200, ready.json
    schemas.Health.model_validate(ready.json)
    assert not any("@" in w["worker"] for w in ready.json["workers"])  # no host names for an anonymous probe
    line = next(w for w in ready.json["workers"] if w["worker"] == node.split("@")[0])
    assert line["device"] == "cpu" and line["queues"] == ["classify"] and line["max_batch_size"] == 64
    assert line["inference_streams"] == mine[0]["inference_streams"]
    assert samples[("bertqueue_worker_batch_limit", (("limit", "inference_streams"), ("worker", worker)))] \
        == mine[0]["inference_streams"]


def test_metrics_survive_redis_being_down(settings):
    from web import create_app

    broken = settings.replace(redis_url="redis://127.0.0.1:1/0", celery_eager=False, metrics_public=True)
    body = create_app({"TESTING": True, "SETTINGS": broken}).test_client().get("/metrics").get_data(as_text=True)
    assert "bertqueue_redis_up 0.0" in body and "bertqueue_sql_up 1.0" in body


def test_a_gpu_worker_reports_the_precision_it_runs_in(settings, monkeypatch):
    """A classification worker serves in half precision on CUDA whatever AMP says (``inference_autocast``); a
    training worker trains under AMP. Each reports its own (CUDA faked: the process state a GPU worker has)."""
    import sys
    import types

    from core import runtime
    from ml import precision

    cuda = types.SimpleNamespace(is_initialized=lambda: True, current_device=lambda: 0,
                                 mem_get_info=lambda index: (30 * 2**30, 80 * 2**30),
                                 get_device_name=lambda index: "NVIDIA H100 80GB HBM3")
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(precision, "amp_dtype", lambda device, amp="auto": None if amp == "off" else "bf16")
    monkeypatch.setattr(precision, "dtype_name", lambda dtype: "fp32" if dtype is None else dtype)
    monkeypatch.setattr(runtime, "_settings", settings.replace(device="cuda", amp="off"))  # restored after

    serving = worker_telemetry.device_state(serving=True)
    training = worker_telemetry.device_state()
    assert serving["amp"] == "bf16" and training["amp"] == "fp32"  # AMP=off is training's setting only
    assert serving["device"] == "cuda:0" and serving["gpu_memory_used_bytes"] == 50 * 2**30
