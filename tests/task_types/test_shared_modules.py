"""Issue 18: the shared machinery names no task type -- a new one touches its own modules and the registry tables.

The modules below read ``core.task_types`` hooks (``check_classify_request``, ``misdirected``,
``evaluation_plan_from_params``, ``reads_words_in_cells``, ``resolve_columns``) instead of comparing names; their
code (not their prose: docstrings and comments may give a task type as an example) must not name one.
"""
from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from core import task_types
from core.task_types import RequestError, TaskType

ROOT = Path(__file__).resolve().parents[2]
SHARED = [ROOT / "web" / "services.py", ROOT / "core" / "options.py", *sorted((ROOT / "worker").rglob("*.py"))]
# the modules' constants named after a task type (module attribute ``NAME``) or its options' table
NAMED = {"NAME", "TOKEN_CLASSIFICATION", "QUESTION_ANSWERING", "MULTIPLE_CHOICE"}
# core.options' Opt.task_types tables: which options a task type reads, declared beside the options themselves
OPTION_TABLES = {"TEXT_CLASSIFICATION", "TOKEN_CLASSIFICATION", "QUESTION_ANSWERING"}


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes of ``tree``'s module, classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _option_tables(tree: ast.Module) -> set[int]:
    """The ids of every node inside core.options' module-level ``X = ("task-type", ...)`` tables."""
    inside = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in OPTION_TABLES
                                                for t in node.targets):
            inside.update(id(n) for n in ast.walk(node))
    return inside


def _mentions(path: Path) -> list[str]:
    """Where ``path``'s code names a registered task type: a string holding its name, a task type module's ``NAME``
    imported, or a name-compare constant used outside the option tables."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree) | (_option_tables(tree) if path.name == "options.py" else set())
    option_keywords = set()
    if path.name == "options.py":  # Opt(..., task_types=TOKEN_CLASSIFICATION): the tables' one use
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "task_types":
                option_keywords.update(id(n) for n in ast.walk(node.value))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = [name for name in task_types.names() if name in node.value]
            if named:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(("core.task_types.", "task_types.")):
            found.extend(f"{path.name}:{node.lineno}: imports {a.name}" for a in node.names if a.name in NAMED)
        elif isinstance(node, ast.Name) and node.id in NAMED and id(node) not in option_keywords:
            found.append(f"{path.name}:{node.lineno}: {node.id}")
    return found


# the data columns only some task types read: a shared module that reads one branches on a task type in disguise
TASK_COLUMNS = {"tokens_column", "tags_column", "spans_column", "context_column", "question_column", "answers_column",
                "choice_columns", "choices_column"}
# where a shared module may still name them: core.options' list of the data fields checked against request_fields
FIELD_LISTS = {"_DATA_FIELDS"}


def _column_reads(path: Path) -> list[str]:
    """Where ``path``'s code reads a column only some task types have (``x.question_column``, ``params.get(
    "context_column")``): those decisions belong to the task types' hooks (``TaskType.text_columns``,
    ``TaskType.classify_columns``, ...). Declaring the field (a class body's annotation) is no read."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in FIELD_LISTS for t in node.targets):
            skip.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Attribute) and node.attr in TASK_COLUMNS:
            found.append(f"{path.name}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in TASK_COLUMNS:
            found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    return found


@pytest.mark.parametrize("path", SHARED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_module_names_no_task_type(path):
    assert _mentions(path) == []


@pytest.mark.parametrize("path", SHARED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_module_reads_no_task_type_column(path):
    """``web.services``' dataset-job defaults and ``TrainConfig.text_columns`` once branched on a QA model's
    ``question_column`` or a request's ``answers_column`` / ``context_column``: each task type declares its own."""
    assert _column_reads(path) == []


def test_the_check_finds_a_column_branch(tmp_path):
    source = tmp_path / "services.py"
    source.write_text("_DATA_FIELDS = ('question_column',)\n"
                      "def f(params, config):\n"
                      "    if params.get('question_column') is not None or config.answers_column:\n"
                      "        return 1\n")
    assert len(_column_reads(source)) == 2


def test_the_check_finds_a_name_compare(tmp_path):
    """The check is no tautology: the comparisons this issue removed are found."""
    source = tmp_path / "services.py"
    source.write_text('"""Doc: token-classification is fine here."""\n'
                      "from core.task_types.multiple_choice import NAME as MULTIPLE_CHOICE\n"
                      "def f(kind):\n"
                      "    return kind.name == 'question-answering' or kind.name == MULTIPLE_CHOICE\n")
    assert len(_mentions(source)) == 3


class _Fifth(TaskType):
    """A task type of a test's own: its inline ``widgets`` are refused for every other model, with no edit to the
    shared code."""

    name = "widget-scoring"

    def misdirected(self, request, model_id, model_task_type):
        if getattr(request, "widgets", None) is not None:
            return RequestError("widgets_not_supported", f"model {model_id} is a {model_task_type} model: widgets "
                                "are for widget-scoring models")
        return None


@pytest.fixture
def fifth():
    task_types.register(_Fifth)
    try:
        yield task_types.get(_Fifth.name)
    finally:
        del task_types._REGISTRY[_Fifth.name]


def _request(**fields):
    base = dict(model_id=7, from_dataset=False, with_pairs=False, with_tokens=False, with_questions=False,
                with_choice_questions=False, widgets=None)
    return SimpleNamespace(**{**base, **fields})


def test_a_fifth_task_type_refuses_its_inputs_to_other_models(fifth):
    with pytest.raises(RequestError) as caught:
        task_types.check_classify_request(_request(widgets=["w"]), {"task_type": "token-classification"})
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        422, "widgets_not_supported", "model 7 is a token-classification model: widgets are for widget-scoring models")
    # its own model takes them; text classification's default rules still apply to it (no pairs)
    task_types.check_classify_request(_request(widgets=["w"]), {"task_type": fifth.name})
    with pytest.raises(RequestError, match="pairs are for models trained with a text_pair_column"):
        task_types.check_classify_request(_request(with_pairs=True), {"task_type": fifth.name})


def test_hooks_of_the_built_in_task_types():
    assert [task_types.get(n).reads_words_in_cells for n in task_types.names()] == [False, True, False, False]
    plan = {"task_type": "question-answering", "question_column": "q", "context_column": "c", "answers_column": "a"}
    assert type(task_types.of_params(plan).evaluation_plan_from_params(plan)).__name__ == "QAEvaluationPlan"
