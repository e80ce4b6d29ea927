"""int8 serving: the request's ``quantize`` wins over the model's default, which wins over the deployment's."""
from __future__ import annotations

import pytest

from ml import inference
from ml.inference import Predictor

from .conftest import sample_csv, upload, wait_for_job
from .test_eager_flow import TEXTS, _train

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)


def _classify(client, model_id: int, **options) -> dict:
    response = client.post("/api/v1/jobs/classify", json={"model_id": model_id, "texts": TEXTS, **options})
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


def test_quantize_resolution_and_int8_predictor(client, tiny_encoders):
    trained = _train(client, upload(client, sample_csv(40)), tiny_encoders["bert"])
    model_id = trained["model_id"]
    inference.clear_predictor_cache()

    assert _classify(client, model_id)["metrics"]["quantized"] is False  # deployment default: off
    assert _classify(client, model_id, quantize=True)["metrics"]["quantized"] is True
    assert client.patch(f"/api/v1/models/{model_id}", json={"quantize": True}).status_code == 200
    assert _classify(client, model_id)["metrics"]["quantized"] is True  # the model's default
    assert _classify(client, model_id, quantize=False)["metrics"]["quantized"] is False  # the request wins

    # both precisions were loaded once each and kept apart in the cache
    cached = {key[3]: predictor for key, predictor in inference._cache.items()}
    assert set(cached) == {False, True}
    assert cached[True].quantized and not cached[False].quantized
    import torch

    int8_linear = [m for m in cached[True].model.modules() if "quantized" in type(m).__module__]
    assert int8_linear and not any(type(m) is torch.nn.Linear for m in cached[True].model.modules())
    assert any(type(m) is torch.nn.Linear for m in cached[False].model.modules())

    # int8 answers stay close to fp32 ones on the same texts (the tiny random model is not accuracy-tested here)
    fp32, int8 = cached[False].predict(TEXTS), cached[True].predict(TEXTS)
    for a, b in zip(fp32, int8):
        assert b["scores"] == pytest.approx(a["scores"], abs=0.05)


def test_load_applies_quantization_only_when_asked(tiny_bert_dir, tokenizer, tmp_path):
    from models.io import save_model
    from models.registry import build_model

    model = build_model("bert", {"s": ["a", "b"]}, tiny_bert_dir)
    directory = save_model(model, tokenizer, tmp_path / "m")
    assert Predictor.load(directory, device="cpu", quantize=True).quantized is True
    assert Predictor.load(directory, device="cpu", quantize=False).quantized is False
