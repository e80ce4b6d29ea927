"""Token models as Hugging Face checkpoints (issue 17), in Celery eager mode: a bert / distilbert token model downloads
as a plain ``<Family>ForTokenClassification`` checkpoint that the transformers pipeline reads into the entities the
platform serves; a checkpoint transformers saved imports and is served with the pipeline's entities; an ``id2label``
that does not fit the classifier is refused."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from core.db import db
from core.schema import TrainedModel
from tests.web.helpers import assert_error
from tests.web.test_model_import import assert_nothing_left, folder_files, post, zip_bytes

from .conftest import wait_for_job

TAGS = ["O", "B-person", "I-person", "B-location", "I-location"]
TEXTS = [
    "Barack Obama visited New York City yesterday",
    "unbelievably, Zürich's mayor tweeted @someone about #snowfall",
    "Alice Smith flew from Paris to Lima with Bob",
    "a",
]
TOKEN_CLASSES = {"bert": "BertForTokenClassification", "distilbert": "DistilBertForTokenClassification"}


def _encoder(family: str, tiny_bert_dir: Path, tiny_distilbert_dir: Path) -> Path:
    return tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir


def _platform_token_model(family: str, encoder_dir: Path, directory: Path, *, seed: int = 3) -> Path:
    """A platform token model (``models.token_classification``) of ``family``, its head sharpened so that entities
    of several tokens occur, saved as training saves one."""
    import torch

    from models.encoders import load_tokenizer
    from models.io import save_model
    from models.registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(family, {"tags": TAGS}, encoder_dir, task_type="token-classification")
        if family != "bert_lstm":
            model.head.classifier.weight.data.normal_(0, 2.0)
    model.max_length, model.stride, model.scheme = 32, 8, "IOB2"
    return save_model(model, load_tokenizer(encoder_dir), directory,
                      metadata={"training": {"max_length": 32, "stride": 8}})


def _row(directory: Path, family: str, name: str = "ner") -> int:
    with db.session() as session:
        model = TrainedModel(name=name, version=1, family=family, encoder="tiny", labels=TAGS, tasks={"tags": TAGS},
                             params={"task_type": "token-classification", "family": family,
                                     "tokens_column": "tokens", "tags_column": "tags"},
                             metrics={"f1": 0.5, "precision": 0.5, "recall": 0.5, "accuracy": 0.9},
                             artifact_dir=str(directory))
        session.add(model)
        session.flush()
        return model.id


def _served(client, model_id: int, texts=TEXTS) -> list[list[dict]]:
    """The entities the platform serves for ``texts`` (``POST /api/v1/predict``, through the worker)."""
    answer = client.post("/api/v1/predict", json={"model_id": model_id, "texts": texts})
    assert answer.status_code == 200, answer.get_json()
    return [prediction["entities"] for prediction in answer.get_json()["predictions"]]


def _pipeline(folder: Path, texts=TEXTS) -> list[list[dict]]:
    """What transformers alone finds in ``texts`` with the checkpoint in ``folder``."""
    from transformers import pipeline

    tagger = pipeline("token-classification", model=str(folder), aggregation_strategy="first", device="cpu")
    return [tagger(text) for text in texts]


def _same_entities(got: list[list[dict]], expected: list[list[dict]], texts=TEXTS) -> None:
    assert len(got) == len(expected) == len(texts)
    for text, ours, theirs in zip(texts, got, expected):
        assert [(e["entity_group"], e["start"], e["end"]) for e in ours] == \
               [(e["entity_group"], e["start"], e["end"]) for e in theirs], text
        assert [e["score"] for e in ours] == pytest.approx([float(e["score"]) for e in theirs], abs=1e-4)
        assert all(e["word"] == text[e["start"]:e["end"]] for e in ours)
    assert sum(len(entities) for entities in got) >= 3  # the random models do tag: the comparison means something


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_token_model_downloads_as_a_transformers_checkpoint_and_imports_back(client, family, tiny_bert_dir,
                                                                              tiny_distilbert_dir, tmp_path):
    model_dir = _platform_token_model(family, _encoder(family, tiny_bert_dir, tiny_distilbert_dir),
                                      tmp_path / "model")
    model_id = _row(model_dir, family)
    served = _served(client, model_id)

    download = client.get(f"/api/v1/models/{model_id}/download")
    assert download.status_code == 200
    data = download.get_data()
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert "bertqueue_config.json" not in archive.namelist()
    archive.extractall(tmp_path / "hf")
    folder = tmp_path / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [TOKEN_CLASSES[family]] and config["model_type"] == family
    assert config["id2label"] == {str(i): tag for i, tag in enumerate(TAGS)}
    assert config["label2id"] == {tag: i for i, tag in enumerate(TAGS)} and "problem_type" not in config
    card = (folder / "README.md").read_text()
    assert card.startswith("---\npipeline_tag: token-classification\nlibrary_name: transformers\n")
    assert 'pipeline("token-classification"' in card and "| F1 | 0.5000 |" in card

    _same_entities(served, _pipeline(folder))  # transformers alone: the platform's entities

    imported = post(client, data, name="ner", filename="ner-v1.zip")
    assert imported.status_code == 201, imported.get_json()
    model = imported.get_json()
    assert (model["task_type"], model["family"], model["labels"]) == ("token-classification", family, TAGS)
    _same_entities(_served(client, model["id"]), served)


def test_a_trained_token_model_downloads_with_the_entities_it_serves(client, tiny_encoders, tmp_path):
    """Through the API: CoNLL upload -> training -> download -> the transformers pipeline finds the served
    entities (texts within the model's max_length of 16 tokens, which both read whole)."""
    from .api_steps import name_place_conll

    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(name_place_conll()), "ner.conll")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201, upload.get_json()
    body = {"dataset_id": upload.get_json()["id"], "task_type": "token-classification", "family": "distilbert",
            "encoder": str(tiny_encoders["distilbert"]), "epochs": 15, "batch_size": 8, "max_length": 16,
            "stride": 4, "learning_rate": 3e-3, "validation_split": 0.0, "seed": 1, "name": "trained-ner"}
    response = client.post("/api/v1/jobs/train", json=body)
    assert response.status_code == 202, response.get_json()
    job = wait_for_job(client, response.get_json()["id"])
    assert job["status"] == "succeeded", job.get("error")
    texts = ["Carol Smith flew to Lima", "Bob Smith flew to Paris and Dave to Berlin", "nobody flew"]
    served = _served(client, job["model_id"], texts)

    download = client.get(f"/api/v1/models/{job['model_id']}/download")
    assert download.status_code == 200
    zipfile.ZipFile(io.BytesIO(download.get_data())).extractall(tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| Training data | ner (16 rows: 16 for training, 0 for validation) |" in card
    _same_entities(served, _pipeline(tmp_path / "hf", texts), texts)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_a_transformers_token_checkpoint_imports_and_is_served_with_the_pipeline_s_entities(client, family,
                                                                                            tmp_path):
    checkpoint = hf_token_checkpoint(family, tmp_path / "hf")
    response = post(client, zip_bytes(folder_files(checkpoint)), name="hub-ner")
    assert response.status_code == 201, response.get_json()
    model = response.get_json()
    assert (model["task_type"], model["family"], model["labels"]) == ("token-classification", family, TAGS)
    with db.session() as session:
        saved = json.loads((Path(session.get(TrainedModel, model["id"]).artifact_dir)
                            / "bertqueue_config.json").read_text())
    assert (saved["format_version"], saved["task_type"], saved["scheme"]) == (3, "token-classification", "IOB2")
    assert client.get(f"/models/{model['id']}").status_code == 200  # the model page of an imported token model

    _same_entities(_served(client, model["id"]), _pipeline(checkpoint))
    words = ["Alice", "Smith", "flew", "to", "Paris"]
    tagged = client.post("/api/v1/predict", json={"model_id": model["id"], "tokens": [words]})
    assert tagged.status_code == 200, tagged.get_json()
    assert len(tagged.get_json()["predictions"][0]["tags"]) == len(words)

    # evaluated like a trained token model (the dataset's tags are among the model's): an imported model records no
    # columns, so the tokens / tags defaults apply
    from .api_steps import name_place_conll

    upload = client.post("/api/v1/datasets", data={"file": (io.BytesIO(name_place_conll()), "ner.conll")},
                         content_type="multipart/form-data")
    assert upload.status_code == 201, upload.get_json()
    evaluation = client.post("/api/v1/jobs/evaluate", json={"model_id": model["id"],
                                                            "dataset_id": upload.get_json()["id"]})
    assert evaluation.status_code == 202, evaluation.get_json()
    evaluated = wait_for_job(client, evaluation.get_json()["id"])
    assert evaluated["status"] == "succeeded", evaluated.get("error")
    assert evaluated["metrics"]["examples"] == 16 and 0.0 <= evaluated["metrics"]["f1"] <= 1.0


def test_a_token_checkpoint_whose_id2label_does_not_fit_its_classifier_is_refused(client, settings, tmp_path):
    checkpoint = hf_token_checkpoint("bert", tmp_path / "hf")
    files = folder_files(checkpoint)
    config = json.loads(files["config.json"].read_text())
    config["id2label"] = {str(i): tag for i, tag in enumerate(TAGS[:3])}  # 3 labels, 5 classifier outputs
    config["label2id"] = {tag: i for i, tag in enumerate(TAGS[:3])}
    error = assert_error(post(client, zip_bytes({**files, "config.json": json.dumps(config).encode()})), 422,
                         "labels_mismatch")
    assert "3 labels" in error["message"] and "classifier has 5 outputs" in error["message"]
    assert_nothing_left(settings)
    page = client.get("/models/import")  # the import page lists what imports: the token classes too
    assert page.status_code == 200 and b"<code>DistilBertForTokenClassification</code>" in page.data


def test_a_bert_lstm_token_model_downloads_in_the_platform_format(client, tiny_bert_dir, tmp_path):
    model_dir = _platform_token_model("bert_lstm", tiny_bert_dir, tmp_path / "model")
    download = client.get(f"/api/v1/models/{_row(model_dir, 'bert_lstm')}/download")
    assert download.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(download.get_data()))
    assert "config.json" not in archive.namelist() and "bertqueue_config.json" in archive.namelist()
    card = archive.read("README.md").decode()
    assert card.startswith("---\npipeline_tag: token-classification\ntags:")  # no transformers library to name
    assert "'bert_lstm' family has no transformers equivalent for token-classification" in card
    assert "TokenPredictor.load" in card


def hf_token_checkpoint(family: str, directory: Path, *, seed: int = 5) -> Path:
    """A tiny random ``<Family>ForTokenClassification`` + the packaged tokenizer, as save_pretrained writes it."""
    import torch
    from transformers import BertConfig, BertForTokenClassification, DistilBertConfig, DistilBertForTokenClassification

    from tests.factories import TINY_DIMS, _packaged_tokenizer

    kwargs = {} if family == "bert" else {"model_input_names": ["input_ids", "attention_mask"]}
    tokenizer = _packaged_tokenizer(**kwargs)
    labels = {"id2label": dict(enumerate(TAGS)), "label2id": {tag: i for i, tag in enumerate(TAGS)}}
    if family == "bert":
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=TINY_DIMS["hidden"],
                            num_hidden_layers=TINY_DIMS["layers"], num_attention_heads=TINY_DIMS["heads"],
                            intermediate_size=TINY_DIMS["intermediate"],
                            max_position_embeddings=TINY_DIMS["max_positions"], **labels)
        cls = BertForTokenClassification
    else:
        config = DistilBertConfig(vocab_size=len(tokenizer), dim=TINY_DIMS["hidden"], n_layers=TINY_DIMS["layers"],
                                  n_heads=TINY_DIMS["heads"], hidden_dim=TINY_DIMS["intermediate"],
                                  max_position_embeddings=TINY_DIMS["max_positions"], **labels)
        cls = DistilBertForTokenClassification
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
        model.classifier.weight.data.normal_(0, 2.0)  # sharp, varied per-token decisions
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    assert (directory / "model.safetensors").is_file()
    return directory
