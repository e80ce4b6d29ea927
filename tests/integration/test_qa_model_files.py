"""QA models as Hugging Face checkpoints, in Celery eager mode: a bert / distilbert QA model downloads as a plain
``<Family>ForQuestionAnswering`` checkpoint that ``AutoModelForQuestionAnswering`` loads with the same start / end
logits, and imports back as a QA model that answers as the original does."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

import worker.tasks  # noqa: F401  (registers the tasks, so eager sends run them in-process)
from core.db import db
from core.schema import TrainedModel
from tests.web.test_model_import import post

QA_CLASSES = {"bert": "BertForQuestionAnswering", "distilbert": "DistilBertForQuestionAnswering"}
QUESTIONS = [{"question": "where did Alice fly?", "context": "Alice flew to Paris on monday with Bob."},
             {"question": "who stayed?", "context": "Carol stayed at home while Dave flew to Lima and back again."}]


def _platform_qa_model(family: str, encoder_dir: Path, directory: Path) -> Path:
    import torch

    from models.encoders import load_tokenizer
    from models.io import save_model
    from models.registry import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = build_model(family, {"answer": ["start", "end"]}, encoder_dir, task_type="question-answering")
        model.head.qa_outputs.weight.data.normal_(0, 2.0)
    # contexts fit one window here and in the imported model (which reads up to the encoder's 512 positions)
    model.max_length, model.stride = 128, 32
    return save_model(model, load_tokenizer(encoder_dir), directory, metadata={"training": {"max_length": 128}})


def _row(directory: Path, family: str) -> int:
    with db.session() as session:
        model = TrainedModel(name="qa", version=1, family=family, encoder="tiny", labels=["start", "end"],
                             tasks={"answer": ["start", "end"]},
                             params={"task_type": "question-answering", "family": family,
                                     "context_column": "context", "question_column": "question",
                                     "answers_column": "answers"},
                             metrics={"f1": 0.5, "exact_match": 0.5}, artifact_dir=str(directory))
        session.add(model)
        session.flush()
        return model.id


def _answers(client, model_id: int) -> list[tuple]:
    response = client.post("/api/v1/predict", json={"model_id": model_id, "questions": QUESTIONS, "top_k": 3})
    assert response.status_code == 200, response.get_json()
    return [[(a["answer"], a["start"], round(a["score"], 4)) for a in p["answers"]]
            for p in response.get_json()["predictions"]]


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_qa_model_downloads_loads_in_transformers_and_imports_back(client, family, tiny_bert_dir,
                                                                   tiny_distilbert_dir, tmp_path):
    import torch
    from transformers import AutoModelForQuestionAnswering

    from models.io import load_model

    encoder = tiny_distilbert_dir if family == "distilbert" else tiny_bert_dir
    model_dir = _platform_qa_model(family, encoder, tmp_path / "model")
    model_id = _row(model_dir, family)
    served = _answers(client, model_id)

    download = client.get(f"/api/v1/models/{model_id}/download")
    assert download.status_code == 200
    data = download.get_data()
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path / "hf")
    folder = tmp_path / "hf"
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [QA_CLASSES[family]] and config["model_type"] == family

    ours, tokenizer = load_model(model_dir)
    theirs = AutoModelForQuestionAnswering.from_pretrained(str(folder)).eval()
    encoded = tokenizer([q["question"] for q in QUESTIONS], [q["context"] for q in QUESTIONS], padding=True,
                        return_tensors="pt", return_token_type_ids=True)
    extra = {"token_type_ids": encoded["token_type_ids"]} if family == "bert" else {}
    with torch.no_grad():
        mine = ours(encoded["input_ids"], encoded["attention_mask"], **extra)
        hf = theirs(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"], **extra)
    real = encoded["attention_mask"].bool()  # padding is no answer's position (and our inference skips it)
    assert torch.allclose(mine.start_logits[real], hf.start_logits[real], atol=1e-4)
    assert torch.allclose(mine.end_logits[real], hf.end_logits[real], atol=1e-4)

    imported = post(client, data, name="qa", filename="qa-v1.zip")
    assert imported.status_code == 201, imported.get_json()
    assert (imported.get_json()["task_type"], imported.get_json()["family"]) == ("question-answering", family)
    assert _answers(client, imported.get_json()["id"]) == served
