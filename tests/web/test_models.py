"""GET /api/v1/models and /api/v1/models/<id>."""
from __future__ import annotations

from pathlib import Path

from web import schemas

from . import factories as f
from .helpers import assert_error

MODEL_FIELDS = {"id", "name", "version", "family", "encoder", "labels", "tasks", "metrics", "created_at",
                "training_job_id"}


def test_models_list_and_detail(client):
    dataset_id = f.make_dataset()
    job_id = f.make_train_job(dataset_id)
    single = f.make_model()
    multi = f.make_model(family="multitask", tasks={"label": ["neg", "pos"], "topic": ["film", "music"]}, name="mt")
    from core.db import db
    from core.schema import TrainedModel

    with db.session() as session:
        session.get(TrainedModel, single).training_job_id = job_id
    listing = client.get("/api/v1/models").json
    schemas.ModelList.model_validate(listing)
    assert listing["total"] == 2 and [m["id"] for m in listing["items"]] == [multi, single]
    model = client.get(f"/api/v1/models/{single}").json
    schemas.Model.model_validate(model)
    assert MODEL_FIELDS <= set(model)
    assert model["training_job_id"] == job_id and model["labels"] == ["neg", "pos"]
    assert "artifact_dir" not in model
    mt = client.get(f"/api/v1/models/{multi}").json
    assert mt["family"] == "multitask" and list(mt["tasks"]) == ["label", "topic"]


def test_unknown_model_is_404(client):
    assert_error(client.get("/api/v1/models/7"), 404, "not_found")


def test_model_serving_defaults_are_set_and_cleared(client):
    model_id = f.make_model()
    assert client.get(f"/api/v1/models/{model_id}").json["serving"] == {}
    response = client.patch(f"/api/v1/models/{model_id}", json={"quantize": True})
    assert response.status_code == 200 and response.json["serving"] == {"quantize": True}
    assert client.get(f"/api/v1/models/{model_id}").json["serving"] == {"quantize": True}
    assert client.patch(f"/api/v1/models/{model_id}", json={}).json["serving"] == {"quantize": True}  # unset: kept
    assert client.patch(f"/api/v1/models/{model_id}", json={"quantize": None}).json["serving"] == {}


def test_model_serving_update_rejects_bad_input(client):
    model_id = f.make_model()
    error = assert_error(client.patch(f"/api/v1/models/{model_id}", json={"quantize": "maybe"}), 422,
                         "validation_error")
    assert error["details"][0]["field"] == "quantize"
    assert_error(client.patch(f"/api/v1/models/{model_id}", json={"int8": True}), 422, "validation_error")
    assert_error(client.patch(f"/api/v1/models/{model_id}", data="[1]", content_type="application/json"), 400,
                 "invalid_json")
    assert_error(client.patch("/api/v1/models/999", json={"quantize": True}), 404, "not_found")
    assert client.get(f"/api/v1/models/{model_id}").json["serving"] == {}


def test_a_model_whose_files_the_sweep_found_missing_says_so(client, settings, tmp_path):
    """The reconciler's sweep marks a live model whose files are gone; its API answer and page tell the user."""
    from tests.factories import tiny_model_row
    from worker.reconciler import sweep_model_store

    (Path(settings.model_store) / "models").mkdir(parents=True)
    model_id = tiny_model_row(Path(settings.model_store) / "models" / "job-gone", ["a", "b"])
    assert client.get(f"/api/v1/models/{model_id}").get_json()["files_missing_at"] is None
    assert "model-files-missing" not in client.get(f"/models/{model_id}").get_data(as_text=True)

    assert sweep_model_store(settings).missing == [model_id]
    assert client.get(f"/api/v1/models/{model_id}").get_json()["files_missing_at"] is not None
    assert "model-files-missing" in client.get(f"/models/{model_id}").get_data(as_text=True)
