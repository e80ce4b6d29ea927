"""The ``bertqueue`` commands (click): datasets, train, classify, evaluate, jobs, job, cancel, models, model,
download, import, delete. Each one is a few REST calls (``cli.client``) plus printing (``cli.output``)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from . import output
from .client import DEFAULT_URL, ApiError, Client, parse_model_reference
from .waiting import byte_progress, wait_for_job

# exit statuses (documented in --help)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_API, EXIT_LOCAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_HELP = """\b
Exit status:
  0    done (with --wait: the job succeeded)
  1    the job failed (its error on stderr)
  2    usage error
  3    the job was cancelled
  4    the API refused the request or could not be reached (its message on stderr)
  5    a local file could not be read or written
  130  interrupted (Ctrl-C while waiting: the job keeps running on the server)"""


@dataclass
class State:
    """What every command gets: the API client and whether to print JSON."""

    client: Client
    as_json: bool


def _err(message: str) -> None:
    click.echo(message, err=True)


def _exit(code: int) -> NoReturn:
    click.get_current_context().exit(code)


class ApiGroup(click.Group):
    """Turns an :class:`ApiError` from any command into its message on stderr and exit status 4, a local file
    that cannot be read or written into status 5, and Ctrl-C into 130."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            _err(f"error: {exc}")
            ctx.exit(EXIT_API)
        except OSError as exc:
            _err(f"error: {exc}")
            ctx.exit(EXIT_LOCAL)
        except KeyboardInterrupt:
            _err("\ninterrupted")
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=ApiGroup, epilog=EXIT_HELP, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="BERTQUEUE_URL", default=DEFAULT_URL, show_default=True, show_envvar=True,
              help="the platform's base URL")
@click.option("--token", envvar="BERTQUEUE_TOKEN", show_envvar=True,
              help="API token, sent as Authorization: Bearer (the web's Account page makes one)")
@click.option("--json", "as_json", is_flag=True, help="print the API's JSON on stdout instead of tables")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="seconds to wait for the server to connect or to send the next bytes of an answer")
@click.pass_context
def main(ctx: click.Context, url: str, token: str | None, as_json: bool, timeout: float) -> None:
    """Command-line client of a bertqueue server: upload datasets, train, classify, evaluate, follow jobs and move
    models in and out.

    MODEL arguments take a model id (digits), a name (its latest version) or name:version.
    """
    ctx.obj = State(Client(url, token, timeout), as_json)


pass_state = click.make_pass_decorator(State)


# ---------------------------------------------------------------- helpers shared by commands

def _show_job(state: State, job: dict) -> None:
    if state.as_json:
        output.print_json(job)
    else:
        output.record(job, output.JOB_KEYS)


def _await(state: State, job: dict) -> dict:
    """Wait for ``job``; on Ctrl-C say the job keeps running and exit 130."""
    try:
        return wait_for_job(state.client, job)
    except KeyboardInterrupt:
        _err(f"\nstopped waiting; job {job['id']} keeps running (follow it with: bertqueue job {job['id']} --wait)")
        _exit(EXIT_INTERRUPTED)


def _exit_for(job: dict) -> None:
    """Exit non-zero, with the job's error on stderr, unless it succeeded."""
    if job["status"] == "failed":
        _err(f"error: job {job['id']} failed: {job.get('error') or 'no error message'}")
        _exit(EXIT_FAILED)
    if job["status"] == "cancelled":
        _err(f"error: job {job['id']} was cancelled")
        _exit(EXIT_CANCELLED)


def _finish(state: State, job: dict, wait: bool) -> None:
    """Print a job, after waiting for it with ``wait``; exit non-zero if it failed or was cancelled."""
    if wait:
        job = _await(state, job)
    _show_job(state, job)
    if wait:
        _exit_for(job)


def _upload(state: State, path: str, name: str | None = None) -> dict:
    size = os.path.getsize(path)
    with byte_progress(f"upload {Path(path).name}", size) as (_, advance):
        return state.client.upload_dataset(path, name, on_read=advance)


def _model_field(reference: str) -> dict:
    """The body's model reference: ``{"model_id": 3}`` for an id, ``{"model": "name[:v]"}`` otherwise."""
    try:
        key, value = parse_model_reference(reference)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    return {key: value}


def _dataset_id(state: State, value: str) -> int:
    """A dataset id, or a file uploaded now (its new id)."""
    if os.path.isfile(value):
        dataset = _upload(state, value)
        _err(f"uploaded {value} as dataset {dataset['id']} ({dataset['rows']} rows)")
        return dataset["id"]
    if value.isascii() and value.isdigit():
        return int(value)
    raise click.BadParameter(f"{value!r} is neither a dataset id nor a file", param_hint="--dataset")


def _option_values(pairs: tuple[str, ...]) -> dict:
    """``--set key=value`` pairs; a value is read as JSON when it parses (1e-4, true, null, ["a","b"]), else text."""
    values: dict = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--set")
        try:
            values[key.strip()] = json.loads(raw)
        except ValueError:
            values[key.strip()] = raw
    return values


def _export_format(path: str) -> str:
    """The export format a file name asks for: JSON Lines (.jsonl, .ndjson), CoNLL (.conll, .iob), else CSV."""
    name = path.lower()
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "conll" if name.endswith((".conll", ".iob")) else "csv"


def _label_fields(columns: tuple[str, ...]) -> dict:
    if not columns:
        return {}
    return {"label_column": columns[0]} if len(columns) == 1 else {"label_columns": list(columns)}


# ---------------------------------------------------------------- datasets

@main.group(cls=ApiGroup, invoke_without_command=True)
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List datasets (newest first), or upload one with `datasets upload FILE`."""
    if ctx.invoked_subcommand is None:
        state = ctx.find_object(State)
        page = state.client.datasets()
        if state.as_json:
            output.print_json(page)
        else:
            output.table(page["items"], output.DATASET_COLUMNS, title=f"{page['total']} datasets")


@datasets.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--name", help="the dataset's name (default: the file's name)")
@pass_state
def datasets_upload(state: State, file: str, name: str | None) -> None:
    """Upload FILE (CSV, TSV, JSON Lines or a JSON array; UTF-8) as a dataset."""
    dataset = _upload(state, file, name)
    if state.as_json:
        output.print_json(dataset)
    else:
        output.record(dataset, ("id", "name", "rows", "columns", "format", "size_bytes"))


@datasets.command("delete")
@click.argument("dataset_id", type=int, metavar="ID")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@pass_state
def datasets_delete(state: State, dataset_id: int, yes: bool) -> None:
    """Delete dataset ID: its content goes (freeing your quota), the jobs and models that used it stay readable
    (refused while a queued or running job uses it)."""
    if not yes:
        click.confirm(f"delete dataset {dataset_id}?", abort=True, err=True)
    deleted = state.client.delete_dataset(dataset_id)
    if state.as_json:
        output.print_json(deleted)
    else:
        _err(f"deleted dataset {deleted['name']} (id {deleted['id']})")


# ---------------------------------------------------------------- training, classification, evaluation

@main.command()
@click.option("--dataset", "dataset", required=True, metavar="ID|FILE",
              help="a dataset id, or a file to upload first")
@click.option("--text-column", help="the column holding the text (token classification from spans: the texts the "
              "spans point into, default text)")
@click.option("--label-column", "label_columns", multiple=True,
              help="the label column; repeat it for several (multitask: one task each)")
@click.option("--task-type", "task_type", help="text-classification (default), token-classification, "
              "question-answering (columns: --set context_column=... question_column=... answers_column=...) or "
              "multiple-choice (its columns by --set, e.g. --set context_column=sent1)")
@click.option("--tokens-column", help="token classification: the column of token lists (default: tokens)")
@click.option("--tags-column", help="token classification: the column of tag lists (default: tags)")
@click.option("--spans-column", help="token classification from raw text: the column of each text's entity spans "
              '(JSON Lines "entities", a Label Studio export\'s "annotations"), with --text-column')
@click.option("--family", help="bert (default), distilbert, bert_lstm or multitask")
@click.option("--name", help="the model's name: an existing name trains its next version")
@click.option("--epochs", type=click.IntRange(min=1), help="training epochs")
@click.option("--encoder", help="pretrained encoder (default: the server's packaged MiniLM)")
@click.option("--set", "options", multiple=True, metavar="KEY=VALUE",
              help="any other training option of POST /api/v1/jobs/train, e.g. --set learning_rate=5e-5 "
              "(VALUE is JSON when it parses, else text)")
@click.option("--wait/--no-wait", default=False, help="wait for the job, showing its progress")
@pass_state
def train(state: State, dataset: str, text_column: str | None, label_columns: tuple[str, ...], task_type: str | None,
          tokens_column: str | None, tags_column: str | None, spans_column: str | None, family: str | None,
          name: str | None, epochs: int | None, encoder: str | None, options: tuple[str, ...], wait: bool) -> None:
    """Queue a training job (exits 1 if a waited-for job fails). A CoNLL FILE trains an entity recogniser with
    --task-type token-classification; so does a JSON Lines FILE of texts and entity spans (or a Label Studio
    export) with --spans-column (token classification implied)."""
    extra = _option_values(options)
    if task_type is None and spans_column is not None:
        task_type = "token-classification"  # only token classification reads spans
    body: dict = {"dataset_id": _dataset_id(state, dataset)}
    for key, value in (("task_type", task_type), ("tokens_column", tokens_column), ("tags_column", tags_column),
                       ("spans_column", spans_column), ("text_column", text_column), ("family", family),
                       ("name", name), ("epochs", epochs), ("encoder", encoder)):
        if value is not None:
            body[key] = value
    body.update(_label_fields(label_columns))
    body.update(extra)
    _finish(state, state.client.create_job("train", body), wait)


@main.command()
@click.option("--model", "-m", required=True, metavar="MODEL", help="id, name (latest version) or name:version")
@click.option("--text", "-t", "texts", multiple=True, help="a text to classify (repeat for several)")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--dataset", type=click.IntRange(min=1), help="classify a stored dataset instead of FILE")
@click.option("--text-column", help="the text column of FILE or --dataset (default: as the model was trained, its text column or template)")
@click.option("--id-column", help="a column of FILE or --dataset identifying rows (copied to the results)")
@click.option("--aggregation-strategy", type=click.Choice(["first", "average", "max", "simple", "none"]),
              help="token models: how sub-word predictions become entities (default first)")
@click.option("--question", "-q", "questions", multiple=True,
              help="question-answering models: a question (repeat for several; each with a --context); "
              "multiple-choice models: the question read before each choice (optional, once)")
@click.option("--context", "-c", "contexts", multiple=True,
              help="question-answering models: the context of the question in the same position; multiple-choice "
              "models: the context of the one question (with --choice, twice or more)")
@click.option("--choice", "choices", multiple=True, help="multiple-choice models: a choice (repeat for each)")
@click.option("--top-k", type=click.IntRange(1, 20), help="question-answering models: answers per question")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False, writable=True),
              help="write every prediction to this file (CSV; JSON Lines for a .jsonl name; CoNLL for a .conll "
              "name, token models)")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="wait for the predictions (--no-wait prints the queued job)")
@pass_state
def classify(state: State, model: str, texts: tuple[str, ...], file: str | None, dataset: int | None,
             text_column: str | None, id_column: str | None, aggregation_strategy: str | None,
             questions: tuple[str, ...], contexts: tuple[str, ...], choices: tuple[str, ...], top_k: int | None,
             output_path: str | None, wait: bool) -> None:
    """Classify texts (--text ...), a FILE (uploaded as a dataset) or a stored --dataset, with MODEL; a
    question-answering MODEL answers --question / --context pairs (or a FILE's question and context columns); a
    multiple-choice MODEL answers one question (--context, --question, --choice ...)."""
    if choices:  # multiple choice: one context, at most one question, its choices
        if len(contexts) != 1 or len(questions) > 1:
            raise click.UsageError("--choice goes with one --context (and at most one --question)")
        if texts or file or dataset:
            raise click.UsageError("give --text (once or more), --context with --choice, a FILE or --dataset: "
                                   "exactly one of them")
    else:
        sources = sum(bool(s) for s in (texts, file, dataset, questions or contexts))
        if sources != 1:
            raise click.UsageError("give --text (once or more), --question with --context, --context with --choice "
                                   "(multiple choice), a FILE or --dataset: exactly one of them")
        if len(questions) != len(contexts):
            raise click.UsageError(f"give one --context per --question ({len(questions)} questions, "
                                   f"{len(contexts)} contexts)")
    if texts and (text_column or id_column):
        raise click.UsageError("--text-column and --id-column go with a FILE or --dataset, not --text")
    if output_path and not wait:
        raise click.UsageError("-o needs the predictions: drop --no-wait")
    body: dict = _model_field(model)
    if aggregation_strategy:
        body["aggregation_strategy"] = aggregation_strategy
    if top_k:
        body["top_k"] = top_k
    if texts:
        body["texts"] = list(texts)
    elif choices:
        item = {"context": contexts[0], "choices": list(choices), **({"question": questions[0]} if questions else {})}
        body["choice_questions"] = [item]
    elif questions:
        body["questions"] = [{"question": q, "context": c} for q, c in zip(questions, contexts)]
    else:
        body["dataset_id"] = dataset if dataset else _dataset_id(state, file)
        if text_column:
            body["text_column"] = text_column
        if id_column:
            body["id_column"] = id_column
    job = state.client.create_job("classify", body)
    if not wait:
        _show_job(state, job)
        return
    job = _await(state, job)
    if job["status"] != "succeeded":
        if state.as_json:
            output.print_json(job)
        _exit_for(job)
    if output_path:
        fmt = _export_format(output_path)
        with byte_progress(f"predictions -> {output_path}") as (set_total, advance):
            state.client.export(job["id"], output_path, fmt, on_total=set_total, on_chunk=advance)
        count = (job.get("params") or {}).get("text_count")
        _err(f"wrote {count if count is not None else 'the'} predictions of job {job['id']} to {output_path}")
        if state.as_json:
            output.print_json(job)
        return
    predictions = state.client.predictions(job["id"])
    if state.as_json:
        output.print_json({"job_id": job["id"], "model_id": job.get("model_id"), "predictions": predictions})
    else:
        output.predictions(predictions)


@main.command()
@click.option("--model", "-m", required=True, metavar="MODEL", help="id, name (latest version) or name:version")
@click.option("--dataset", required=True, metavar="ID|FILE", help="a labelled dataset id, or a file to upload first")
@click.option("--text-column", help="default: the model's")
@click.option("--label-column", "label_columns", multiple=True, help="default: the model's (repeat for several)")
@click.option("--context-column", help="question answering, multiple choice: default the model's")
@click.option("--question-column", help="question answering, multiple choice: default the model's")
@click.option("--answers-column", help="question answering: default the model's")
@click.option("--wait/--no-wait", default=False, help="wait for the metrics, showing progress")
@pass_state
def evaluate(state: State, model: str, dataset: str, text_column: str | None, label_columns: tuple[str, ...],
             context_column: str | None, question_column: str | None, answers_column: str | None,
             wait: bool) -> None:
    """Queue an evaluation of MODEL on a labelled dataset (accuracy, macro-F1, per class, confusion matrix; a QA
    model's exact match and F1; a multiple-choice model's accuracy)."""
    body: dict = {**_model_field(model), "dataset_id": _dataset_id(state, dataset)}
    if text_column:
        body["text_column"] = text_column
    body.update(_label_fields(label_columns))
    body.update({name: value for name, value in (("context_column", context_column),
                                                 ("question_column", question_column),
                                                 ("answers_column", answers_column)) if value})
    _finish(state, state.client.create_job("evaluate", body), wait)


# ---------------------------------------------------------------- jobs

@main.command()
@click.option("--status", help="queued, running, succeeded, failed or cancelled")
@click.option("--type", "job_type", help="train, classify or evaluate")
@click.option("--model", "model_id", type=click.IntRange(min=0), help="jobs of this model id")
@click.option("--dataset", "dataset_id", type=click.IntRange(min=0), help="jobs on this dataset id")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@pass_state
def jobs(state: State, status: str | None, job_type: str | None, model_id: int | None, dataset_id: int | None,
         limit: int) -> None:
    """List jobs, newest first."""
    page = state.client.jobs(status=status, type=job_type, model_id=model_id, dataset_id=dataset_id, limit=limit)
    if state.as_json:
        output.print_json(page)
    else:
        output.table(page["items"], output.JOB_COLUMNS, title=f"{page['total']} jobs")


@main.command()
@click.argument("job_id")
@click.option("--wait/--no-wait", default=False, help="wait until it finishes (exit 1 if it fails, 3 if cancelled)")
@pass_state
def job(state: State, job_id: str, wait: bool) -> None:
    """Show a job: status, progress, error, metrics."""
    _finish(state, state.client.job(job_id), wait)


@main.command()
@click.argument("job_id")
@pass_state
def cancel(state: State, job_id: str) -> None:
    """Cancel a queued or running job."""
    _show_job(state, state.client.cancel(job_id))


# ---------------------------------------------------------------- models

@main.command()
@click.option("--name", help="only this name's versions (newest first)")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@pass_state
def models(state: State, name: str | None, limit: int) -> None:
    """List models, newest first."""
    page = state.client.models(name=name, limit=limit)
    if name is not None:  # the server filters; this keeps the answer exact whatever it does with the parameter
        page = {**page, "items": [m for m in page["items"] if m.get("name") == name]}
    if state.as_json:
        output.print_json(page)
    else:
        output.table(page["items"], output.MODEL_COLUMNS, title=f"{len(page['items'])} models")


@main.command()
@click.argument("model_ref", metavar="MODEL")
@pass_state
def model(state: State, model_ref: str) -> None:
    """Show a model: name, version, family, labels, metrics."""
    found = state.client.resolve_model(model_ref)
    if state.as_json:
        output.print_json(found)
    else:
        output.record(found, ("id", "name", "version", "family", "encoder", "labels", "tasks", "created_at",
                              "training_job_id", "metrics"))


@main.command()
@click.argument("model_ref", metavar="MODEL")
@click.option("-o", "--output", "output_path", type=click.Path(dir_okay=False, writable=True),
              help="where to write the zip (default: NAME-vVERSION.zip)")
@pass_state
def download(state: State, model_ref: str, output_path: str | None) -> None:
    """Download MODEL as a zip (for bert and distilbert: a Hugging Face checkpoint)."""
    found = state.client.resolve_model(model_ref)
    path = output_path or f"{found['name']}-v{found['version']}.zip".replace(os.sep, "_")
    with byte_progress(f"model {found['id']} -> {path}") as (set_total, advance):
        size = state.client.download_model(found["id"], path, on_total=set_total, on_chunk=advance)
    if state.as_json:
        output.print_json({"model": found, "path": str(path), "bytes": size})
    else:
        _err(f"wrote model {found['name']}:{found['version']} (id {found['id']}, {size} bytes) to {path}")


@main.command()
@click.argument("model_ref", metavar="MODEL")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@pass_state
def delete(state: State, model_ref: str, yes: bool) -> None:
    """Delete MODEL: its files go, its jobs and predictions stay readable (refused while a job uses it)."""
    found = state.client.resolve_model(model_ref)
    label = f"{found['name']}:{found['version']} (id {found['id']})"
    if not yes:
        click.confirm(f"delete model {label}?", abort=True, err=True)
    deleted = state.client.delete_model(found["id"])
    if state.as_json:
        output.print_json(deleted)
    else:
        _err(f"deleted model {label}")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--name", help="the model's name; an existing name gets its next version (default: the zip's name)")
@pass_state
def import_model(state: State, file: str, name: str | None) -> None:
    """Import a Hugging Face checkpoint (sequence or token classification, question answering or multiple choice: a
    zip of a BERT or DistilBERT model saved with safetensors weights) as a servable model."""
    with byte_progress(f"upload {Path(file).name}", os.path.getsize(file)) as (_, advance):
        answer = state.client.import_model(file, name, on_read=advance)
    if state.as_json:  # the import is synchronous: the answer is the registered model
        output.print_json(answer)
    else:
        output.record(answer, ("id", "name", "version", "family", "encoder", "labels", "created_at"))


def _json_after_command(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_object(State).as_json = True


def _accept_json_everywhere(group: click.Group) -> None:
    """``--json`` also after a command name (``bertqueue jobs --json``), where people put it as often as before."""
    for command in group.commands.values():
        command.params.append(click.Option(["--json"], is_flag=True, expose_value=False, callback=_json_after_command,
                                           help="print the API's JSON on stdout instead of tables"))
        if isinstance(command, click.Group):
            _accept_json_everywhere(command)


_accept_json_everywhere(main)


def run() -> None:
    """Console-script entry point (``bertqueue``)."""
    main(prog_name="bertqueue")

