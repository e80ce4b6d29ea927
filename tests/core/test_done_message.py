"""The job-done announcement: a status alone, or a status with the rows the job's success committed."""
from __future__ import annotations

import json

from core.queue import RELAYED_ROWS_MAX_BYTES, done_message, read_done_message
from core.results import stored_columns


def _rows(text: str) -> list[dict]:
    return [stored_columns({"index": 0, "text": text, "label": "pos", "score": 0.75, "scores": {"pos": 0.75}})]


def test_a_status_alone_reads_back_without_rows():
    assert done_message("failed") == "failed"
    assert read_done_message("failed") == ("failed", None)
    assert read_done_message(done_message("succeeded", None)) == ("succeeded", None)


def test_rows_read_back_exactly_any_text_included():
    """Floats, JSON cells, non-ASCII text and even a lone surrogate (escaped: the message is ASCII) come back as
    they were relayed."""
    for text in ["plain", "émoji 😀 ünïcode", "nul\x00byte", "lone \ud800 surrogate", '{"json": "looking"}']:
        rows = _rows(text)
        message = done_message("succeeded", rows)
        assert message.isascii()
        assert read_done_message(message) == ("succeeded", rows)


def test_rows_json_cannot_hold_are_left_to_sql():
    assert done_message("succeeded", [{"index": 0, "scores": {1, 2}}]) == "succeeded"


def test_rows_past_the_size_limit_are_left_to_sql():
    rows = _rows("x" * RELAYED_ROWS_MAX_BYTES)
    assert done_message("succeeded", rows) == "succeeded"
    small = _rows("x" * (RELAYED_ROWS_MAX_BYTES // 2))
    assert len(done_message("succeeded", small)) <= RELAYED_ROWS_MAX_BYTES


def test_an_unreadable_announcement_carries_neither_status_nor_rows():
    for message in ["{", '{"status": "succeeded"}', '{"status": 1, "rows": []}', '{"status": "x", "rows": [1]}',
                    json.dumps({"status": "succeeded", "rows": {"a": 1}}), "[]"]:
        status, rows = read_done_message(message)
        assert rows is None
        assert status is None or message == "[]"
