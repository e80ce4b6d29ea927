"""A multiple-choice model downloads as a plain transformers checkpoint (``BertForMultipleChoice`` /
``DistilBertForMultipleChoice``): ``AutoModelForMultipleChoice`` loads it and scores the choices as the platform
does, within 1e-4."""
from __future__ import annotations

import pytest

from core.db import db
from core.schema import TrainedModel

from .test_model_download import _download, _row

ROWS = [("A man sits at a piano.", "He", ["plays a song.", "eats the keys.", "flies to the moon."]),
        ("The dog sees a ball.", None, ["runs after it.", "writes a letter."])]


def _save(family, encoder_dir, directory):
    import torch

    from models.encoders import load_tokenizer
    from models.io import save_model
    from models.registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = build_model(family, {"choice": ["0", "1", "2"]}, encoder_dir, task_type="multiple-choice")
        for name, parameter in model.named_parameters():  # large head weights: scores far from uniform
            if name.startswith("head."):
                parameter.data.add_(torch.randn_like(parameter))
    model.max_length = 24
    save_model(model, load_tokenizer(encoder_dir), directory, metadata={"training": {"max_length": 24}})
    return directory


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_download_loads_in_auto_model_for_multiple_choice_with_the_same_scores(
        family, client, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    import torch
    from transformers import AutoModelForMultipleChoice, AutoTokenizer

    from ml.mc_serving import ChoicePredictor

    model_dir = _save(family, tiny_bert_dir if family == "bert" else tiny_distilbert_dir, tmp_path / "model")
    archive, folder, _ = _download(client, _row(model_dir, family), tmp_path)
    assert "bertqueue_config.json" not in archive.namelist()
    assert "AutoModelForMultipleChoice" in archive.read("README.md").decode()
    expected = ChoicePredictor.load(model_dir).predict(
        [{"context": c, "question": q, "choices": choices} for c, q, choices in ROWS])

    hf_model = AutoModelForMultipleChoice.from_pretrained(str(folder), local_files_only=True).eval()
    assert type(hf_model).__name__ == ("BertForMultipleChoice" if family == "bert" else "DistilBertForMultipleChoice")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    for (context, question, choices), answer in zip(ROWS, expected):
        seconds = [f"{question} {c}" if question else c for c in choices]
        batch = tokenizer([context] * len(choices), seconds, truncation=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            probabilities = hf_model(**{k: v.unsqueeze(0) for k, v in batch.items()}).logits.softmax(-1)[0]
        assert probabilities.tolist() == pytest.approx(answer["scores"], abs=1e-4)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_a_downloaded_checkpoint_imports_back_as_a_multiple_choice_model(
        family, client, tiny_bert_dir, tiny_distilbert_dir, tmp_path):
    """transformers' multiple-choice classes import: the model is a multiple-choice model that scores choices as
    the original does."""
    import io

    from ml.mc_serving import ChoicePredictor

    model_dir = _save(family, tiny_bert_dir if family == "bert" else tiny_distilbert_dir, tmp_path / "model")
    response = client.get(f"/api/v1/models/{_row(model_dir, family)}/download")
    imported = client.post("/api/v1/models/import", content_type="multipart/form-data",
                           data={"file": (io.BytesIO(response.get_data()), "mc.zip"), "name": "mc"})
    assert imported.status_code == 201, imported.get_json()
    model = imported.get_json()
    assert model["task_type"] == "multiple-choice" and model["labels"] == ["0", "1"]
    questions = [{"context": c, "question": q, "choices": choices} for c, q, choices in ROWS]
    expected = ChoicePredictor.load(model_dir).predict(questions)
    with db.session() as session:
        artifact_dir = session.get(TrainedModel, model["id"]).artifact_dir
    for got, want in zip(ChoicePredictor.load(artifact_dir).predict(questions), expected):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
        assert got["choice_index"] == want["choice_index"]
