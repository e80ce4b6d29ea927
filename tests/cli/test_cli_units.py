"""The client's pieces without a server: the streamed multipart body, model references, ``--set`` values."""
from __future__ import annotations

import io

import click
import pytest
from werkzeug.formparser import parse_form_data
from werkzeug.test import EnvironBuilder

from cli.client import parse_model_reference, split_model_reference
from cli.main import _option_values
from cli.multipart import CHUNK_BYTES, MultipartFile


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES + 7])
def test_multipart_body_streams_the_file_with_its_exact_length(tmp_path, size):
    content = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / 'odd "name".zip'
    path.write_bytes(content)
    counted: list[int] = []
    body = MultipartFile(path, fields={"name": "modèle"}, on_read=counted.append)
    raw = b"".join(body)  # what requests sends: the iterable, chunk by chunk
    assert len(raw) == len(body) == sum(counted)
    assert max(counted) <= CHUNK_BYTES
    again = MultipartFile(path, fields={"name": "modèle"})
    pieced = b"".join(iter(lambda: again.read(5), b""))  # small reads cross every part's edge
    assert pieced.replace(again.boundary.encode(), b"B") == raw.replace(body.boundary.encode(), b"B")

    environ = EnvironBuilder(method="POST", input_stream=io.BytesIO(raw), content_length=len(raw),
                             content_type=body.content_type).get_environ()
    _, form, files = parse_form_data(environ)
    assert form["name"] == "modèle"
    assert files["file"].read() == content and files["file"].filename == path.name


def test_model_references():
    assert parse_model_reference("12") == ("model_id", 12)
    assert parse_model_reference("sentiment") == ("model", "sentiment")
    assert parse_model_reference("sentiment:3") == ("model", "sentiment:3")
    assert parse_model_reference("٣") == ("model", "٣")  # not ASCII digits: a name
    assert split_model_reference("sentiment:3") == ("sentiment", 3)
    assert split_model_reference("a:b:2") == ("a:b", 2)
    assert split_model_reference("sentiment") == ("sentiment", None)
    with pytest.raises(ValueError):
        parse_model_reference("  ")


def test_set_values_are_json_when_they_parse():
    assert _option_values(("learning_rate=5e-5", "freeze_encoder=true", "encoder_lr=null", "pooling=cls",
                           'label_columns=["a","b"]', "text_template={a}: {b}")) == {
        "learning_rate": 5e-5, "freeze_encoder": True, "encoder_lr": None, "pooling": "cls",
        "label_columns": ["a", "b"], "text_template": "{a}: {b}"}
    with pytest.raises(click.BadParameter):
        _option_values(("=1",))


def test_waiting_polls_until_terminal_and_draws_progress_and_eta(monkeypatch):
    from rich.console import Console

    from cli import waiting

    states = iter([{"id": "j1" * 8, "type": "train", "status": "running", "progress": 0.5, "eta_seconds": 75},
                   {"id": "j1" * 8, "type": "train", "status": "succeeded", "progress": 1.0, "eta_seconds": None}])

    class FakeClient:
        def job(self, job_id):
            return next(states)

    screen = io.StringIO()
    monkeypatch.setattr(waiting, "stderr", Console(file=screen, force_terminal=True, width=120))
    monkeypatch.setattr(waiting, "POLL_S", (0.0, 0.0))
    first = {"id": "j1" * 8, "type": "train", "status": "queued", "progress": 0.0}
    assert waiting.wait_for_job(FakeClient(), first)["status"] == "succeeded"
    drawn = screen.getvalue()
    assert "train j1j1j1j1" in drawn and "succeeded" in drawn and "100%" in drawn
    assert (waiting._eta({"eta_seconds": 75}), waiting._eta({"eta_seconds": 3725}), waiting._eta({})) == (
        "ETA 1:15", "ETA 1:02:05", "")


def test_polling_rides_out_a_short_outage(monkeypatch):
    from cli import waiting
    from cli.client import ApiError

    answers = iter([ApiError(None, "connection_error", "refused"), ApiError(503, "unavailable", "restarting"),
                    {"id": "j", "status": "succeeded", "progress": 1.0}, ApiError(404, "not_found", "gone")])

    class FlakyClient:
        def job(self, job_id):
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

    monkeypatch.setattr(waiting, "POLL_S", (0.0, 0.0))
    assert waiting.wait_for_job(FlakyClient(), {"id": "j", "status": "queued"}, show=False)["status"] == "succeeded"
    with pytest.raises(ApiError):  # anything but an outage ends the wait at once
        waiting.wait_for_job(FlakyClient(), {"id": "j", "status": "queued"}, show=False)


@pytest.mark.parametrize("args", [["--json", "jobs"], ["jobs", "--json"], ["datasets", "--json"]])
def test_json_before_or_after_the_command(monkeypatch, args):
    import json

    from click.testing import CliRunner

    from cli.client import Client
    from cli.main import main

    page = {"items": [], "total": 0, "limit": 50, "offset": 0}
    monkeypatch.setattr(Client, "jobs", lambda self, **filters: page)
    monkeypatch.setattr(Client, "datasets", lambda self, limit=100: page)
    result = CliRunner().invoke(main, ["--url", "http://127.0.0.1:9", *args], env={"BERTQUEUE_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == page


def test_export_format_follows_the_file_name():
    from cli.main import _export_format

    assert [_export_format(n) for n in ("a.csv", "a.JSONL", "a.ndjson", "a.conll", "b.iob", "x")] == \
        ["csv", "jsonl", "jsonl", "conll", "conll", "csv"]


def test_token_predictions_print_one_line_per_entity(capsys):
    from cli import output

    output.predictions([{"index": 0, "text": "Bob in Paris", "entities": [
        {"entity_group": "person", "score": 0.91, "word": "Bob", "start": 0, "end": 3},
        {"entity_group": "location", "score": 0.8, "word": "Paris", "start": 7, "end": 12}]}])
    printed = capsys.readouterr().out
    assert "2 entities in 1 texts" in printed and "person" in printed and "7-12" in printed
    output.predictions([{"index": 0, "text": "Bob in Paris", "tokens": ["Bob", "in", "Paris"],
                         "tags": ["B-PER", "O", "B-LOC"], "scores": [0.9, 0.9, 0.9]}])
    assert "Bob/B-PER in Paris/B-LOC" in capsys.readouterr().out


def test_multiple_choice_predictions_print_the_chosen_choice(capsys):
    from cli import output

    output.predictions([{"index": 0, "text": "A man sits at a piano.", "text_pair": "He", "choice_index": 1,
                         "choice": "plays a song.", "scores": [0.2, 0.8], "choices": ["eats it.", "plays a song."]}])
    printed = capsys.readouterr().out
    assert "plays a song." in printed and "0.8" in printed and "eats it." not in printed


def test_train_sends_the_spans_column(monkeypatch):
    from click.testing import CliRunner

    from cli.client import Client
    from cli.main import main

    bodies: list[dict] = []

    def create_job(self, kind, body):
        bodies.append(body)
        return {"id": "j" * 16, "type": kind, "status": "queued", "progress": 0.0}

    monkeypatch.setattr(Client, "create_job", create_job)
    run = CliRunner()
    base = ["--url", "http://127.0.0.1:9", "--json", "train", "--dataset", "5"]
    result = run.invoke(main, [*base, "--spans-column", "annotations", "--text-column", "data"],
                        env={"BERTQUEUE_TOKEN": None})
    assert result.exit_code == 0, result.output
    # the spans imply token classification; no tokens, tags or label columns are sent (the API defaults them)
    assert bodies[-1] == {"dataset_id": 5, "task_type": "token-classification", "spans_column": "annotations",
                          "text_column": "data"}
    # an explicit task type is sent as given: the API judges it (it refuses spans for text classification)
    result = run.invoke(main, [*base, "--spans-column", "entities", "--task-type", "text-classification"],
                        env={"BERTQUEUE_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert bodies[-1] == {"dataset_id": 5, "task_type": "text-classification", "spans_column": "entities"}
    result = run.invoke(main, [*base, "--task-type", "token-classification", "--tokens-column", "words"],
                        env={"BERTQUEUE_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert bodies[-1] == {"dataset_id": 5, "task_type": "token-classification", "tokens_column": "words"}
    assert "--spans-column" in run.invoke(main, ["train", "--help"]).output


def test_qa_predictions_print_the_best_answer_per_question(capsys):
    from cli import output

    output.predictions([{"index": 0, "text": "where?", "text_pair": "in Paris", "question": "where?",
                         "answer": "Paris", "score": 0.93, "start": 3, "end": 8},
                        {"index": 1, "text": "who?", "text_pair": "in Paris", "question": "who?", "answer": "",
                         "score": 0.7, "start": 0, "end": 0}])
    printed = capsys.readouterr().out
    assert "Paris" in printed and "3-8" in printed and "(no answer)" in printed


def test_questions_need_one_context_each(monkeypatch):
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.setenv("BERTQUEUE_TOKEN", "bq_" + "x" * 20)
    result = CliRunner().invoke(main, ["classify", "-m", "1", "-q", "where?", "-q", "who?", "-c", "in Paris"])
    assert result.exit_code == 2 and "one --context per --question" in result.output
    result = CliRunner().invoke(main, ["classify", "-m", "1", "-q", "where?", "-c", "in Paris", "-t", "text"])
    assert result.exit_code == 2 and "exactly one of them" in result.output


def test_evaluate_sends_a_qa_models_columns(monkeypatch):
    from click.testing import CliRunner

    from cli.client import Client
    from cli.main import main

    bodies: list[dict] = []

    def create_job(self, kind, body):
        bodies.append(body)
        return {"id": "j" * 16, "type": kind, "status": "queued", "progress": 0.0}

    monkeypatch.setattr(Client, "create_job", create_job)
    result = CliRunner().invoke(main, [
        "--url", "http://127.0.0.1:9", "--json", "evaluate", "--model", "7", "--dataset", "5", "--context-column",
        "passage", "--question-column", "query", "--answers-column", "gold"], env={"BERTQUEUE_TOKEN": None})
    assert result.exit_code == 0, result.output
    assert bodies[-1] == {"model_id": 7, "dataset_id": 5, "context_column": "passage", "question_column": "query",
                          "answers_column": "gold"}
