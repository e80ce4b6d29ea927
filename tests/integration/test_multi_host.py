"""Several hosts on one machine, sharing no model directory (issue 19 part 2): ``MODEL_STORE=sql``, one PostgreSQL,
one Redis (a private redis-server), a training worker and two classification workers started with ``make run``'s
commands, each "host" with a node name and a model cache (``MODEL_CACHE_DIR``) of its own:

* host A's training worker is SIGKILLed mid-training; restarted, it resumes the job, which succeeds once;
* the model trained on host A is served by host B, whose cache is empty;
* 40 jobs across both classification workers (hosts A and B) each succeed exactly once;
* deleting the model (through the web's API, whose broadcast reaches every worker) empties every cache and the store.
"""
from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import select

from core.db import db
from core.schema import ModelFile
from tests.factories import api_client, migrate

from .faults import Stack, signal_group, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

TEXTS = ["worst flight ever", "thanks for the upgrade!", "is the flight on time?", "lost my bag again"]


def _stored_keys() -> set[str]:
    with db.session() as session:
        return set(session.scalars(select(ModelFile.artifact_key)))


def _pid(stack: Stack, job_id: str) -> int:
    return int(stack.job(job_id).worker_id.rsplit(":", 1)[1])


def test_hosts_share_models_through_the_database_only(tmp_path, postgres_schema_url, tiny_bert_dir):
    migrate(postgres_schema_url)
    stack = Stack(tmp_path, postgres_schema_url, MODEL_STORE="sql", MODEL_CACHE_DIR=str(tmp_path / "cache-web"))
    cache_a, cache_b = tmp_path / "cache-a", tmp_path / "cache-b"
    host_a, host_b = {"MODEL_CACHE_DIR": str(cache_a)}, {"MODEL_CACHE_DIR": str(cache_b)}
    try:
        stack.start_redis()
        stack.start_reconciler()
        trainer = stack.start_worker("train", node="hostA-train@%h", **host_a)
        server_b = stack.start_worker("classify", node="hostB-classify@%h", concurrency=2, **host_b)

        # host A dies mid-training (the whole worker: no ack, no cleanup) and comes back
        job_id = stack.train_job(stack.dataset(120), tiny_bert_dir, epochs=12)  # as test_faults: killable
        wait_until(lambda: stack.job(job_id).progress > 0, "training under way", 90, stack.logs)
        signal_group(trainer, signal.SIGKILL)
        trainer.wait()
        stack.start_worker("train", node="hostA-train@%h", **host_a)
        job = stack.wait_for(job_id, timeout=180)
        assert (job.status, job.attempts) == ("succeeded", 2), (job.error, stack.logs())
        (model,) = stack.models_of(job_id)
        key = f"{job_id}-2"
        assert model.artifact_dir == f"sql:{key}" and _stored_keys() == {key}
        assert not (stack.model_store).exists()  # no model directory anywhere
        assert not list((cache_a / "tmp").glob(f"{job_id}-*"))  # the killed attempt's scratch folder is gone

        # host B, its cache empty, serves the model trained on host A
        assert not (cache_b / "models").exists()
        first = stack.wait_for(stack.classify_job(model.id, TEXTS), timeout=120)
        assert first.status == "succeeded", (first.error, stack.logs())
        assert _pid(stack, first.id) == server_b.pid and (cache_b / "models" / key / "model.safetensors").is_file()

        # a second classification host: 40 jobs across both, each once
        server_a = stack.start_worker("classify", node="hostA-classify@%h", concurrency=2, **host_a)
        job_ids = [stack.classify_job(model.id, [f"{TEXTS[i % 4]} #{i}", TEXTS[(i + 1) % 4]]) for i in range(40)]
        done = [stack.wait_for(job_id, timeout=180) for job_id in job_ids]
        assert [(j.status, j.attempts) for j in done] == [("succeeded", 1)] * 40, stack.logs()
        assert all(stack.predictions(j.id) == [0, 1] for j in done)  # none missing, none twice
        assert {_pid(stack, j.id) for j in done} == {server_a.pid, server_b.pid}  # both hosts served
        assert (cache_a / "models" / key).is_dir()

        # the delete (through the web's API) empties the store and every host's cache
        from web import create_app

        app = create_app({"TESTING": True, "SETTINGS": stack.settings, "WTF_CSRF_ENABLED": False})
        response = api_client(app).delete(f"/api/v1/models/{model.id}")
        assert response.status_code == 200, response.get_json()
        assert _stored_keys() == set()
        wait_until(lambda: not (cache_a / "models" / key).exists() and not (cache_b / "models" / key).exists(),
                   "every host's cached copy removed", 20, stack.logs)
        # both classification workers also dropped the loaded model (the log line follows the files' removal)
        wait_until(lambda: stack.logs(tail=None).count("dropped 1 cached predictor(s) of deleted model") == 2,
                   "both classification workers dropped the model", 20, stack.logs)
        # the folders are renamed away (.gone-*) at once, then deleted: wait for the deletion too
        wait_until(lambda: os.listdir(cache_a / "models") == os.listdir(cache_b / "models") == [],
                   "every host's cache folder emptied", 20, stack.logs)
    finally:
        stack.stop()
