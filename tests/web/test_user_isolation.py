"""Two users on one instance: neither can see or touch the other's datasets, jobs, models or predictions.

Someone else's id answers exactly like a missing one (404), in lists, detail, predictions, export, cancel,
classify with their model and train on their dataset; the bundled samples (``shared``) are readable by all; admins see all.
"""
from __future__ import annotations

import io

import pytest
from sqlalchemy import func, select

from core.db import db
from core.schema import Job, JobStatus, TrainedModel
from tests.factories import make_user

from . import factories as f
from .helpers import assert_error


@pytest.fixture
def people(app, settings):
    """alice (owner of everything below), bob (a second user) and an admin, each with a token."""
    return {name: make_user(name, is_admin=(name == "root")) for name in ("alice", "bob", "root")}


@pytest.fixture
def alice_rows(app, people, client):
    """alice's dataset (uploaded through the API), model, queued train job and finished classify job."""
    alice = people["alice"]
    upload = client.post(
        "/api/v1/datasets", data={"file": (io.BytesIO(f.CSV), "mine.csv")}, headers=alice.headers,
        content_type="multipart/form-data",
    )
    assert upload.status_code == 201, upload.json
    dataset_id = upload.json["id"]
    model_id = f.make_model(owner_id=alice.id)
    train = client.post(
        "/api/v1/jobs/train", json={"dataset_id": dataset_id, "text_column": "text", "label_column": "label"},
        headers=alice.headers,
    )
    assert train.status_code == 202, train.json
    classify = f.make_classify_job(model_id, ["a", "b"], owner_id=alice.id)
    f.finished(classify, [
        {"index": 0, "text": "a", "label": "pos", "score": 0.9, "scores": {"pos": 0.9, "neg": 0.1}},
        {"index": 1, "text": "b", "label": "neg", "score": 0.8, "scores": {"pos": 0.2, "neg": 0.8}},
    ])
    return {"dataset": dataset_id, "model": model_id, "train": train.json["id"], "classify": classify}


def _get(client, path, user):
    return client.get(path, headers=user.headers)


def test_alice_sees_her_own_rows(client, people, alice_rows):
    alice = people["alice"]
    assert _get(client, f"/api/v1/datasets/{alice_rows['dataset']}", alice).json["owner_id"] == alice.id
    assert _get(client, f"/api/v1/models/{alice_rows['model']}", alice).json["owner_id"] == alice.id
    job = _get(client, f"/api/v1/jobs/{alice_rows['train']}", alice).json
    assert (job["owner_id"], job["status"]) == (alice.id, "queued")
    predictions = _get(client, f"/api/v1/jobs/{alice_rows['classify']}/predictions", alice).json
    assert [p["label"] for p in predictions["items"]] == ["pos", "neg"]
    export = _get(client, f"/api/v1/jobs/{alice_rows['classify']}/export?format=jsonl", alice)
    assert export.status_code == 200 and export.get_data(as_text=True).count("\n") == 2
    jobs = _get(client, "/api/v1/jobs", alice).json
    assert jobs["total"] == 2 and {j["id"] for j in jobs["items"]} == {alice_rows["train"], alice_rows["classify"]}


@pytest.mark.parametrize("path", [
    "/api/v1/datasets/{dataset}",
    "/api/v1/models/{model}",
    "/api/v1/jobs/{train}",
    "/api/v1/jobs/{classify}",
    "/api/v1/jobs/{classify}/predictions",
    "/api/v1/jobs/{classify}/export?format=csv",
    "/datasets/{dataset}",
    "/datasets/{dataset}.json",
    "/models/{model}",
    "/jobs/{train}",
    "/jobs/{classify}",
    "/jobs/{classify}.json",
    "/jobs/{classify}/export?format=csv",
])
def test_bob_gets_404_for_each_of_alices_rows(client, people, alice_rows, path):
    response = _get(client, path.format(**alice_rows), people["bob"])
    assert response.status_code == 404, (path, response.status_code)
    if path.startswith("/api/"):
        assert_error(response, 404, "not_found")
    # the admin sees the same row
    assert _get(client, path.format(**alice_rows), people["root"]).status_code == 200


def test_bob_lists_none_of_alices_rows(client, people, alice_rows):
    bob = people["bob"]
    for path in ("/api/v1/datasets", "/api/v1/models", "/api/v1/jobs"):
        body = _get(client, path, bob).json
        assert (body["total"], body["items"]) == (0, []), path
    assert _get(client, f"/api/v1/jobs?model_id={alice_rows['model']}", bob).json["total"] == 0
    for page in ("/", "/jobs", "/models", "/datasets"):
        html = _get(client, page, bob).get_data(as_text=True).replace('href="/models/import"', "")  # a form
        assert alice_rows["train"] not in html and "mine.csv" not in html and "/models/" not in html, page
    root = _get(client, "/api/v1/jobs", people["root"]).json
    assert root["total"] == 2


def test_a_cross_site_body_cannot_drive_the_api(client, people, alice_rows):
    """Bodies a cross-site form can send without a preflight are refused, even on routes that read no body."""
    alice = people["alice"]
    for content_type in ("text/plain", "application/x-www-form-urlencoded"):
        response = client.post(f"/api/v1/jobs/{alice_rows['train']}/cancel", data="x=1", headers=alice.headers,
                               content_type=content_type)
        assert_error(response, 415, "unsupported_media_type")
        response = client.post("/api/v1/jobs/train", data="", headers=alice.headers, content_type=content_type)
        assert_error(response, 415, "unsupported_media_type")
    with db.session() as session:
        assert session.get(Job, alice_rows["train"]).status == JobStatus.QUEUED.value
    assert client.post(f"/api/v1/jobs/{alice_rows['train']}/cancel", headers=alice.headers).status_code == 200


def test_bob_cannot_act_on_alices_rows(client, people, alice_rows):
    bob = people["bob"]
    assert_error(client.post(f"/api/v1/jobs/{alice_rows['train']}/cancel", headers=bob.headers), 404, "not_found")
    assert client.post(f"/jobs/{alice_rows['train']}/cancel", headers=bob.headers).status_code == 404
    with db.session() as session:
        assert session.get(Job, alice_rows["train"]).status == JobStatus.QUEUED.value
    assert_error(
        client.patch(f"/api/v1/models/{alice_rows['model']}", json={"quantize": True}, headers=bob.headers), 404
    )
    with db.session() as session:
        assert session.get(TrainedModel, alice_rows["model"]).serving is None
    # classify with her model, train on her dataset, classify her dataset with bob's own model
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": alice_rows["model"], "texts": ["x"]},
                             headers=bob.headers), 404, "not_found")
    assert_error(client.post("/api/v1/predict", json={"model_id": alice_rows["model"], "texts": ["x"]},
                             headers=bob.headers), 404, "not_found")
    assert_error(client.post("/api/v1/jobs/train", json={"dataset_id": alice_rows["dataset"], "text_column": "text",
                                                         "label_column": "label"}, headers=bob.headers), 404)
    own_model = f.make_model(owner_id=bob.id, name="bobs")
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": own_model, "dataset_id": alice_rows["dataset"],
                                                            "text_column": "text"}, headers=bob.headers), 404)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Job).where(Job.owner_id == bob.id)) == 0


def test_the_error_for_someone_elses_id_is_the_error_for_a_missing_one(client, people, alice_rows):
    bob = people["bob"]
    theirs = _get(client, f"/api/v1/models/{alice_rows['model']}", bob)
    missing = _get(client, "/api/v1/models/987654", bob)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json["error"]["message"].replace(str(alice_rows["model"]), "N") == \
        missing.json["error"]["message"].replace("987654", "N")


def test_shared_samples_are_readable_and_trainable_by_everyone(client, people):
    sample = f.make_dataset(name="sample", shared=True)  # a bundled sample: shared, owned by nobody
    private = f.make_dataset(name="legacy")  # no owner and not shared (e.g. from before accounts): admins only
    for name in ("alice", "bob"):
        user = people[name]
        assert _get(client, f"/api/v1/datasets/{sample}", user).status_code == 200
        assert _get(client, "/api/v1/datasets", user).json["total"] == 1
        response = client.post("/api/v1/jobs/train", headers=user.headers,
                               json={"dataset_id": sample, "text_column": "text", "label_column": "label"})
        assert response.status_code == 202 and response.json["owner_id"] == user.id
        assert _get(client, f"/api/v1/datasets/{private}", user).status_code == 404
    assert _get(client, f"/api/v1/datasets/{private}", people["root"]).status_code == 200
    # each sees only their own job on the shared dataset
    assert _get(client, "/api/v1/jobs", people["alice"]).json["total"] == 1


def test_tokens_and_users_belong_to_their_owner(client, people):
    alice, bob, root = people["alice"], people["bob"], people["root"]
    created = client.post("/api/v1/tokens", json={"name": "laptop"}, headers=alice.headers)
    assert created.status_code == 201 and created.json["token"].startswith("bq_")
    assert_error(client.delete(f"/api/v1/tokens/{created.json['id']}", headers=bob.headers), 404, "not_found")
    assert [t["name"] for t in _get(client, "/api/v1/tokens", bob).json["items"]] == ["default"]
    assert_error(_get(client, "/api/v1/users", bob), 403, "forbidden")
    assert_error(client.post("/api/v1/users", json={"username": "mallory"}, headers=bob.headers), 403, "forbidden")
    assert_error(client.delete(f"/api/v1/users/{alice.id}", headers=bob.headers), 403, "forbidden")
    names = [u["username"] for u in _get(client, "/api/v1/users", root).json["items"]]
    assert {"alice", "bob", "root"} <= set(names)


def test_unauthenticated_wrong_revoked_and_disabled_are_401(client, anonymous, people, alice_rows):
    alice = people["alice"]
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{alice_rows['train']}", "/api/v1/datasets", "/api/v1/models",
                 "/api/v1/tokens"):
        response = anonymous.get(path)
        assert_error(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(anonymous.post("/api/v1/jobs/classify", json={"model_id": 1, "texts": ["x"]}), 401)
    assert_error(anonymous.get("/api/v1/jobs", headers={"Authorization": "Bearer bq_not-a-token"}), 401)
    assert_error(anonymous.get("/api/v1/jobs", headers={"Authorization": f"Basic {alice.token}"}), 401)
    # revoke alice's token with a second one of hers: the first stops working at once
    second = client.post("/api/v1/tokens", json={"name": "second"}, headers=alice.headers).json
    first_id = [t["id"] for t in _get(client, "/api/v1/tokens", alice).json["items"] if t["name"] == "default"][0]
    revoked = client.delete(f"/api/v1/tokens/{first_id}", headers={"Authorization": f"Bearer {second['token']}"})
    assert revoked.status_code == 200 and revoked.json["revoked_at"] is not None
    assert_error(anonymous.get("/api/v1/jobs", headers=alice.headers), 401, "unauthorized")
    # an admin disables bob: his token stops working, his rows stay
    bob = people["bob"]
    assert client.delete(f"/api/v1/users/{bob.id}", headers=people["root"].headers).json["disabled_at"]
    assert_error(anonymous.get("/api/v1/jobs", headers=bob.headers), 401, "unauthorized")


def test_open_endpoints_and_metrics(app, anonymous, people, settings):
    for path in ("/healthz", "/readyz", "/api/v1/openapi.json"):
        assert anonymous.get(path).status_code == 200, path
    assert_error(anonymous.get("/metrics"), 401)
    assert_error(anonymous.get("/metrics", headers=people["bob"].headers), 403, "forbidden")
    assert b"bertqueue_jobs" in anonymous.get("/metrics", headers=people["root"].headers).data
    from web import create_app

    public = create_app({"TESTING": True, "SETTINGS": settings.replace(metrics_public=True)})
    assert public.test_client().get("/metrics").status_code == 200


def test_last_used_time_is_recorded(client, people):
    alice = people["alice"]
    assert [t["last_used_at"] for t in _get(client, "/api/v1/tokens", alice).json["items"]][0] is not None


def test_quota_of_active_jobs_per_user(settings, people, sent):
    from tests.factories import api_client
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_active_jobs_per_user=2)})
    model = f.make_model(owner_id=people["alice"].id)
    alice = api_client(app, people["alice"])
    for _ in range(2):
        assert alice.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["x"]}).status_code == 202
    error = assert_error(alice.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["x"]}), 429,
                         "too_many_active_jobs")
    assert "limit is 2" in error["message"]
    assert_error(alice.post("/api/v1/predict", json={"model_id": model, "texts": ["x"]}), 429)
    # bob's quota is his own; finishing one of alice's jobs frees a slot
    bob_model = f.make_model(owner_id=people["bob"].id, name="bobs")
    bob = api_client(app, people["bob"])
    assert bob.post("/api/v1/jobs/classify", json={"model_id": bob_model, "texts": ["x"]}).status_code == 202
    f.finished(sent[0][0], [{"index": 0, "text": "x", "label": "pos", "score": 1.0, "scores": {"pos": 1.0}}])
    assert alice.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["x"]}).status_code == 202


def test_training_work_is_capped(settings, people):
    from tests.factories import api_client
    from web import create_app

    app = create_app({"TESTING": True, "SETTINGS": settings.replace(max_training_work=1000)})
    dataset = f.make_dataset(owner_id=people["alice"].id)  # 4 rows
    client = api_client(app, people["alice"])
    body = {"dataset_id": dataset, "text_column": "text", "label_column": "label", "epochs": 2, "max_length": 128}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "training_too_large")
    assert "2 x 4 x 128 = 1,024" in error["message"]
    assert client.post("/api/v1/jobs/train", json={**body, "epochs": 1}).status_code == 202
    # evaluating a large validation dataset at every step counts too (a forward pass: a third of a step)
    rows = b"text,label\n" + b"".join(b"t%d,%s\n" % (i, b"pos" if i % 2 else b"neg") for i in range(20))
    validation = f.make_dataset(rows, owner_id=people["alice"].id)
    body = {**body, "epochs": 1, "validation_dataset_id": validation, "eval_steps": 1}
    error = assert_error(client.post("/api/v1/jobs/train", json=body), 422, "training_too_large")
    assert "2 evaluation(s) of 20 rows (1,706)" in error["message"]


@pytest.mark.postgres
def test_isolation_and_quota_on_postgresql(settings, postgres_schema_url, sent):
    """The same rules on a migrated PostgreSQL schema (row locks for the quota, BIGINT owner ids)."""
    from tests.factories import api_client, migrate
    from web import create_app

    migrate(postgres_schema_url)
    app = create_app({"TESTING": True, "SETTINGS": settings.replace(database_url=postgres_schema_url,
                                                                    max_active_jobs_per_user=1)})
    alice, bob = make_user("alice"), make_user("bob")
    as_alice, as_bob = api_client(app, alice), api_client(app, bob)
    upload = as_alice.post("/api/v1/datasets", data={"file": (io.BytesIO(f.CSV), "a.csv")},
                           content_type="multipart/form-data")
    assert upload.status_code == 201
    body = {"dataset_id": upload.json["id"], "text_column": "text", "label_column": "label"}
    job = as_alice.post("/api/v1/jobs/train", json=body)
    assert job.status_code == 202 and job.json["owner_id"] == alice.id
    assert_error(as_alice.post("/api/v1/jobs/train", json=body), 429, "too_many_active_jobs")
    for path in (f"/api/v1/jobs/{job.json['id']}", f"/api/v1/datasets/{upload.json['id']}"):
        assert_error(as_bob.get(path), 404, "not_found")
    assert_error(as_bob.post("/api/v1/jobs/train", json=body), 404, "not_found")
    assert as_bob.get("/api/v1/jobs").json["total"] == 0
    assert as_alice.get("/api/v1/jobs").json["total"] == 1
