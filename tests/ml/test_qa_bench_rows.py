"""The WNUT-17 question-answering benchmark's set builder (``bench/qa_wnut.py``) on a tiny inline CoNLL text."""
import importlib.util
import json
from pathlib import Path

from core.task_types.question_answering import Columns, read_examples

_SPEC = importlib.util.spec_from_file_location("qa_wnut", Path(__file__).resolve().parents[2] / "bench" / "qa_wnut.py")
qa_wnut = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(qa_wnut)

CONLL = (
    "Empire\tB-location\nState\tI-location\nBuilding\tI-location\n=\tO\nESB\tB-location\n.\tO\n\t\n"
    "@paul\tO\nloves\tO\nApple\tB-corporation\nand\tO\nI-only\tI-person\nBob\tB-person\nJones\tI-person\n\n"
    "nothing\tO\nhere\tO\n"
)


def _answers(row):
    return json.loads(row["answers"])


def test_six_questions_per_sentence_with_every_span_of_the_type():
    sentences = qa_wnut.read_sentences(CONLL.encode())
    assert [tokens for tokens, _ in sentences][2] == ["nothing", "here"]
    rows = qa_wnut.qa_rows(sentences)
    assert len(rows) == 6 * 3
    by_question = {(r["context"], r["question"]): _answers(r) for r in rows}
    first = "Empire State Building = ESB ."
    # several gold answers: both locations, with their character offsets in the space-joined sentence
    assert by_question[(first, "Which location is mentioned?")] == {"text": ["Empire State Building", "ESB"],
                                                                    "answer_start": [0, 24]}
    assert by_question[(first, "Which person is mentioned?")] == {"text": [], "answer_start": []}
    second = "@paul loves Apple and I-only Bob Jones"
    assert by_question[(second, "Which corporation is mentioned?")]["text"] == ["Apple"]
    # an I- tag that continues nothing starts its own entity (CoNLL rules); B- always starts a new one
    assert by_question[(second, "Which person is mentioned?")] == {"text": ["I-only", "Bob Jones"],
                                                                   "answer_start": [22, 29]}
    assert all(not _answers(r)["text"] for r in rows if r["context"] == "nothing here")
    assert {r["question"] for r in rows} == {f"Which {t} is mentioned?" for t in qa_wnut.TYPES}


def test_rows_are_what_the_platform_reads():
    rows = qa_wnut.qa_rows(qa_wnut.read_sentences(CONLL.encode()))
    examples = list(read_examples(rows, Columns()))  # offsets checked against the context here
    assert len(examples) == len(rows)
    assert sum(e.answerable for e in examples) == 3  # location (sentence 1), corporation and person (sentence 2)
    for example in examples:
        for text, start in example.answers:
            assert example.context[start:start + len(text)] == text


def test_fixed_seed_sample_keeps_file_order():
    items = list(range(100))
    picked = qa_wnut.sample(items, 10)
    assert picked == sorted(picked) and len(set(picked)) == 10
    assert qa_wnut.sample(items, 10) == picked
    assert qa_wnut.sample(items, None) == items and qa_wnut.sample(items, 500) == items
