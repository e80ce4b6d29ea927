"""A training step under MAX_TRAIN_BATCH_TOKENS: micro-batches whose accumulated gradient is the whole batch's."""
from __future__ import annotations

import copy
import random

import pytest

from ml import loop
from ml.batches import Encoded
from ml.config import IGNORE_INDEX
from models.registry import build_model

LABELS = ["a", "b", "c"]


def _data(n: int, multi_label: bool, tasks: list[str], seed: int = 0) -> Encoded:
    """Rows of very different lengths (1 to 40 tokens) and labels, some missing for multitask."""
    rng = random.Random(seed)
    ids = [[101] + [rng.randint(1000, 2000) for _ in range(rng.randint(1, 40))] + [102] for _ in range(n)]
    if multi_label:
        labels = {tasks[0]: [[float(rng.random() < 0.4) for _ in LABELS] for _ in range(n)]}
    else:
        labels = {t: [rng.randrange(len(LABELS)) if k == 0 or rng.random() < 0.6 else IGNORE_INDEX
                      for _ in range(n)] for k, t in enumerate(tasks)}
    return Encoded(ids, labels, 0, None, multi_label)


CASES = {
    "weighted_smoothed": ("bert", {"class_weights": {"t": [1.0, 3.0, 0.5]}, "label_smoothing": 0.1}),
    "multi_label_pos_weight": ("bert", {"multi_label": True, "class_weights": {"t": [2.0, 1.0, 4.0]}}),
    "multitask_missing_labels": ("multitask", {"task_weights": {"t": 1.0, "u": 0.5},
                                               "class_weights": {"u": [1.0, 2.0, 1.0]}}),
    "bert_lstm": ("bert_lstm", {"lstm_hidden": 8}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_accumulated_step_equals_the_unsplit_step(case, tiny_bert_dir):
    import torch

    family, options = CASES[case]
    tasks = ["t", "u"] if family == "multitask" else ["t"]
    torch.manual_seed(0)
    model = build_model(family, {t: LABELS for t in tasks}, str(tiny_bert_dir), dropout=0.0, **options)
    model.eval()  # no dropout: both runs see the same function
    data = _data(24, options.get("multi_label", False), tasks)
    rows = list(range(24))
    assert len(loop.micro_batches(data, rows, 120)) > 3  # the budget really splits the batch

    results = []
    for budget in (10**9, 120):
        trained = copy.deepcopy(model)
        # SGD: the step is linear in the gradient (Adam's first step, lr x sign(g), magnifies float noise in the
        # gradients that are ~0); the gradients themselves are compared too
        optimizer = torch.optim.SGD(trained.parameters(), lr=0.5)
        loss = loop.train_step(trained, data, rows, "cpu", budget)
        grads = [p.grad.clone() for p in trained.parameters() if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(trained.parameters(), loop.MAX_GRAD_NORM)
        optimizer.step()
        results.append((loss, grads, [p.detach().clone() for p in trained.parameters()]))
    (loss_full, grads_full, params_full), (loss_split, grads_split, params_split) = results
    assert loss_split == pytest.approx(loss_full, rel=1e-5)
    assert len(grads_full) == len(grads_split) > 0
    for g_full, g_split in zip(grads_full, grads_split):
        torch.testing.assert_close(g_split, g_full, rtol=1e-4, atol=1e-6)
    for p_full, p_split in zip(params_full, params_split):
        torch.testing.assert_close(p_split, p_full, rtol=1e-4, atol=1e-6)


def test_micro_batches_respect_the_budget():
    data = _data(50, False, ["t"], seed=3)
    rows = list(range(50))
    chunks = loop.micro_batches(data, rows, 100)
    assert sorted(i for chunk in chunks for i in chunk) == rows
    for chunk in chunks:
        longest = max(len(data.input_ids[i]) for i in chunk)
        assert len(chunk) == 1 or len(chunk) * longest <= 100
    assert loop.micro_batches(data, rows, 10**6) == [rows]  # a batch that fits keeps its order, unsplit


def test_training_step_under_a_small_budget_trains_and_counts_logical_steps(tiny_bert_dir, tmp_path):
    from tests.ml.test_training import config_for, make_rows

    config = config_for("bert", encoder=str(tiny_bert_dir), epochs=1, batch_size=16)
    budget = loop.train_classifier(make_rows(60), config, tmp_path / "a", max_batch_tokens=40).metrics
    free = loop.train_classifier(make_rows(60), config, tmp_path / "b", max_batch_tokens=10**6).metrics
    assert budget["steps"] == budget["total_steps"] == free["steps"] == 3  # 45 training rows / 16
    assert budget["history"][-1]["train_loss"] == pytest.approx(free["history"][-1]["train_loss"], abs=0.05)


def test_evaluation_batches_respect_the_budget(tiny_bert_dir):
    import torch

    torch.manual_seed(0)
    model = build_model("bert", {"t": LABELS}, str(tiny_bert_dir), dropout=0.0)
    data = _data(40, False, ["t"], seed=5)
    shapes = []
    model.register_forward_hook(lambda _m, args, kwargs, _out: shapes.append(tuple(kwargs["input_ids"].shape)),
                                with_kwargs=True)
    limited = loop.evaluate(model, data, list(range(40)), "cpu", 64, max_tokens=100)
    assert len(shapes) > 3 and all(rows == 1 or rows * length <= 100 for rows, length in shapes)
    shapes.clear()
    unlimited = loop.evaluate(model, data, list(range(40)), "cpu", 64)
    assert len(shapes) == 1  # no token limit: one batch of 40 rows
    assert limited["pred"] == unlimited["pred"]
    assert limited["loss"] == pytest.approx(unlimited["loss"], rel=1e-5)


def test_max_train_batch_tokens_setting():
    from core.config import Settings

    assert Settings.from_env({"MAX_TRAIN_BATCH_TOKENS": "4096"}).max_train_batch_tokens == 4096
    with pytest.raises(ValueError, match="MAX_TRAIN_BATCH_TOKENS"):
        Settings.from_env({"MAX_TRAIN_BATCH_TOKENS": "0"})


def test_the_default_training_budget_is_the_settings_default():
    """ml reads no settings: its fallback budget must stay the MAX_TRAIN_BATCH_TOKENS default."""
    from core.config import Settings
    from ml.config import DEFAULT_MAX_TRAIN_BATCH_TOKENS

    assert DEFAULT_MAX_TRAIN_BATCH_TOKENS == Settings.max_train_batch_tokens


# ---------------------------------------------------------------- out of device memory: halve and redo


def _oom_over(model, max_rows: int, calls: list | None = None):
    """Make ``model`` raise CUDA's out-of-memory error (the real class, which exists without CUDA) for a forward
    pass of more than ``max_rows`` rows, as a GPU too small for them would; ``calls`` records each pass's rows."""
    import torch

    def check(_module, _args, kwargs):
        rows = kwargs["input_ids"].shape[0]
        if calls is not None:
            calls.append(rows)
        if rows > max_rows:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model.register_forward_pre_hook(check, with_kwargs=True)
    return model


def test_a_step_that_runs_out_of_memory_is_redone_smaller_with_the_same_gradient(tiny_bert_dir):
    """The first micro-batch (the longest rows, few of them) fits and leaves its gradient; a later one of many
    short rows runs out: the partial gradient is cleared, the budget halved until every pass fits, and the step's
    gradient is still exactly the unsplit batch's."""
    import torch

    torch.manual_seed(0)
    model = build_model("bert", {"t": LABELS}, str(tiny_bert_dir), dropout=0.0)
    model.eval()
    data = _data(24, False, ["t"], seed=1)
    rows = list(range(24))
    first, *rest = loop.micro_batches(data, rows, 200)
    assert len(first) <= 6 < max(map(len, rest))  # the first pass fits, a later one does not

    reference = copy.deepcopy(model)
    loss_full = loop.train_step(reference, data, rows, "cpu", 10**9)
    calls: list[int] = []
    tight = _oom_over(copy.deepcopy(model), 6, calls)
    optimizer = torch.optim.SGD(tight.parameters(), lr=0.1)
    budget = loop.TokenBudget(200)
    loss = loop.fitted_train_step(tight, data, rows, "cpu", budget, optimizer=optimizer)

    assert budget.halvings >= 1 and budget.tokens < 200
    assert any(n > 6 for n in calls) and calls[-1] <= 6  # it ran out, then every pass of the last try fitted
    assert loss == pytest.approx(loss_full, rel=1e-5)
    for p_ref, p_tight in zip(reference.parameters(), tight.parameters()):
        if p_ref.grad is not None:
            torch.testing.assert_close(p_tight.grad, p_ref.grad, rtol=1e-4, atol=1e-6)


def test_only_a_row_that_does_not_fit_alone_fails_and_other_errors_are_not_retried(tiny_bert_dir, monkeypatch):
    import torch

    monkeypatch.setattr(loop.TokenBudget, "RETRY_WAIT_S", 0.001)
    torch.manual_seed(0)
    data = _data(8, False, ["t"], seed=2)
    calls: list[int] = []
    model = _oom_over(build_model("bert", {"t": LABELS}, str(tiny_bert_dir), dropout=0.0), 0, calls)
    budget = loop.TokenBudget(10**6)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        loop.fitted_train_step(model, data, list(range(8)), "cpu", budget)
    assert calls[-1] == 1 and budget.halvings <= 4  # down to one row per pass, each halving splitting finer
    # ... where it was tried again after a pause, ROW_RETRIES times, before failing
    assert calls[-1 - loop.TokenBudget.ROW_RETRIES:] == [1] * (1 + loop.TokenBudget.ROW_RETRIES)

    # memory held for a moment by another process: one row fails once, then fits
    fail_once = {"left": 1}
    flaky = build_model("bert", {"t": LABELS}, str(tiny_bert_dir), dropout=0.0)

    def held_once(_module, _args, kwargs):
        if kwargs["input_ids"].shape[0] == 1 and fail_once["left"]:
            fail_once["left"] -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    flaky.register_forward_pre_hook(held_once, with_kwargs=True)
    assert loop.fitted_train_step(flaky, data, [3], "cpu", loop.TokenBudget(10**6)) > 0

    def broken(_module, _args, _kwargs):
        raise RuntimeError("shape mismatch")

    other = build_model("bert", {"t": LABELS}, str(tiny_bert_dir), dropout=0.0)
    other.register_forward_pre_hook(broken, with_kwargs=True)
    budget = loop.TokenBudget(10**6)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        loop.fitted_train_step(other, data, list(range(8)), "cpu", budget)
    assert budget.halvings == 0 and budget.tokens == 10**6
    with pytest.raises(ValueError, match="max_batch_tokens"):
        loop.TokenBudget(0)


def test_a_training_on_a_device_too_small_for_its_batches_finishes(tiny_bert_dir, tmp_path, monkeypatch):
    """Training and evaluation passes of more than 4 rows run out of memory: the job still trains every step
    and evaluates, at a lowered budget it reports, and learns what the same run learns with room to spare."""
    import models.registry
    from tests.ml.test_training import config_for, make_rows

    build = models.registry.build_model
    monkeypatch.setattr(models.registry, "build_model", lambda *a, **k: _oom_over(build(*a, **k), 4))
    config = config_for("bert", encoder=str(tiny_bert_dir), epochs=1, batch_size=16)
    tight = loop.train_classifier(make_rows(60), config, tmp_path / "a", max_batch_tokens=10**6).metrics
    monkeypatch.setattr(models.registry, "build_model", build)
    roomy = loop.train_classifier(make_rows(60), config, tmp_path / "b", max_batch_tokens=10**6).metrics

    assert tight["steps"] == tight["total_steps"] == roomy["steps"] == 3
    assert tight["out_of_memory_halvings"] >= 1 and tight["train_batch_tokens"] < 10**6
    assert roomy["out_of_memory_halvings"] == 0 and roomy["train_batch_tokens"] == 10**6
    assert tight["accuracy"] is not None and tight["validation_examples"] == roomy["validation_examples"]
    assert tight["history"][-1]["train_loss"] == pytest.approx(roomy["history"][-1]["train_loss"], abs=0.05)
