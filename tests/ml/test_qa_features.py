"""QA windows: every answer reachable through its windows, [CLS] labels elsewhere, lengths checked first; and the
post-processing equal to a brute-force search over every span."""
from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from ml.qa_features import QAInputError, check_lengths, make_windows, question_budget
from ml.qa_postprocess import best_answers

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def _context(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(i) for i in range(n))


def test_one_short_window_labels_the_answer(tokenizer):
    context = "The Eiffel Tower is in Paris."
    start = context.index("Paris")
    [window] = make_windows(tokenizer, ["Where is it?"], [context], 64, 16, answers=[(start, start + 5)])
    assert window.input_ids[0] == tokenizer.cls_token_id
    first, last = window.offsets[window.start_position], window.offsets[window.end_position]
    assert context[first[0]:last[1]] == "Paris"
    assert all(window.offsets[k] is None for k in range(window.context_positions[0]))  # question and [CLS]


def test_windowing_keeps_every_answer_reachable(tokenizer):
    """A long context in windows of 32 tokens with stride 8: every word-long answer is wholly inside some window,
    labelled there at the tokens that spell it; windows without it point at [CLS]."""
    context = _context(120)
    question = "which word?"
    spans = []
    position = 0
    for word in context.split():
        start = context.index(word, position)
        spans.append((start, start + len(word)))
        position = start + len(word)
    windows = make_windows(tokenizer, [question] * len(spans), [context] * len(spans), 32, 8, answers=spans)
    per_example = {}
    for window in windows:
        per_example.setdefault(window.source, []).append(window)
    assert sorted(per_example) == list(range(len(spans)))
    for source, (start, end) in enumerate(spans):
        labelled = [w for w in per_example[source] if w.start_position]
        assert len(per_example[source]) > 1 and labelled, f"answer {source} reachable in no window"
        for w in labelled:
            assert context[w.offsets[w.start_position][0]:w.offsets[w.end_position][1]] == context[start:end]
        for w in per_example[source]:
            assert len(w.input_ids) <= 32
            if not w.start_position:
                assert w.end_position == 0
    # the windows of one context cover all of it, in order
    covered = {k for w in per_example[0] for span in w.offsets if span for k in range(*span)}
    assert covered >= {k for s, e in spans for k in range(s, e)}


def test_unanswerable_points_at_cls(tokenizer):
    windows = make_windows(tokenizer, ["q?"], [_context(60)], 32, 8, answers=[None])
    assert len(windows) > 1 and all(w.start_position == w.end_position == 0 for w in windows)


def test_lengths_are_checked_before_any_window(tokenizer):
    assert question_budget(64, 16) == 64 - 3 - 16 - 1
    check_lengths(tokenizer, ["a short question"], 64, 16)
    with pytest.raises(QAInputError, match="question 2 has"):
        make_windows(tokenizer, ["ok?", " ".join(["word"] * 60)], ["ctx", "ctx"], 64, 16)
    with pytest.raises(QAInputError, match="doc_stride"):
        check_lengths(tokenizer, ["q"], 16, 13)


def test_the_torch_free_token_count_never_exceeds_the_tokenizers(tokenizer):
    """``min_tokens`` (what the web refuses a question by, without a tokenizer) is a lower bound on the
    tokenizer's count, on random strings of what it splits, drops and glues (controls such as \\f, accents,
    symbols, CJK, no-break and ideographic spaces); exact on plain words and ASCII punctuation."""
    from core.task_types.question_answering import min_tokens

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    assert min_tokens("where did Bob fly ?") == count("where did Bob fly ?") == 5
    assert min_tokens("a.b,c!!") == count("a.b,c!!") == 7
    chars = "ab1 .,?-_\t\n\r\x0b\x0c\x1c\x85\u2028\u00a0\u3000\u200b\u0301\u00b2\u00e9\u6771\U0001F600\u00bf\u2014"
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 40)))
        assert min_tokens(text) <= count(text), repr(text)


# ------------------------------------------------------------------------------------ post-processing


def _softmax(values):
    values = np.asarray(values, dtype=np.float64)
    exp = np.exp(values - values.max())
    return exp / exp.sum()


def _brute_force(context, windows, max_answer_length, top_k, allow_no_answer):
    """Every (i, j) of every window, scored p_start[i] * p_end[j] over the window's context tokens and [CLS]."""
    spans, nulls = {}, []
    for start_logits, end_logits, offsets in windows:
        allowed = [k for k, span in enumerate(offsets) if span is not None or k == 0]
        p_start = dict(zip(allowed, _softmax([start_logits[k] for k in allowed])))
        p_end = dict(zip(allowed, _softmax([end_logits[k] for k in allowed])))
        nulls.append(p_start[0] * p_end[0])
        for i, j in itertools.product(range(len(offsets)), repeat=2):
            if offsets[i] is None or offsets[j] is None or j < i or j - i + 1 > max_answer_length:
                continue
            key = (offsets[i][0], offsets[j][1])
            spans[key] = max(spans.get(key, -1.0), p_start[i] * p_end[j])
    ranked = [(score, s, e) for (s, e), score in spans.items()]
    if allow_no_answer:
        ranked.append((min(nulls), 0, 0))
    ranked.sort(key=lambda c: -c[0])
    return [(context[s:e], s, e, score) for score, s, e in ranked[:top_k]]


@pytest.mark.parametrize("seed", range(12))
def test_post_processing_equals_brute_force(tokenizer, seed):
    rng = np.random.default_rng(seed)
    context = _context(int(rng.integers(5, 40)), seed)
    windows = make_windows(tokenizer, ["what is it?"], [context], 24, 6)
    logits = [(rng.normal(size=len(w.input_ids)) * 3, rng.normal(size=len(w.input_ids)) * 3, w.offsets)
              for w in windows]
    max_answer_length, top_k, allow = int(rng.integers(1, 6)), int(rng.integers(1, 6)), bool(seed % 2)
    ours = best_answers(context, logits, max_answer_length=max_answer_length, top_k=top_k, allow_no_answer=allow)
    expected = _brute_force(context, logits, max_answer_length, top_k, allow)
    assert [a["score"] for a in ours] == pytest.approx([e[3] for e in expected])
    assert [(a["answer"], a["start"], a["end"]) for a in ours] == [e[:3] for e in expected]
    for answer in ours:
        assert answer["answer"] == context[answer["start"]:answer["end"]]


def test_no_answer_only_when_allowed_and_best():
    offsets = [None, None, (0, 5), (6, 11), None]  # [CLS] q [ctx ctx] [SEP]
    cls_heavy = ([9.0, 0, 0, 0, 0], [9.0, 0, 0, 0, 0], offsets)
    assert best_answers("hello world", [cls_heavy], allow_no_answer=True)[0] == {
        "answer": "", "score": pytest.approx(float(_softmax([9, 0, 0])[0] ** 2)), "start": 0, "end": 0}
    assert best_answers("hello world", [cls_heavy], allow_no_answer=False)[0]["answer"] in ("hello", "world",
                                                                                             "hello world")
    span_heavy = ([0, 0, 9.0, 0, 0], [0, 0, 0, 9.0, 0], offsets)
    assert best_answers("hello world", [span_heavy], allow_no_answer=True)[0]["answer"] == "hello world"
    assert best_answers("hello world", [span_heavy], max_answer_length=1, top_k=2)[0]["answer"] in ("hello", "world")


@pytest.mark.parametrize(("max_length", "doc_stride"), [(32, 8), (64, 16), (384, 128)])
def test_the_training_work_estimate_never_exceeds_the_real_windows(tokenizer, max_length, doc_stride):
    """``min_training_windows`` (what MAX_TRAINING_WORK counts, no tokenizer) is a lower bound on make_windows'
    windows, and not a loose one on plain words."""
    from core.task_types.question_answering import Example, min_training_windows

    rng = random.Random(3)
    examples = [Example("which word, " * rng.randint(0, 3) + "?", _context(rng.randint(1, 400), seed=i))
                for i in range(30)] + [Example("who?", "Bob, Ann & co. ran -- fast!! " * 40)]
    real = len(make_windows(tokenizer, [e.question for e in examples], [e.context for e in examples], max_length,
                            doc_stride))
    estimate = min_training_windows(examples, max_length, doc_stride)
    assert estimate <= real and estimate >= real // 3, (estimate, real)
