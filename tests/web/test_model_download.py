"""GET /api/v1/models/<id>/download: a plain transformers checkpoint for bert (pooler) and distilbert, the
platform's own layout otherwise, a model card in both; streamed; others' and deleted models refused."""
from __future__ import annotations

import io
import json
import zipfile

import pytest

from core.db import db
from core.schema import TrainedModel, utcnow
from tests.factories import make_user, api_client

from . import factories as f
from .helpers import assert_error

TEXTS = ["I love this!", "The flight was delayed again and nobody told us why.", "meh", "Great service, rude staff"]
LABELS = ["negative", "neutral", "positive"]


def _save(family: str, encoder_dir, directory, *, seed: int = 3, **options):
    import torch

    from models.encoders import load_tokenizer
    from models.io import save_model
    from models.registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(family, {"sentiment": LABELS}, encoder_dir, **options)
        for name, parameter in model.named_parameters():  # large head weights: probabilities far from uniform
            if name.startswith("head."):
                parameter.data.add_(torch.randn_like(parameter))
    model.max_length = 24
    save_model(model, load_tokenizer(encoder_dir), directory,
               metadata={"training": {"text_normalization": "none", "max_length": 24}})
    return directory


def _row(directory, family: str, *, owner_id=None, name: str = "tweets", training_job_id=None, metrics=None) -> int:
    with db.session() as session:
        model = TrainedModel(name=name, version=1, family=family, encoder="tiny", labels=LABELS,
                             tasks={"sentiment": LABELS}, params={"family": family}, artifact_dir=str(directory),
                             owner_id=owner_id, training_job_id=training_job_id,
                             metrics=metrics or {"accuracy": 0.75, "macro_f1": 0.7})
        session.add(model)
        session.flush()
        return model.id


def _download(client, model_id: int, tmp_path) -> tuple[zipfile.ZipFile, object]:
    response = client.get(f"/api/v1/models/{model_id}/download")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "application/zip"
    assert response.is_streamed
    archive = zipfile.ZipFile(io.BytesIO(response.get_data()))
    assert archive.testzip() is None
    out = tmp_path / f"unzipped-{model_id}"
    archive.extractall(out)
    return archive, out, response


def _platform_probabilities(model_dir) -> list[list[float]]:
    from ml.inference import Predictor

    predictor = Predictor.load(model_dir)
    return [[result["scores"][label] for label in LABELS] for result in predictor.predict(TEXTS)]


def _hf_probabilities(folder) -> tuple[list[list[float]], object]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    batch = tokenizer(TEXTS, truncation=True, padding=True, return_tensors="pt")
    with torch.no_grad():
        probabilities = model(**batch).logits.softmax(-1)
    return probabilities.tolist(), model


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_download_is_a_transformers_checkpoint_with_the_same_probabilities(
        family, client, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    encoder = tiny_bert_dir if family == "bert" else tiny_distilbert_dir
    options = {"pooling": "pooler"} if family == "bert" else {}
    model_dir = _save(family, encoder, tmp_path / "model", **options)
    model_id = _row(model_dir, family)
    archive, folder, response = _download(client, model_id, tmp_path)
    assert response.headers["Content-Disposition"] == 'attachment; filename="tweets-v1.zip"'
    names = set(archive.namelist())
    assert {"README.md", "config.json", "model.safetensors", "tokenizer_config.json"} <= names
    assert "bertqueue_config.json" not in names  # the root is one checkpoint: transformers' weights only

    expected = _platform_probabilities(model_dir)
    got, hf_model = _hf_probabilities(folder)
    assert type(hf_model).__name__ == ("BertForSequenceClassification" if family == "bert"
                                       else "DistilBertForSequenceClassification")
    assert hf_model.config.id2label == dict(enumerate(LABELS))
    assert hf_model.config.label2id == {label: i for i, label in enumerate(LABELS)}
    for row_expected, row_got in zip(expected, got):
        assert row_got == pytest.approx(row_expected, abs=1e-5)
    assert max(max(row) for row in got) > 0.4  # the comparison means something: not uniform
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [type(hf_model).__name__]
    assert "_name_or_path" not in config  # no server paths in the download
    card = (folder / "README.md").read_text()
    assert "AutoModelForSequenceClassification.from_pretrained" in card


def test_bert_with_mean_pooling_downloads_in_the_platform_format(client, tiny_bert_dir, tmp_path):
    model_dir = _save("bert", tiny_bert_dir, tmp_path / "model", pooling="mean")
    model_id = _row(model_dir, "bert")
    archive, folder, _ = _download(client, model_id, tmp_path)
    assert "config.json" not in archive.namelist()
    assert {"bertqueue_config.json", "model.safetensors", "README.md"} <= set(archive.namelist())
    card = (folder / "README.md").read_text()
    assert "Predictor.load" in card and "load_model" in card and "'mean'" in card
    assert _platform_probabilities(folder) == _platform_probabilities(model_dir)  # the very same files


def test_social_normalization_is_platform_only(client, tiny_bert_dir, tmp_path):
    import torch

    from models.encoders import load_tokenizer
    from models.io import save_model
    from models.registry import build_model

    with torch.random.fork_rng(devices=[]):
        model = build_model("bert", {"sentiment": LABELS}, tiny_bert_dir)
    save_model(model, load_tokenizer(tiny_bert_dir), tmp_path / "m",
               metadata={"training": {"text_normalization": "social"}})
    archive, folder, _ = _download(client, _row(tmp_path / "m", "bert"), tmp_path)
    assert "config.json" not in archive.namelist()
    assert "normalized with 'social'" in (folder / "README.md").read_text()


def test_model_card_fields(client, tiny_bert_dir, tmp_path):
    dataset_id = f.make_dataset(name="airline tweets")
    job_id = f.make_train_job(dataset_id)
    model_dir = _save("bert", tiny_bert_dir, tmp_path / "model")
    metrics = {"accuracy": 0.8125, "macro_f1": 0.75, "train_examples": 3, "validation_examples": 1}
    model_id = _row(model_dir, "bert", name="air line|tweets", training_job_id=job_id, metrics=metrics)
    _, folder, response = _download(client, model_id, tmp_path)
    assert response.headers["Content-Disposition"] == 'attachment; filename="air_line_tweets-v1.zip"'
    card = (folder / "README.md").read_text()
    for expected in ("| Family | bert |", "| Encoder | tiny |", "| Labels | negative, neutral, positive |",
                     "airline tweets (4 rows: 3 for training, 1 for validation)", "| Accuracy | 0.8125 |",
                     "| Macro-F1 | 0.7500 |", "| Created | 20", "air line\\|tweets"):
        assert expected in card, expected


def test_others_missing_and_deleted_models(client, app, tiny_bert_dir, tmp_path):
    model_dir = _save("bert", tiny_bert_dir, tmp_path / "model")
    owner = make_user("owner")
    model_id = _row(model_dir, "bert", owner_id=owner.id)
    stranger = api_client(app, make_user("stranger"))
    assert_error(stranger.get(f"/api/v1/models/{model_id}/download"), 404, "not_found")
    assert api_client(app, owner).get(f"/api/v1/models/{model_id}/download").status_code == 200
    assert_error(client.get("/api/v1/models/99999/download"), 404, "not_found")
    assert_error(client.get(f"/api/v1/models/{f.make_model()}/download"), 410, "model_files_missing")
    with db.session() as session:
        session.get(TrainedModel, model_id).deleted_at = utcnow()
    assert_error(client.get(f"/api/v1/models/{model_id}/download"), 410, "model_deleted")


def test_weights_transformers_lacks_fall_back_to_the_platform_format(client, tiny_bert_dir, tmp_path):
    """A bert (pooler) model whose weights file holds an extra tensor is not passed off as a transformers one."""
    from safetensors.torch import load_file, save_file

    model_dir = _save("bert", tiny_bert_dir, tmp_path / "model")
    state = load_file(str(model_dir / "model.safetensors"))
    state["extra.buffer"] = state["head.classifier.bias"].clone()
    save_file(state, str(model_dir / "model.safetensors"))
    archive, folder, _ = _download(client, _row(model_dir, "bert"), tmp_path)
    assert "config.json" not in archive.namelist() and "bertqueue_config.json" in archive.namelist()
    assert "transformers' class does not have" in (folder / "README.md").read_text()
    (model_dir / "model.safetensors").unlink()
    assert_error(client.get(f"/api/v1/models/{_row(model_dir, 'bert', name='gone')}/download"), 410,
                 "model_files_missing")
