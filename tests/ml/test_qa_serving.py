"""The QA backend on the batching engine: a tiny model trained through the loop answers its questions back, each
question's windows regrouped after the forward (also when they share batches with another request's rows)."""
from __future__ import annotations

import pytest

from ml.inference import _load
from ml.loop import train_classifier
from ml.qa_features import QAInputError
from ml.qa_serving import QAPredictor
from tests.ml.test_qa_training import qa_config, qa_examples, qa_rows


@pytest.fixture(scope="module")
def qa_model_dir(tiny_bert_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("qa-model") / "model"
    rows = qa_rows()
    result = train_classifier(rows, qa_config(encoder=str(tiny_bert_dir)), directory, validation_rows=rows)
    assert result.metrics["f1"] == 1.0
    return directory


def test_answers_come_back_through_the_engine(qa_model_dir):
    predictor = _load(str(qa_model_dir), "cpu", False)
    assert isinstance(predictor, QAPredictor) and predictor.no_answer and predictor.doc_stride == 4
    examples = qa_examples()
    questions, contexts = [e["question"] for e in examples], [e["context"] for e in examples]
    engine = predictor.serve()
    other = engine.submit(questions[:3], pairs=contexts[:3])  # shares batches with the next request
    future = engine.submit(questions, pairs=contexts)
    results = engine.backend.results(future.result(), future.encoded)
    assert len(future.encoded.rows) > len(questions)  # several windows per context
    for example, result in zip(examples, results):
        gold = example["answers"][0] if example["answers"] else ("", 0)
        assert (result["answer"], result["start"]) == gold, example
        assert result["end"] == result["start"] + len(result["answer"])
        assert result["answer"] == example["context"][result["start"]:result["end"]]
        assert result["question"] == example["question"] and 0 <= result["score"] <= 1
    assert [r["answer"] for r in engine.backend.results(other.result(), other.encoded)] == \
        [r["answer"] for r in results[:3]]
    top = engine.backend.results(future.result(), future.encoded, top_k=3, max_answer_length=2)
    assert all(len(r["answers"]) == 3 and r["answers"][0]["answer"] == r["answer"] for r in top)
    assert all(len(a["answer"].split()) <= 2 for r in top for a in r["answers"])
    scores = [a["score"] for a in top[0]["answers"]]
    assert scores == sorted(scores, reverse=True)


def test_bad_inputs_fail_before_queueing(qa_model_dir):
    predictor = QAPredictor.load(qa_model_dir)
    with pytest.raises(QAInputError, match="question 2 has"):
        predictor.encode(["ok?", " ".join(["word"] * 40)], pairs=["a context", "a context"])
    with pytest.raises(QAInputError):
        predictor.encode(["a question without context"])
    with pytest.raises(ValueError):
        predictor.results([[]], predictor.encode(["q?"], ["c"]), top_k=0)
