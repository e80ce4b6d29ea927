"""The models list and model page: name:vN, source, download link, the delete button (CSRF), a deleted model."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.db import db
from core.schema import TrainedModel
from tests.factories import api_client
from web.model_files import Download

from . import factories as f


def _model(settings, **kwargs) -> int:
    model_id = f.make_model(**kwargs)
    directory = Path(settings.model_store, "models", f"m{model_id}")
    directory.mkdir(parents=True)
    with db.session() as session:
        session.get(TrainedModel, model_id).artifact_dir = str(directory)
    return model_id


def test_model_page_shows_name_version_source_and_actions(client, settings):
    model_id = _model(settings, name="tweets", version=3)
    html = client.get(f"/models/{model_id}").get_data(as_text=True)
    assert "tweets:v3" in html and "trained here" in html
    assert f'href="/models/{model_id}/download"' in html
    assert f'action="/models/{model_id}/delete"' in html and 'id="evaluate-form"' in html
    assert "was deleted" not in html


def test_delete_button_deletes_and_lists_no_more(client, settings):
    keep, gone = _model(settings, name="keep"), _model(settings, name="gone", version=2)
    response = client.post(f"/models/{gone}/delete")
    assert response.status_code == 302 and response.headers["Location"] == "/models"
    listing = client.get("/models").get_data(as_text=True)
    assert "Model gone:v2 deleted" in listing
    assert f"/models/{keep}\"" in listing and f"/models/{gone}\"" not in listing
    assert not Path(settings.model_store, "models", f"m{gone}").exists()
    page = client.get(f"/models/{gone}").get_data(as_text=True)  # still readable, with no actions
    assert "This model was deleted" in page
    assert "/download" not in page and "/delete" not in page and 'id="evaluate-form"' not in page
    assert "Classify with this model" not in page
    again = client.post(f"/models/{gone}/delete", follow_redirects=True).get_data(as_text=True)
    assert "was already deleted" in again


def test_delete_button_in_use_says_which_jobs(client, settings):
    model_id = _model(settings)
    job_id = f.make_classify_job(model_id, ["a"])
    response = client.post(f"/models/{model_id}/delete", follow_redirects=True)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and job_id in html and "queued or running" in html
    with db.session() as session:
        assert session.get(TrainedModel, model_id).deleted_at is None


def test_delete_unknown_model_is_404(client):
    assert client.post("/models/999/delete").status_code == 404


def test_delete_needs_the_csrf_token(settings):
    from web import create_app

    csrf_client = api_client(create_app({"TESTING": True, "SETTINGS": settings, "WTF_CSRF_ENABLED": True}))
    model_id = _model(settings)
    assert csrf_client.post(f"/models/{model_id}/delete").status_code == 400
    assert csrf_client.post(f"/models/{model_id}/delete", data={"csrf_token": "forged"}).status_code == 400
    page = csrf_client.get(f"/models/{model_id}").get_data(as_text=True)
    token = re.search(r'id="delete-model".*?name="csrf_token" type="hidden" value="([^"]+)"', page, re.S).group(1)
    with db.session() as session:
        assert session.get(TrainedModel, model_id).deleted_at is None
    assert csrf_client.post(f"/models/{model_id}/delete", data={"csrf_token": token}).status_code == 302
    with db.session() as session:
        assert session.get(TrainedModel, model_id).deleted_at is not None


def test_download_link_streams_the_zip_for_a_logged_in_browser(client, settings, monkeypatch):
    model_id = _model(settings)
    calls = []

    def fake_download(user, wanted):
        calls.append(wanted)
        return Download("sentiment-v1.zip", iter([b"PK", b"\x03\x04"]), True)

    monkeypatch.setattr("web.model_files.download", fake_download)
    response = client.get(f"/models/{model_id}/download")
    assert response.status_code == 200 and response.data == b"PK\x03\x04" and calls == [model_id]
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Disposition"] == 'attachment; filename="sentiment-v1.zip"'


@pytest.mark.parametrize("deleted", [False, True])
def test_download_page_errors_are_html(client, settings, deleted):
    model_id = f.make_model()  # artifact_dir /nonexistent: its files are missing
    if deleted:
        client.delete(f"/api/v1/models/{model_id}")
    response = client.get(f"/models/{model_id}/download")
    assert response.status_code == 410 and response.mimetype == "text/html"
    assert client.get("/models/999/download").status_code == 404


def test_download_needs_a_login(anonymous, settings):
    model_id = _model(settings)
    response = anonymous.get(f"/models/{model_id}/download")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_train_job_page_of_a_deleted_model_offers_no_classify(client, settings):
    model_id = _model(settings, name="gone")
    train = f.make_train_job(f.make_dataset())
    f.start(train)
    f.succeed(train, metrics={"accuracy": 0.5}, model_id=model_id)
    assert "Classify with this model" in client.get(f"/jobs/{train}").get_data(as_text=True)
    assert client.delete(f"/api/v1/models/{model_id}").status_code == 200
    html = client.get(f"/jobs/{train}").get_data(as_text=True)
    assert f'/models/{model_id}"' in html and "deleted" in html  # the link stays, marked
    assert "Classify with this model" not in html
