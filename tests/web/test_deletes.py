"""Quotas that can be freed: deleting a dataset (owner or admin; shared samples: admins only; 409 while a queued or
running job reads it; then 404 everywhere, content emptied, quota freed) and deleting a finished job with its
predictions (409 while active, or while the model it trained exists), through the API, the pages and PostgreSQL's
row locks."""
from __future__ import annotations

import io
import re
import threading
import time

import pytest

from core import dataset_store
from core import jobs as job_states
from core.accounts import Principal
from core.db import db
from core.schema import Dataset, Job, JobType, Prediction, TrainedModel
from tests.factories import api_client, make_user
from web import create_app

from . import factories as f
from .helpers import assert_error

TRAIN = {"text_column": "text", "label_column": "label"}
ROWS = [{"index": i, "text": t, "label": "pos", "score": 1.0, "scores": {"pos": 1.0}} for i, t in enumerate("ab")]


@pytest.fixture
def alice(app):
    return make_user("alice")


def _client(settings, user, **changes):
    app = create_app({"TESTING": True, "SETTINGS": settings.replace(**changes), "WTF_CSRF_ENABLED": False})
    return api_client(app, user)


def _upload(client, data: bytes = f.CSV):
    return client.post("/api/v1/datasets", data={"file": (io.BytesIO(data), "d.csv")},
                       content_type="multipart/form-data")


def _row(dataset_id: int) -> Dataset:
    with db.session() as session:
        dataset = session.get(Dataset, dataset_id)
        dataset.content  # noqa: B018 - load the deferred bytes before the session closes
        return dataset


# ---------------------------------------------------------------- DELETE /api/v1/datasets/<id>


def test_owner_deletes_a_dataset_and_it_is_gone_everywhere(settings, alice):
    client = _client(settings, alice)
    dataset = _upload(client).json["id"]
    model = f.make_model(owner_id=alice.id)
    answer = client.delete(f"/api/v1/datasets/{dataset}")
    assert answer.status_code == 200, answer.json
    assert answer.json["id"] == dataset and answer.json["deleted_at"] is not None
    row = _row(dataset)
    assert row.content == b"" and row.profile is None and row.name == "d"  # the space is freed, the name kept
    assert_error(client.get(f"/api/v1/datasets/{dataset}"), 404, "not_found")
    assert client.get("/api/v1/datasets").json["total"] == 0
    assert_error(client.post("/api/v1/jobs/train", json={"dataset_id": dataset, **TRAIN}), 404, "not_found")
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model, "dataset_id": dataset,
                                                            "text_column": "text"}), 404, "not_found")
    assert_error(client.post("/api/v1/jobs/evaluate", json={"model_id": model, "dataset_id": dataset,
                                                            "text_column": "text", "label_column": "label"}),
                 404, "not_found")
    assert_error(client.delete(f"/api/v1/datasets/{dataset}"), 404, "not_found")  # again: it is missing now
    assert f"/datasets/{dataset}" not in client.get("/datasets").get_data(as_text=True)
    assert client.get("/api/v1/account").json["usage"]["datasets"] == 0


def test_another_users_dataset_is_404_an_admins_delete_works(settings, alice):
    dataset = f.make_dataset(owner_id=alice.id)
    assert_error(_client(settings, make_user("bob")).delete(f"/api/v1/datasets/{dataset}"), 404, "not_found")
    assert _row(dataset).deleted_at is None
    assert _client(settings, make_user("root", is_admin=True)).delete(f"/api/v1/datasets/{dataset}").status_code == 200
    assert _row(dataset).deleted_at is not None


def test_shared_samples_are_deleted_by_admins_only(settings, alice):
    sample = f.make_dataset(shared=True, name="sample")
    error = assert_error(_client(settings, alice).delete(f"/api/v1/datasets/{sample}"), 403, "shared_dataset")
    assert "admin" in error["message"] and _row(sample).deleted_at is None
    assert _client(settings, make_user("root", is_admin=True)).delete(f"/api/v1/datasets/{sample}").status_code == 200


def test_a_dataset_in_use_is_refused_until_its_jobs_finish(settings, alice):
    client = _client(settings, alice)
    dataset = f.make_dataset(owner_id=alice.id)
    training = f.make_train_job(dataset, owner_id=alice.id)
    error = assert_error(client.delete(f"/api/v1/datasets/{dataset}"), 409, "dataset_in_use")
    assert error["job_ids"] == [training] and training in error["message"]
    f.start(training)  # running: still in use
    assert assert_error(client.delete(f"/api/v1/datasets/{dataset}"), 409, "dataset_in_use")["job_ids"] == [training]
    f.fail(training, "boom")
    assert client.delete(f"/api/v1/datasets/{dataset}").status_code == 200
    # the finished job stays readable and its page names the deleted dataset
    assert client.get(f"/api/v1/jobs/{training}").json["dataset_id"] == dataset
    page = client.get(f"/jobs/{training}").get_data(as_text=True)
    assert 'id="deleted-dataset"' in page and "reviews" in page and "deleted dataset" in page


def test_a_validation_dataset_and_a_dataset_classification_count_as_uses(settings, alice):
    client = _client(settings, alice)
    train, validation = f.make_dataset(owner_id=alice.id), f.make_dataset(owner_id=alice.id, name="held-out")
    training = f.make_train_job(train, owner_id=alice.id, validation_dataset_id=validation)
    assert assert_error(client.delete(f"/api/v1/datasets/{validation}"), 409,
                        "dataset_in_use")["job_ids"] == [training]
    assert client.delete(f"/api/v1/datasets/{train}").status_code == 409  # the training's own dataset, of course
    other = f.make_dataset(owner_id=alice.id, name="other")
    classify = f.make_dataset_classify_job(f.make_model(owner_id=alice.id), other)  # an ownerless job: "others"
    error = assert_error(client.delete(f"/api/v1/datasets/{other}"), 409, "dataset_in_use")
    assert error["job_ids"] == [] and "1 job(s) of other users" in error["message"]
    assert classify in assert_error(_client(settings, make_user("root", is_admin=True)).delete(
        f"/api/v1/datasets/{other}"), 409, "dataset_in_use")["job_ids"]


def test_deleting_a_dataset_frees_the_dataset_quota(settings, alice):
    client = _client(settings, alice, max_datasets_per_user=1, max_dataset_mb_per_user=1)
    first = _upload(client).json["id"]
    assert_error(_upload(client), 429, "quota_exceeded")
    assert client.delete(f"/api/v1/datasets/{first}").status_code == 200
    assert _upload(client).status_code == 201
    usage = client.get("/api/v1/account").json["usage"]
    assert (usage["datasets"], usage["dataset_bytes"]) == (1, len(f.CSV))


def test_a_submission_that_loses_the_race_to_a_delete_queues_nothing(settings, alice, monkeypatch):
    """The dataset is deleted (and committed) after the training request read its rows but before its job is
    written: the submission's lock re-reads the row and refuses (SQLite: the write lock; PostgreSQL: below)."""
    from web import services

    client = _client(settings, alice)
    dataset = f.make_dataset(owner_id=alice.id)
    original = services.check_training_columns

    def delete_meanwhile(*args, **kwargs):
        checked = original(*args, **kwargs)
        with db.session() as session:
            dataset_store.mark_deleted(session, Principal(id=alice.id, username="alice", is_admin=False), dataset)
        return checked

    monkeypatch.setattr(services, "check_training_columns", delete_meanwhile)
    error = assert_error(client.post("/api/v1/jobs/train", json={"dataset_id": dataset, **TRAIN}), 404, "not_found")
    assert "was deleted while" in error["message"]
    with db.session() as session:
        assert session.query(Job).count() == 0


@pytest.mark.postgres
def test_dataset_delete_and_submission_are_serialised_on_postgresql(settings, postgres_schema_url, sent):
    """A delete holding the row (FOR UPDATE) makes a submission wait, then refuse; a submission holding it (FOR KEY
    SHARE) with its job written makes the delete wait, then see the job (409 dataset_in_use)."""
    from tests.factories import migrate

    migrate(postgres_schema_url)
    app = create_app({"TESTING": True, "WTF_CSRF_ENABLED": False,
                      "SETTINGS": settings.replace(database_url=postgres_schema_url)})
    ann = make_user("ann")
    client, principal = api_client(app, ann), Principal(id=ann.id, username="ann", is_admin=False)
    first, second = f.make_dataset(owner_id=ann.id), f.make_dataset(owner_id=ann.id)
    answers: list = []

    with db.session() as session:
        dataset_store.mark_deleted(session, principal, first)
        thread = threading.Thread(target=lambda: answers.append(
            client.post("/api/v1/jobs/train", json={"dataset_id": first, **TRAIN})))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waits for the delete's commit
    thread.join(30)
    assert_error(answers[0], 404, "not_found")

    answers.clear()
    with db.session() as session:
        assert dataset_store.lock_dataset(session, second, shared=True)
        job = job_states.create_job(session, JobType.TRAIN, {"dataset_id": second}, dataset_id=second,
                                    owner_id=ann.id).id
        thread = threading.Thread(target=lambda: answers.append(client.delete(f"/api/v1/datasets/{second}")))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # waits for the submission's commit
    thread.join(30)
    assert assert_error(answers[0], 409, "dataset_in_use")["job_ids"] == [job]
    with db.session() as session:
        assert session.query(Job).count() == 1 and session.get(Dataset, second).deleted_at is None
        validation = Job.params["validation_dataset_id"].as_integer() == second  # the JSON path on PostgreSQL
        assert session.query(Job).filter(validation).count() == 0


# ---------------------------------------------------------------- DELETE /api/v1/jobs/<id>


def _classified(owner_id: int, model: int) -> str:
    return f.finished(f.make_classify_job(model, ["a", "b"], owner_id=owner_id), ROWS)


def test_owner_deletes_a_finished_job_and_its_predictions(settings, alice):
    client = _client(settings, alice)
    job = _classified(alice.id, f.make_model(owner_id=alice.id))
    answer = client.delete(f"/api/v1/jobs/{job}")
    assert answer.status_code == 200 and answer.json == {"id": job, "deleted": True, "predictions_deleted": 2}
    assert_error(client.get(f"/api/v1/jobs/{job}"), 404, "not_found")
    with db.session() as session:
        assert session.query(Prediction).count() == 0
    assert_error(client.delete(f"/api/v1/jobs/{job}"), 404, "not_found")


def test_another_users_job_is_404_an_admins_delete_works(settings, alice):
    job = _classified(alice.id, f.make_model(owner_id=alice.id))
    assert_error(_client(settings, make_user("bob")).delete(f"/api/v1/jobs/{job}"), 404, "not_found")
    assert _client(settings, make_user("root", is_admin=True)).delete(f"/api/v1/jobs/{job}").status_code == 200


def test_an_active_job_is_refused_until_cancelled(settings, alice):
    client = _client(settings, alice)
    job = f.make_classify_job(f.make_model(owner_id=alice.id), ["a"], owner_id=alice.id)
    assert "cancel it" in assert_error(client.delete(f"/api/v1/jobs/{job}"), 409, "job_active")["message"]
    f.start(job)
    assert_error(client.delete(f"/api/v1/jobs/{job}"), 409, "job_active")
    assert client.post(f"/api/v1/jobs/{job}/cancel").status_code == 200
    assert client.delete(f"/api/v1/jobs/{job}").status_code == 200
    # the worker still winding the cancelled job down finds it gone: its next heartbeat fails, nothing is written
    with db.session() as session:
        assert not job_states.heartbeat(session, job, "w1", 0.5)


def test_a_training_whose_model_exists_is_kept_until_the_model_is_deleted(settings, alice):
    client = _client(settings, alice)
    training = f.make_train_job(f.make_dataset(owner_id=alice.id), owner_id=alice.id)
    model = f.make_model(owner_id=alice.id)
    with db.session() as session:
        session.get(TrainedModel, model).training_job_id = training
    f.start(training)
    f.succeed(training, model_id=model)
    error = assert_error(client.delete(f"/api/v1/jobs/{training}"), 409, "job_has_model")
    assert error["model_id"] == model
    assert client.delete(f"/api/v1/models/{model}").status_code == 200
    assert client.delete(f"/api/v1/jobs/{training}").status_code == 200
    with db.session() as session:
        assert session.get(TrainedModel, model).training_job_id is None


def test_deleting_a_job_frees_the_prediction_quota(settings, alice):
    client = _client(settings, alice, max_predictions_per_user=2)
    model = f.make_model(owner_id=alice.id)
    job = _classified(alice.id, model)
    assert_error(client.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["x"]}), 429, "quota_exceeded")
    assert client.delete(f"/api/v1/jobs/{job}").status_code == 200
    assert client.post("/api/v1/jobs/classify", json={"model_id": model, "texts": ["x", "y"]}).status_code == 202


# ---------------------------------------------------------------- the pages' buttons


def test_dataset_page_delete_button(settings, alice):
    client = _client(settings, alice)
    dataset = f.make_dataset(owner_id=alice.id)
    page = client.get(f"/datasets/{dataset}").get_data(as_text=True)
    form = re.search(r'<form[^>]*id="delete-dataset"[^>]*>', page).group(0)
    assert f'action="/datasets/{dataset}/delete"' in form and "return confirm(" in form
    job = f.make_train_job(dataset, owner_id=alice.id)
    refused = client.post(f"/datasets/{dataset}/delete", follow_redirects=True).get_data(as_text=True)
    assert "is used by queued or running" in refused and job in refused
    f.fail(job, "boom")
    response = client.post(f"/datasets/{dataset}/delete")
    assert response.status_code == 302 and response.headers["Location"].endswith("/datasets")
    assert "deleted" in client.get("/datasets").get_data(as_text=True)
    assert client.get(f"/datasets/{dataset}").status_code == 404
    assert client.post(f"/datasets/{dataset}/delete").status_code == 404
    # a shared sample offers no button to a user, who could not delete it
    sample = f.make_dataset(shared=True)
    assert 'id="delete-dataset"' not in client.get(f"/datasets/{sample}").get_data(as_text=True)


def test_job_page_delete_button(settings, alice):
    client = _client(settings, alice)
    model = f.make_model(owner_id=alice.id)
    running = f.make_classify_job(model, ["a"], owner_id=alice.id)
    assert 'id="delete-job"' not in client.get(f"/jobs/{running}").get_data(as_text=True)
    assert "cancel it" in client.post(f"/jobs/{running}/delete", follow_redirects=True).get_data(as_text=True)
    job = _classified(alice.id, model)
    page = client.get(f"/jobs/{job}").get_data(as_text=True)
    form = re.search(r'<form[^>]*id="delete-job"[^>]*>', page).group(0)
    assert f'action="/jobs/{job}/delete"' in form and "return confirm(" in form
    response = client.post(f"/jobs/{job}/delete")
    assert response.status_code == 302 and response.headers["Location"].endswith("/jobs")
    assert client.get(f"/jobs/{job}").status_code == 404


def test_delete_buttons_need_the_csrf_token(settings, alice):
    app = create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": True})
    client = api_client(app, alice)
    dataset = f.make_dataset(owner_id=alice.id)
    job = _classified(alice.id, f.make_model(owner_id=alice.id))
    assert client.post(f"/datasets/{dataset}/delete").status_code == 400
    assert client.post(f"/jobs/{job}/delete", data={"csrf_token": "forged"}).status_code == 400
    assert _row(dataset).deleted_at is None
    for path, form_id in ((f"/datasets/{dataset}", "delete-dataset"), (f"/jobs/{job}", "delete-job")):
        page = client.get(path).get_data(as_text=True)
        token = re.search(rf'id="{form_id}".*?name="csrf_token" type="hidden" value="([^"]+)"', page, re.S).group(1)
        assert client.post(f"{path}/delete", data={"csrf_token": token}).status_code == 302
    assert _row(dataset).deleted_at is not None
