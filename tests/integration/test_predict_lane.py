"""The /predict lane (core.predict_lane, worker.predict_lane) with the real Redis server and a tiny saved model:
the web pushes a waiting call's job id while a drainer is alive (else a Celery message), and a drainer's batch
classifies, stores and finishes every job still queued exactly once, handing anything unusual to Celery."""
from __future__ import annotations

import threading
import time

import pytest
import redis
from sqlalchemy import event, func, select, update

from core import jobs, predict_lane, runtime
from core.db import db
from core.schema import Job, JobType, Prediction, TrainedModel, utcnow
from core.specs import ClassifyRequest
from tests.factories import api_client, migrate, save_tiny_model, tiny_model_row

pytestmark = [pytest.mark.redis]

LANE_REDIS_DB = 5  # a database of its own on the shared server, flushed before each test
LABELS = ["neg", "pos"]
TAKEN = predict_lane.taken_key("tests:1:lane", 0)  # the list a test's pops move their ids onto
TEXTS = ["the crew was amazing", "lost my bag again", "gate changed twice"]


class _CeleryStub:
    """Records the Celery messages the lane hands jobs back with (``core.queue.send``)."""

    class conf:  # noqa: N801 - mirrors Celery's attribute
        task_always_eager = False

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_task(self, name, args, queue=None) -> None:
        self.sent.append(args[0])


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tokenizer, tmp_path_factory):
    return save_tiny_model("bert", {"sentiment": LABELS}, tiny_bert_dir, tokenizer,
                           tmp_path_factory.mktemp("lane") / "model", seed=7)


@pytest.fixture
def lane(settings, model_dir):
    """(web test client, model id, Redis client): a deployment with a broker (not eager), no worker running."""
    yield from _lane(settings, model_dir)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def lane_on_each_database(request, settings, model_dir):
    """:func:`lane` on SQLite, then on a migrated PostgreSQL schema (the relayed rows must read back alike on
    both: JSON columns, floats)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_schema_url")
        migrate(url)
        settings = settings.replace(database_url=url)
    yield from _lane(settings, model_dir)
    assert db.engine.dialect.name == request.param


def _lane(settings, model_dir):
    from tests.conftest import _redis_error, require_service
    from web import create_app

    require_service("Redis", _redis_error())
    url = settings.redis_url.rsplit("/", 1)[0] + f"/{LANE_REDIS_DB}"
    conn = redis.Redis.from_url(url)
    conn.flushdb()
    live = runtime.configure(settings.replace(redis_url=url, celery_eager=False, predict_timeout_s=0.0))
    client = api_client(create_app({"TESTING": True, "SETTINGS": live, "WTF_CSRF_ENABLED": False}))
    predict_lane._alive_seen.clear()
    yield client, tiny_model_row(model_dir, LABELS), conn
    conn.flushdb()


def _queued(model_id: int, texts: list[str]) -> str:
    params, inputs = ClassifyRequest(model_id=model_id, texts=texts).job_params()
    with db.session() as session:
        return jobs.create_job(session, JobType.CLASSIFY, params, model_id=model_id, inputs=inputs).id


def _job(job_id: str) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def _predictions(job_id: str) -> list[tuple]:
    with db.session() as session:
        return [tuple(r) for r in session.execute(
            select(Prediction.index, Prediction.text, Prediction.label, Prediction.score)
            .where(Prediction.job_id == job_id).order_by(Prediction.index))]


def test_waiting_predict_calls_go_through_the_lane_and_one_batch_finishes_them_exactly_once(lane):
    from worker.jobs.classify import run_classification
    from worker.predict_lane import run_batch

    client, model_id, conn = lane
    predict_lane.mark_alive(conn)
    ids = []
    for text in TEXTS:
        response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": [text, text + "!"]})
        assert response.status_code == 202, response.get_json()  # timeout 0: answered at once, the job to poll
        ids.append(response.get_json()["id"])
    assert conn.llen("classify") == 0  # no Celery message: the ids are on the lane
    popped = predict_lane.pop_batch(conn, TAKEN, wait_s=0.1)
    assert popped == ids and conn.llen(predict_lane.LANE_KEY) == 0

    celery = _CeleryStub()
    assert sorted(run_batch(celery, popped)) == sorted(ids)
    assert celery.sent == []
    reference = _queued(model_id, [TEXTS[0], TEXTS[0] + "!"])  # the same texts through the ordinary job path
    run_classification(reference)
    for job_id, text in zip(ids, TEXTS):
        job = _job(job_id)
        assert (job.status, job.attempts, job.progress) == ("succeeded", 1, 1.0)
        assert job.metrics["batch_jobs"] == 3 and job.metrics["texts"] == job.metrics["classified"] == 2
        assert sum(job.metrics["label_counts"].values()) == 2
        stored = _predictions(job_id)
        assert [(i, t) for i, t, _, _ in stored] == [(0, text), (1, text + "!")]
        assert all(label in LABELS for _, _, label, _ in stored)
    expected = [(label, round(score, 4)) for _, _, label, score in _predictions(reference)]
    assert [(label, round(score, 4)) for _, _, label, score in _predictions(ids[0])] == expected
    response = client.get(f"/api/v1/jobs/{ids[0]}/predictions").get_json()
    assert [p["text"] for p in response["items"]] == [TEXTS[0], TEXTS[0] + "!"]

    # a duplicate (Redis redelivering, the reconciler re-sending) finds nothing to claim: nothing written twice
    assert run_batch(celery, popped) == [] and celery.sent == []
    assert len(_predictions(ids[0])) == 2


def test_without_a_live_drainer_or_for_a_big_call_predict_sends_a_celery_message(lane):
    client, model_id, conn = lane
    response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": TEXTS})
    assert response.status_code == 202
    assert conn.llen(predict_lane.LANE_KEY) == 0 and conn.llen("classify") == 1  # no drainer: Celery

    predict_lane.mark_alive(conn)
    texts = [f"text {i}" for i in range(predict_lane.MAX_LANE_INPUTS + 1)]
    assert client.post("/api/v1/predict", json={"model_id": model_id, "texts": texts}).status_code == 202
    assert conn.llen(predict_lane.LANE_KEY) == 0 and conn.llen("classify") == 2  # too many inputs for the lane
    long_texts = ["long text " * 1_700] * 4  # few inputs (each within MAX_TEXT_CHARS), too many characters in all
    assert sum(map(len, long_texts)) > predict_lane.MAX_LANE_CHARS
    assert client.post("/api/v1/predict", json={"model_id": model_id, "texts": long_texts}).status_code == 202
    assert conn.llen(predict_lane.LANE_KEY) == 0 and conn.llen("classify") == 3
    # a job queued for later (the jobs API) never takes the lane either
    assert client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": TEXTS}).status_code == 202
    assert conn.llen(predict_lane.LANE_KEY) == 0 and conn.llen("classify") == 4
    # PREDICT_LANE=false: one Celery message per call, drainer or not
    runtime.configure(runtime.settings().replace(predict_lane=False))
    client.application.extensions["bertqueue"].settings = runtime.settings()
    assert client.post("/api/v1/predict", json={"model_id": model_id, "texts": TEXTS}).status_code == 202
    assert conn.llen(predict_lane.LANE_KEY) == 0 and conn.llen("classify") == 5


def test_a_waiting_predict_call_is_answered_from_the_announcement_without_reading_sql_after_its_commit(
        lane_on_each_database, monkeypatch):
    """The call watches for its job before sending it; the lane's worker relays the rows it committed with the
    job's success, so the call answers without a query after its commit (no status polling, no read back), and
    its answer is exactly what the stored predictions read back."""
    from web import services
    from worker.predict_lane import run_batch

    client, model_id, conn = lane_on_each_database
    monkeypatch.setattr(services, "ANNOUNCEMENT_WAIT_S", 10.0)  # a slow machine: still the announcement's path
    predict_lane.mark_alive(conn)
    runtime.configure(runtime.settings().replace(predict_timeout_s=10.0))
    state = client.application.extensions["bertqueue"]
    state.settings = runtime.settings()
    listener = state.completion
    with listener.watch("warm-up"):  # starts the listener's thread
        assert listener.connected.wait(5)

    def drain() -> None:
        run_batch(_CeleryStub(), predict_lane.pop_batch(conn, TAKEN, wait_s=5))

    statements: list[str] = []
    caller = threading.get_ident()

    def record(_conn, _cursor, statement, *_args) -> None:
        if threading.get_ident() == caller:
            statements.append(statement.split()[0].upper())

    drainer = threading.Thread(target=drain)
    drainer.start()
    event.listen(db.engine, "before_cursor_execute", record)
    try:
        response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": TEXTS[:2]})
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
        drainer.join(10)
    body = response.get_json()
    assert response.status_code == 200, body
    assert [p["text"] for p in body["predictions"]] == TEXTS[:2]
    assert _job(body["job_id"]).status == "succeeded"
    after_commit = statements[len(statements) - statements[::-1].index("INSERT"):]
    assert after_commit == [], statements
    stored = client.get(f"/api/v1/jobs/{body['job_id']}/predictions").get_json()["items"]
    assert body["predictions"] == stored


def test_rows_an_earlier_attempt_stored_are_not_relayed_the_call_reads_what_sql_holds(lane_on_each_database,
                                                                                      monkeypatch):
    """A job whose rows were partly stored before the lane's batch (an earlier attempt's) keeps those rows (the
    insert skips them), so the worker relays no rows for it and the waiting call reads the job's rows from SQL:
    it answers what is stored, not what this batch computed."""
    from core.results import insert_predictions
    from web import services
    from worker.predict_lane import run_batch

    client, model_id, conn = lane_on_each_database
    monkeypatch.setattr(services, "ANNOUNCEMENT_WAIT_S", 10.0)
    predict_lane.mark_alive(conn)
    runtime.configure(runtime.settings().replace(predict_timeout_s=10.0))
    state = client.application.extensions["bertqueue"]
    state.settings = runtime.settings()
    with state.completion.watch("warm-up"):
        assert state.completion.connected.wait(5)
    earlier = {"index": 0, "text": TEXTS[0], "label": "earlier", "score": 0.5, "scores": {"earlier": 0.5}}

    def drain() -> None:
        job_ids = predict_lane.pop_batch(conn, TAKEN, wait_s=5)
        with db.session() as session:
            insert_predictions(session, job_ids[0], [earlier])
            session.commit()
        run_batch(_CeleryStub(), job_ids)

    drainer = threading.Thread(target=drain)
    drainer.start()
    try:
        response = client.post("/api/v1/predict", json={"model_id": model_id, "texts": TEXTS[:2]})
    finally:
        drainer.join(10)
    body = response.get_json()
    assert response.status_code == 200, body
    assert [p["label"] for p in body["predictions"]][0] == "earlier"
    assert body["predictions"] == client.get(f"/api/v1/jobs/{body['job_id']}/predictions").get_json()["items"]


def test_api_calls_carry_no_session_cookie(lane):
    """An API call is token-authenticated: it gets a null session (no cookie verified, none set)."""
    client, model_id, _conn = lane
    client.set_cookie("session", "not-a-valid-signed-cookie")
    response = client.get(f"/api/v1/models/{model_id}")
    assert response.status_code == 200 and "Set-Cookie" not in response.headers


def test_a_batch_skips_finished_jobs_and_hands_back_what_it_cannot_run_plainly(lane, model_dir, monkeypatch):
    from worker.predict_lane import run_batch

    _client, model_id, _conn = lane
    good, cancelled, refused = _queued(model_id, TEXTS), _queued(model_id, TEXTS), _queued(model_id, ["x" * 50])
    gone_model = tiny_model_row(model_dir, LABELS)
    gone = _queued(gone_model, TEXTS)
    with db.session() as session:
        jobs.cancel(session, cancelled)
        session.execute(update(TrainedModel).where(TrainedModel.id == gone_model).values(deleted_at=utcnow()))
        session.commit()

    celery = _CeleryStub()
    from ml.backend import InputError
    from ml.batching import BatchingEngine

    real_encode = BatchingEngine.encode

    def refusing_encode(engine, texts, pairs=None):
        if texts == ["x" * 50]:  # an input the backend refuses (too long for a question-answering model, say)
            raise InputError("text 1 is too long")
        return real_encode(engine, texts, pairs)

    monkeypatch.setattr(BatchingEngine, "encode", refusing_encode)
    assert run_batch(celery, [good, cancelled, refused, gone]) == [good]
    assert sorted(celery.sent) == sorted([refused, gone])  # the ordinary path records their precise errors
    assert _job(cancelled).status == "cancelled" and _predictions(cancelled) == []
    assert _job(refused).status == _job(gone).status == "queued"
    assert _job(good).metrics["batch_jobs"] == 1


def test_a_crash_before_the_batch_commits_leaves_every_job_queued_for_the_reconciler(lane, monkeypatch):
    import worker.predict_lane as lane_module

    _client, model_id, _conn = lane
    ids = [_queued(model_id, TEXTS), _queued(model_id, TEXTS[:1])]

    def crash(session, columns_by_job):
        raise RuntimeError("worker lost mid-batch")

    monkeypatch.setattr(lane_module, "insert_columns_of_jobs", crash)
    with pytest.raises(RuntimeError):
        lane_module.run_batch(_CeleryStub(), ids)
    for job_id in ids:
        assert _job(job_id).status == "queued"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Prediction)) == 0
        # the reconciler re-sends them as ordinary messages once they have waited long enough
        due = jobs.lost_jobs(session, requeue_after_s=0, lease_seconds=60)
    assert sorted(job_id for job_id, _ in due) == sorted(ids)


def test_a_model_that_cannot_be_loaded_is_tried_once_per_batch_and_its_jobs_go_to_celery(lane, monkeypatch):
    """The store unreachable for one model: the drainer does not retry its fetch for each of its jobs (every other
    job of the batch would wait), it hands them all to Celery at once."""
    import worker.predict_lane as lane_module
    from core import artifacts

    _client, model_id, _conn = lane
    ids = [_queued(model_id, TEXTS[:1]) for _ in range(3)]
    calls = []

    def unreachable(artifact_dir, quantize):
        calls.append(artifact_dir)
        raise artifacts.ArtifactUnavailable("could not fetch the model")

    monkeypatch.setattr(lane_module, "predictor_for", unreachable)
    celery = _CeleryStub()
    assert lane_module.run_batch(celery, ids) == []
    assert len(calls) == 1 and sorted(celery.sent) == sorted(ids)
    assert all(_job(job_id).status == "queued" for job_id in ids)


def test_the_celery_path_announces_the_terminal_status_too(lane):
    """A job run by the ordinary task announces succeeded / failed (a /predict call then reads SQL once, as with
    the lane); a job stopped or given back announces only that it ended."""
    from core.queue import job_done_channel
    from worker.skeleton import _announce

    _client, _model_id, conn = lane
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(job_done_channel("j1"))
    try:
        for outcome in ("succeeded", "failed", "stopped", "released"):
            _announce("j1", outcome)
        heard, deadline = [], time.monotonic() + 5
        while len(heard) < 4 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=1)  # None for the subscription's own confirmation
            if message is not None:
                heard.append(message["data"].decode())
    finally:
        pubsub.close()
    assert heard == ["succeeded", "failed", "ended", "ended"]


def test_what_fits_the_lane_counts_inputs_and_their_characters_whatever_their_shape():
    small = predict_lane.MAX_LANE_CHARS // 8
    assert predict_lane.fits(["a text"] * predict_lane.MAX_LANE_INPUTS)
    assert not predict_lane.fits(["a text"] * (predict_lane.MAX_LANE_INPUTS + 1))
    assert predict_lane.fits([["x" * small, "y" * small]] * 4)  # sentence pairs: 8 x 1/8 = exactly the limit
    assert not predict_lane.fits([["x" * small, "y" * small]] * 4 + ["z"])
    assert not predict_lane.fits([{"question": "q", "context": "c" * predict_lane.MAX_LANE_CHARS}])
    assert not predict_lane.fits([["word"] * (predict_lane.MAX_LANE_CHARS // 4 + 1)])  # one long tokenized sentence
    assert predict_lane.fits([])


def test_popped_ids_stay_the_drainers_until_done_and_a_dead_drainers_go_back_on_the_lane(lane):
    """A drainer's popped ids sit on its own list while its process's holder key lives; once that key is gone (the
    process died with them), ``recover`` puts them back at the front of the lane in their order."""
    _client, _model_id, conn = lane
    conn.rpush(predict_lane.LANE_KEY, "a", "b", "c")
    live, dead = "host-a:11", "host-b:22"
    predict_lane.mark_alive(conn, live)
    predict_lane.mark_alive(conn, dead)
    assert predict_lane.pop_batch(conn, predict_lane.taken_key(dead, 0), limit=2, wait_s=0.1) == ["a", "b"]
    assert predict_lane.pop_batch(conn, predict_lane.taken_key(live, 1), limit=5, wait_s=0.1) == ["c"]
    assert conn.lrange(predict_lane.taken_key(dead, 0), 0, -1) == [b"a", b"b"]
    assert conn.llen(predict_lane.LANE_KEY) == 0
    assert predict_lane.pop_batch(conn, predict_lane.taken_key(live, 1), wait_s=0.1) == []
    assert predict_lane.recover(conn) == 0  # both holders alive: nothing moves

    predict_lane.mark_alive(conn, live, serving=False)  # drainers stuck: their ids stay theirs, no calls drawn in
    assert conn.exists(predict_lane.HOLDER_PREFIX + live) and conn.ttl(predict_lane.ALIVE_KEY) > 0
    conn.delete(predict_lane.ALIVE_KEY)
    predict_lane.mark_alive(conn, live, serving=False)
    assert not conn.exists(predict_lane.ALIVE_KEY)
    predict_lane.release_holder(conn, dead)  # as its key expiring after the process died
    conn.rpush(predict_lane.LANE_KEY, "d")
    assert predict_lane.recover(conn) == 2
    assert conn.lrange(predict_lane.LANE_KEY, 0, -1) == [b"a", b"b", b"d"]  # first in line again, in order
    assert not conn.exists(predict_lane.taken_key(dead, 0))
    assert conn.lrange(predict_lane.taken_key(live, 1), 0, -1) == [b"c"]  # the live drainer's are left alone


def test_a_worker_that_died_with_taken_jobs_has_them_run_by_a_live_drainer_exactly_once(lane, monkeypatch):
    """The ids a killed worker's drainer had popped (its taken list, its holder key expired) are given back by a
    live process's keeper and run by its drainers: each job succeeds once, answered well before the reconciler
    would re-send it; a second give-back of the same ids (a late holder) runs nothing twice."""
    import worker.predict_lane as lane_module

    _client, model_id, conn = lane
    ids = [_queued(model_id, [text]) for text in TEXTS]
    conn.rpush(predict_lane.taken_key("gone-host:4242", 0), *ids)  # no holder key: that process is dead
    monkeypatch.setattr(predict_lane, "ALIVE_EVERY_S", 0.05)
    celery = _CeleryStub()
    threads = lane_module.start(celery)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_job(job_id).status != "succeeded" for job_id in ids):
            time.sleep(0.05)
        assert [_job(job_id).status for job_id in ids] == ["succeeded"] * len(ids)
        assert not conn.exists(predict_lane.taken_key("gone-host:4242", 0))
        conn.rpush(predict_lane.taken_key("gone-host:4242", 0), *ids)  # the same ids again: claimed already
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (conn.exists(predict_lane.taken_key("gone-host:4242", 0))
                                               or conn.llen(predict_lane.LANE_KEY)):
            time.sleep(0.05)
        time.sleep(0.3)  # a drainer that popped them has finished its (empty) batch
    finally:
        lane_module.stop()
    assert not any(thread.is_alive() for thread in threads)
    assert celery.sent == []
    for job_id, text in zip(ids, TEXTS):
        job = _job(job_id)
        assert (job.status, job.attempts) == ("succeeded", 1)
        assert [t for _, t, _, _ in _predictions(job_id)] == [text]
    assert not list(conn.scan_iter(match=predict_lane.HOLDER_PREFIX + "*"))  # a warm stop lets its key go at once


def test_a_pop_whose_reply_is_lost_leaves_its_ids_on_the_drainers_list_to_give_back(lane, monkeypatch):
    """BLMOVE ran but the rest of the pop failed (a reply lost to a timeout): pop_batch raises, the ids that moved
    are on the drainer's list, and its give-back (what the drainer does after a Redis error) returns them first."""
    _client, _model_id, conn = lane
    conn.rpush(predict_lane.LANE_KEY, "a", "b", "c")
    taken = predict_lane.taken_key("host-c:33:abcd", 0)

    def lost(*args, **kwargs):
        raise redis.TimeoutError("reply lost")

    monkeypatch.setattr(conn, "eval", lost)
    with pytest.raises(redis.RedisError):
        predict_lane.pop_batch(conn, taken, wait_s=0.1)
    monkeypatch.undo()
    assert conn.lrange(taken, 0, -1) == [b"a"]
    assert predict_lane.give_back(conn, taken) == 1
    assert conn.lrange(predict_lane.LANE_KEY, 0, -1) == [b"a", b"b", b"c"] and not conn.exists(taken)
