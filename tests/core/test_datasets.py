"""CSV parsing and training-column validation."""
from __future__ import annotations

import pytest

from core.datasets import DatasetError, check_training_columns, label_counts, parse_csv


def test_parses_header_and_rows():
    parsed = parse_csv(b'text,label\n"hello, world",pos\nbad day,neg\n')
    assert parsed.columns == ["text", "label"]
    assert parsed.rows == [{"text": "hello, world", "label": "pos"}, {"text": "bad day", "label": "neg"}]
    assert parsed.row_count == 2 and len(parsed.sha256) == 64


def test_bom_semicolon_tab_and_blank_lines():
    assert parse_csv("\ufefftext;label\nhi;a\n\nho;b\n".encode()).rows[1] == {"text": "ho", "label": "b"}
    assert parse_csv(b"text\tlabel\nhi\ta\n").columns == ["text", "label"]


def test_multiline_quoted_text_and_unicode():
    parsed = parse_csv('text,label\n"line one\nline two",pos\n"ünïcødé 🎉",neg\n'.encode())
    assert parsed.rows[0]["text"] == "line one\nline two"
    assert parsed.rows[1]["text"] == "ünïcødé 🎉"


@pytest.mark.parametrize(
    ("data", "code", "fragment"),
    [
        (b"", "empty_file", "empty"),
        (b"   \n", "empty_file", "empty"),
        (b"text,label\n", "empty_file", "no data rows"),
        (b"text,label\n\xff\xfe bad,x\n", "invalid_encoding", "UTF-8"),
        (b"text,label\nhi,a,extra\n", "invalid_csv", "3 fields"),
        (b"text,text\nhi,a\n", "invalid_csv", "duplicate"),
        (b"text,\nhi,a\n", "invalid_csv", "needs a name"),
        (b'text,label\n"unterminated,a\n', "invalid_csv", "malformed"),
        (b"text,label\nhi\x00,a\n", "invalid_csv", "NUL"),
    ],
)
def test_bad_files_are_clear_400s(data, code, fragment):
    with pytest.raises(DatasetError) as info:
        parse_csv(data)
    assert info.value.code == code and info.value.status == 400
    assert fragment in info.value.message


def test_huge_field_is_rejected_not_crashing():
    with pytest.raises(DatasetError) as info:
        parse_csv(b"text,label\n" + b"x" * 1_100_000 + b",a\n")
    assert "field larger" in info.value.message


def test_max_rows():
    with pytest.raises(DatasetError) as info:
        parse_csv(b"text,label\n" + b"a,b\n" * 5, max_rows=3)
    assert info.value.status == 413


def test_label_counts_skip_empty_text_and_label():
    rows = [{"t": "a", "l": "x"}, {"t": "", "l": "x"}, {"t": "b", "l": " "}, {"t": "c", "l": "y "}]
    assert label_counts(rows, "t", "l") == {"x": 1, "y": 1}


def test_check_training_columns():
    parsed = parse_csv(b"text,sentiment,topic\na,pos,x\nb,neg,x\nc,pos,x\n")
    counts = check_training_columns(parsed, "text", ["sentiment"])
    assert counts["sentiment"] == {"pos": 2, "neg": 1}
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, "text", ["missing"])
    assert info.value.status == 422 and info.value.code == "unknown_column"
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, "text", ["topic"])
    assert info.value.code == "too_few_classes"
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, "text", ["text"])
    assert info.value.code == "invalid_columns"
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, "text", ["sentiment"], min_rows_per_class=2)
    assert info.value.code == "too_few_rows"
