"""The model registry over the API: versions by name, references ("name", "name:3") in classify/evaluate/predict,
DELETE /api/v1/models/<id> (in use, deleted, someone else's) and what stays readable after a delete."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core import jobs as job_states
from core import models_registry
from core.db import db
from core.models_registry import ModelRef, ModelRefError, parse_model_ref
from core.schema import Job, JobType, TrainedModel
from tests.factories import api_client, make_user
from web import schemas

from . import factories as f
from .helpers import assert_error


@pytest.fixture
def ann(app):
    """A normal user and their API client."""
    user = make_user("ann")
    return user, api_client(app, user)


def _model(settings, owner_id: int, *, name: str = "sentiment", version: int = 1, files: bool = True) -> int:
    """A model row of ``owner_id`` whose artifact_dir is a real directory inside MODEL_STORE."""
    model_id = f.make_model(name=name, version=version, owner_id=owner_id)
    directory = Path(settings.model_store, "models", f"m{model_id}")
    if files:
        directory.mkdir(parents=True)
        (directory / "model.safetensors").write_bytes(b"weights")
    with db.session() as session:
        session.get(TrainedModel, model_id).artifact_dir = str(directory)
    return model_id


def _job_count() -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


# ---------------------------------------------------------------- references


@pytest.mark.parametrize(("text", "ref"), [
    ("sentiment", ModelRef("sentiment")),
    ("sentiment:3", ModelRef("sentiment", 3)),
    ("a:b:2", ModelRef("a:b", 2)),  # the version follows the last colon
    ("tweets v2:007", ModelRef("tweets v2", 7)),
])
def test_parse_model_ref(text, ref):
    assert parse_model_ref(text) == ref and str(ref) in (text, "tweets v2:7")


@pytest.mark.parametrize("text", ["", " ", "a:b", "a:0", "a:-1", "a:", ":3", "a:99999999999999999999", "a:2147483648",
                                  "a\x00", " a", "a :1", "a:\u0661", "x" * 201])
def test_parse_model_ref_refuses(text):
    with pytest.raises(ModelRefError):
        parse_model_ref(text)


def test_versions_by_name_newest_first(settings, ann):
    user, client = ann
    v1 = _model(settings, user.id, version=1)
    other = _model(settings, user.id, name="topics")
    v2 = _model(settings, user.id, version=2)
    listing = client.get("/api/v1/models?name=sentiment").json
    schemas.ModelList.model_validate(listing)
    assert [(m["id"], m["version"]) for m in listing["items"]] == [(v2, 2), (v1, 1)] and listing["total"] == 2
    assert [m["id"] for m in client.get("/api/v1/models").json["items"]] == [v2, other, v1]  # newest first
    assert client.get("/api/v1/models?name=").json["total"] == 3  # empty: no filter
    assert client.get("/api/v1/models?name=nothing").json == {"items": [], "total": 0, "limit": 100, "offset": 0}
    model = client.get(f"/api/v1/models/{v1}").json
    assert model["source"] == "trained" and model["deleted_at"] is None
    assert_error(client.get("/api/v1/models?include_deleted=yes"), 400, "invalid_parameter")
    assert_error(client.get("/api/v1/models?name=" + "x" * 201), 400, "invalid_parameter")


def test_references_pick_the_version(settings, ann, sent):
    user, client = ann
    v1 = _model(settings, user.id, version=1)
    v2 = _model(settings, user.id, version=2)
    for ref, expected in (("sentiment", v2), ("sentiment:1", v1), ("sentiment:2", v2)):
        response = client.post("/api/v1/jobs/classify", json={"model": ref, "texts": ["great"]})
        assert response.status_code == 202, response.json
        job = response.json
        assert job["model_id"] == expected and job["params"]["model_id"] == expected and "model" not in job["params"]
    dataset_id = f.make_dataset(owner_id=user.id)
    response = client.post("/api/v1/jobs/evaluate", json={"model": "sentiment:1", "dataset_id": dataset_id,
                                                          "text_column": "text", "label_column": "label"})
    assert response.status_code == 202, response.json
    assert response.json["model_id"] == v1 and response.json["params"]["model_id"] == v1
    response = client.post("/api/v1/predict", json={"model": "sentiment", "texts": ["great"], "timeout_s": 0})
    assert response.status_code == 202 and response.json["model_id"] == v2


@pytest.mark.parametrize("ref", ["", "a:b", "a:0", "a:99999999999999999999", "sentiment\x00", "sentiment:1\x00",
                                 " sentiment", 7, None])
def test_bad_references_are_422(settings, ann, ref):
    user, client = ann
    _model(settings, user.id)
    for path in ("/api/v1/jobs/classify", "/api/v1/predict"):
        error = assert_error(client.post(path, json={"model": ref, "texts": ["x"]}), 422, "validation_error")
        assert error["details"][0]["field"] in ("model", "model_id")
    assert _job_count() == 0


def test_model_and_model_id_exactly_one(settings, ann):
    user, client = ann
    model_id = _model(settings, user.id)
    both = assert_error(client.post("/api/v1/jobs/classify", json={"model": "sentiment", "model_id": model_id,
                                                                   "texts": ["x"]}), 422, "validation_error")
    assert "not both" in both["message"]
    neither = assert_error(client.post("/api/v1/jobs/classify", json={"texts": ["x"]}), 422, "validation_error")
    assert "model" in neither["message"]
    dataset_id = f.make_dataset(owner_id=user.id)
    assert_error(client.post("/api/v1/jobs/evaluate", json={"dataset_id": dataset_id}), 422, "validation_error")
    assert_error(client.post("/api/v1/jobs/evaluate", json={"dataset_id": dataset_id, "model": "a:b"}), 422,
                 "validation_error")
    assert _job_count() == 0


def test_unknown_and_foreign_names_are_404(app, settings, ann, client):
    user, ann_client = ann
    bob = make_user("bob")
    _model(settings, bob.id, name="bobs")
    _model(settings, user.id, version=1)
    for ref in ("nothing", "sentiment:9", "bobs", "bobs:1"):
        assert_error(ann_client.post("/api/v1/jobs/classify", json={"model": ref, "texts": ["x"]}), 404, "not_found")
        assert_error(ann_client.post("/api/v1/predict", json={"model": ref, "texts": ["x"]}), 404, "not_found")
    # names are the caller's own, even for an admin (versions count per owner): ids reach other users' models
    assert_error(client.post("/api/v1/jobs/classify", json={"model": "bobs", "texts": ["x"]}), 404, "not_found")
    assert _job_count() == 0


# ---------------------------------------------------------------- delete


def test_delete_refused_while_a_job_uses_the_model(settings, ann, client):
    user, ann_client = ann
    model_id = _model(settings, user.id)
    queued = f.make_classify_job(model_id, ["x"], owner_id=user.id)
    running = f.make_classify_job(model_id, ["y"], owner_id=user.id)
    f.start(running)
    admins = f.make_classify_job(model_id, ["z"])  # an admin's job (no owner): not named to ann
    error = assert_error(ann_client.delete(f"/api/v1/models/{model_id}"), 409, "model_in_use")
    assert set(error["job_ids"]) == {queued, running}
    assert queued in error["message"] and running in error["message"] and "1 job(s) of other users" in error["message"]
    assert admins not in error["message"]
    admin_error = assert_error(client.delete(f"/api/v1/models/{model_id}"), 409, "model_in_use")
    assert set(admin_error["job_ids"]) == {queued, running, admins}
    # nothing changed
    assert ann_client.get(f"/api/v1/models/{model_id}").json["deleted_at"] is None
    assert Path(settings.model_store, "models", f"m{model_id}", "model.safetensors").exists()
    for job_id in (queued, running, admins):
        with db.session() as session:
            job_states.cancel(session, job_id)
    assert ann_client.delete(f"/api/v1/models/{model_id}").status_code == 200


def test_delete_marks_the_row_removes_the_files_and_keeps_jobs_readable(settings, ann, sent):
    user, client = ann
    v1 = _model(settings, user.id, version=1)
    v2 = _model(settings, user.id, version=2)
    job_id = f.make_classify_job(v2, ["a", "b"], owner_id=user.id)
    f.start(job_id)
    f.add_single_task_predictions(job_id, ["a", "b"])
    f.succeed(job_id)
    directory = Path(settings.model_store, "models", f"m{v2}")

    response = client.delete(f"/api/v1/models/{v2}")
    assert response.status_code == 200, response.json
    body = schemas.Model.model_validate(response.json)
    assert body.id == v2 and body.deleted_at is not None
    assert not directory.exists() and Path(settings.model_store, "models", f"m{v1}").exists()
    assert client.get(f"/api/v1/models/{v2}").json["deleted_at"] == body.deleted_at
    assert [m["id"] for m in client.get("/api/v1/models").json["items"]] == [v1]
    assert [m["id"] for m in client.get("/api/v1/models?name=sentiment&include_deleted=true").json["items"]] == [v2, v1]
    assert client.get("/api/v1/models?include_deleted=false").json["total"] == 1
    # its job, predictions and export stay readable
    assert client.get(f"/api/v1/jobs/{job_id}").json["model_id"] == v2
    assert client.get(f"/api/v1/jobs/{job_id}/predictions").json["total"] == 2
    export = client.get(f"/api/v1/jobs/{job_id}/export")
    assert export.status_code == 200 and "a" in export.get_data(as_text=True)
    # it cannot be used, by id or by name:version; the bare name falls back to the latest live version
    jobs_before = _job_count()
    for body in ({"model_id": v2}, {"model": "sentiment:2"}):
        error = assert_error(client.post("/api/v1/jobs/classify", json={**body, "texts": ["x"]}), 409, "model_deleted")
        assert "deleted" in error["message"]
        assert_error(client.post("/api/v1/predict", json={**body, "texts": ["x"]}), 409, "model_deleted")
        dataset_id = f.make_dataset(owner_id=user.id)
        assert_error(client.post("/api/v1/jobs/evaluate", json={**body, "dataset_id": dataset_id}), 409,
                     "model_deleted")
    assert _job_count() == jobs_before
    assert client.post("/api/v1/jobs/classify", json={"model": "sentiment", "texts": ["x"]}).json["model_id"] == v1
    # deleting again: 409; every version deleted: the bare name is refused too
    assert_error(client.delete(f"/api/v1/models/{v2}"), 409, "model_deleted")
    for job in client.get("/api/v1/jobs?status=queued").json["items"]:
        client.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert client.delete(f"/api/v1/models/{v1}").status_code == 200
    assert_error(client.post("/api/v1/jobs/classify", json={"model": "sentiment", "texts": ["x"]}), 409,
                 "model_deleted")


def test_delete_someone_elses_model_is_404(settings, ann):
    user, client = ann
    bob = make_user("bob")
    model_id = _model(settings, bob.id)
    assert_error(client.delete(f"/api/v1/models/{model_id}"), 404, "not_found")
    assert_error(client.delete("/api/v1/models/99999"), 404, "not_found")
    assert_error(client.delete(f"/api/v1/models/{2**63}"), 404)
    with db.session() as session:
        assert session.get(TrainedModel, model_id).deleted_at is None
    assert Path(settings.model_store, "models", f"m{model_id}").exists()


def test_delete_never_removes_files_outside_the_store(settings, ann, tmp_path):
    user, client = ann
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    model_id = f.make_model(owner_id=user.id)
    with db.session() as session:
        session.get(TrainedModel, model_id).artifact_dir = str(outside)
    assert client.delete(f"/api/v1/models/{model_id}").status_code == 200
    assert outside.exists()


def test_delete_tells_workers_best_effort(settings, ann, monkeypatch):
    user, client = ann
    model_id = _model(settings, user.id)
    calls = []

    def broken_broadcast(app, model_dir):
        calls.append(model_dir)
        raise ConnectionError("broker down")

    monkeypatch.setattr("web.services.broadcast_model_deleted", broken_broadcast)
    response = client.delete(f"/api/v1/models/{model_id}")
    assert response.status_code == 200 and response.json["deleted_at"]
    assert calls == [str(Path(settings.model_store, "models", f"m{model_id}"))]


def test_delete_waits_for_a_submission_holding_the_model(settings, ann):
    """A submission locks the model row until its job is committed; a delete that comes meanwhile waits, then sees
    the job (SQLite: the write lock; PostgreSQL: FOR KEY SHARE against FOR UPDATE)."""
    user, client = ann
    model_id = _model(settings, user.id)
    answers = []
    with db.session() as session:
        model = session.get(TrainedModel, model_id)
        models_registry.lock_model(session, model, shared=True)
        job_states.create_job(session, JobType.CLASSIFY, {"model_id": model_id}, model_id=model_id, owner_id=user.id)
        thread = threading.Thread(target=lambda: answers.append(client.delete(f"/api/v1/models/{model_id}")))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # blocked until the submission commits
    thread.join(30)
    assert_error(answers[0], 409, "model_in_use")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated(request, tmp_path, sent):
    """(app settings, a normal user, their client) on a freshly migrated database of each backend."""
    from core import runtime
    from core.config import Settings
    from tests.factories import migrate
    from web import create_app

    url = (request.getfixturevalue("postgres_schema_url") if request.param == "postgresql"
           else f"sqlite:///{tmp_path / 'registry.db'}")
    migrate(url)
    settings = Settings(database_url=url, redis_url="redis://127.0.0.1:6379/15", model_store=str(tmp_path / "models"),
                        device="cpu", secret_key="test-secret", celery_eager=True, predict_timeout_s=0.0)
    runtime.configure(settings)
    app = create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": False})
    user = make_user("ann")
    try:
        yield settings, user, api_client(app, user)
    finally:
        db.dispose()


def test_submission_and_delete_never_both_succeed(migrated):
    """Either order on both backends: a delete that holds the model row makes a submission wait and then refuse
    (409 model_deleted); a submission that holds it makes the delete wait and then refuse (409 model_in_use)."""
    settings, user, client = migrated
    first, second = _model(settings, user.id, version=1), _model(settings, user.id, version=2)

    # a delete holds model 1: the submission waits for its commit, then finds it deleted
    answers = []
    with db.session() as session:
        models_registry.mark_deleted(session, _principal(user), first)
        thread = threading.Thread(target=lambda: answers.append(
            client.post("/api/v1/jobs/classify", json={"model": "sentiment:1", "texts": ["x"]})))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()
    thread.join(30)
    assert_error(answers[0], 409, "model_deleted")

    # a submission holds model 2: the delete waits for its commit, then finds the job
    answers.clear()
    with db.session() as session:
        model = session.get(TrainedModel, second)
        models_registry.lock_model(session, model, shared=True)
        job_states.create_job(session, JobType.CLASSIFY, {"model_id": second}, model_id=second, owner_id=user.id)
        thread = threading.Thread(target=lambda: answers.append(client.delete(f"/api/v1/models/{second}")))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()
    thread.join(30)
    assert_error(answers[0], 409, "model_in_use")
    with db.session() as session:
        assert session.get(TrainedModel, second).deleted_at is None


def _principal(user):
    from core.accounts import Principal

    return Principal(id=user.id, username=user.username, is_admin=False)
