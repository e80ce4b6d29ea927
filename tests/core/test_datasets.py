"""CSV parsing and training-column validation."""
from __future__ import annotations

import pytest

from core.datasets import DatasetError, check_training_columns, parse_csv
from core.options import TrainConfig


def cfg(text: str | None, labels: list[str], **options) -> TrainConfig:
    """A training config without the request-level checks (so column clashes reach check_training_columns)."""
    return TrainConfig.model_construct(text_column=text, label_columns=labels, label_column=labels[0], **options)


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


def test_check_training_columns():
    parsed = parse_csv(b"text,sentiment,topic\na,pos,x\nb,neg,x\nc,pos,x\n")
    counts = check_training_columns(parsed, cfg("text", ["sentiment"]))
    assert counts["sentiment"] == {"pos": 2, "neg": 1}
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, cfg("text", ["missing"]))
    assert info.value.status == 422 and info.value.code == "unknown_column"
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, cfg("text", ["topic"]))
    assert info.value.code == "too_few_classes"
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, cfg("text", ["text"]))
    assert info.value.code == "invalid_columns"


def test_multi_label_columns_template_and_validation_labels():
    parsed = parse_csv(b"speaker,text,tags,a,b\nann,x,red|blue,1,0\nbob,y,,yes,true\ncy,z,blue,0,no\n")
    separated = cfg(None, ["tags"], multi_label=True, text_template="{speaker}: {text}")
    assert check_training_columns(parsed, separated)["tags"] == {"red": 1, "blue": 2}
    assert check_training_columns(parsed, cfg("text", ["a", "b"], multi_label=True))["labels"] == {"a": 2, "b": 1}
    bad = parse_csv(b"text,a,b\nx,1,maybe\n")
    with pytest.raises(DatasetError) as info:
        check_training_columns(bad, cfg("text", ["a", "b"], multi_label=True))
    assert info.value.code == "invalid_label_value" and "'maybe'" in info.value.message
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, cfg(None, ["tags"], text_template="{speaker} {nope}"))
    assert info.value.code == "unknown_column" and "'nope'" in info.value.message
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, cfg("text", ["tags"], text_pair_column="missing"))
    assert info.value.code == "unknown_column"
    with pytest.raises(DatasetError) as info:  # a validation set with a label the training data lacks
        check_training_columns(parsed, separated, known={"tags": {"red"}})
    assert info.value.code == "unknown_labels" and "blue" in info.value.message


def test_labels_longer_than_the_prediction_column_are_refused():
    """A predicted label is stored in a LABEL_MAX-character column: such a label (a text column?) is a 422."""
    from core.schema import LABEL_MAX

    fits, too_long = "x" * LABEL_MAX, "y" * (LABEL_MAX + 1)
    parsed = parse_csv(f"text,label\na,{fits}\nb,neg\nc,{too_long}\n".encode())
    with pytest.raises(DatasetError) as info:
        check_training_columns(parsed, cfg("text", ["label"]))
    assert (info.value.status, info.value.code) == (422, "label_too_long")
    assert "label column 'label': a label longer than 200 characters" in info.value.message
    ok = parse_csv(f"text,label\na,{fits}\nb,neg\n".encode())
    assert check_training_columns(ok, cfg("text", ["label"]))["label"] == {fits: 1, "neg": 1}


# ---------------------------------------------------------------- formats (streaming reader)

import csv  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import tracemalloc  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

from core import datasets  # noqa: E402
from core.datasets import (  # noqa: E402
    DISTINCT_CAP,
    FORMATS,
    detect_format,
    open_rows,
    profile_rows,
    read_rows,
    scan_upload,
)

SAMPLES = Path(__file__).resolve().parents[2] / "data"
TSV = b'text\tlabel\nhello, world\tpos\n"quoted\ttab"\tneg\n'
JSONL = b'{"text": "hello, world", "label": "pos"}\n{"text": "bad day", "label": "neg"}\n'


def scan(data: bytes, filename: str | None = None, **kwargs):
    return scan_upload(io.BytesIO(data), filename, **kwargs)


def error_of(data: bytes, fmt: str) -> datasets.DatasetError:
    with pytest.raises(datasets.DatasetError) as info:
        read_rows(data, fmt)
    assert info.value.status == 400
    return info.value


def test_formats():
    assert FORMATS == ("csv", "tsv", "jsonl", "json", "conll")


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [("a.csv", "csv"), ("A.CSV", "csv"), ("a.tsv", "tsv"), ("a.tab", "tsv"), ("a.jsonl", "jsonl"),
     ("dir\\a.NDJSON", "jsonl"), ("../x/a.jsonl", "jsonl")],
)
def test_detect_format_by_extension_wins_over_content(filename, fmt):
    assert detect_format(filename, b'{"not": "looked at"}\n' if fmt != "jsonl" else b"a,b\n1,2\n") == fmt


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b'{"text": "x"}\n', "jsonl"),
        (b'\xef\xbb\xbf  \n {"text": "x"}\n', "jsonl"),  # BOM and leading whitespace
        (b"text\tlabel\nx\ty\n", "tsv"),
        (b"\n\ntext\tlabel\n", "tsv"),
        (b"text,label\tx\n", "csv"),  # tabs and commas: CSV, whose delimiter is sniffed later
        (b"text;label\n", "csv"),
        (b"text\n", "csv"),
        (b"", "csv"),
    ],
)
def test_detect_format_by_content(head, fmt):
    for filename in (None, "", "upload.txt", "noextension"):
        assert detect_format(filename, head) == fmt


@pytest.mark.parametrize(
    ("data", "fmt"),
    [(b'text,label\n"hello, world",pos\nbad day,neg\n', "csv"),
     (b"text\tlabel\nhello, world\tpos\nbad day\tneg\n", "tsv"),
     (JSONL, "jsonl")],
)
def test_each_format_by_extension_and_by_content(data, fmt):
    expected = [{"text": "hello, world", "label": "pos"}, {"text": "bad day", "label": "neg"}]
    for filename in (f"data.{fmt}", "data.txt", None):
        result = scan(data, filename)
        assert (result.format, result.columns, result.row_count) == (fmt, ["text", "label"], 2)
        assert result.size_bytes == len(data) and result.sha256 == hashlib.sha256(data).hexdigest()
        assert result.profile["preview"] == expected
    assert read_rows(data, fmt).rows == expected


def test_tsv_keeps_commas_and_csv_quoting():
    parsed = read_rows(TSV, "tsv")
    assert parsed.delimiter == "\t" and parsed.format == "tsv"
    assert parsed.rows == [{"text": "hello, world", "label": "pos"}, {"text": "quoted\ttab", "label": "neg"}]
    # a .tsv file never has its delimiter sniffed: commas in the header stay in the column name
    assert read_rows(b"a,b\tc\n1\t2\n", "tsv").columns == ["a,b", "c"]


def test_jsonl_values_become_text():
    line = {"text": "ünï 🎉", "int": 3, "float": 1.5, "big": 1e100, "yes": True, "no": False, "none": None,
            "list": [1, "é"], "obj": {"a": {"b": None}}}
    parsed = read_rows(json.dumps(line).encode() + b"\n", "jsonl")
    assert parsed.columns == list(line) and parsed.delimiter is None
    assert parsed.rows == [{"text": "ünï 🎉", "int": "3", "float": "1.5", "big": "1e+100", "yes": "true",
                            "no": "false", "none": "", "list": '[1, "é"]', "obj": '{"a": {"b": null}}'}]


def test_jsonl_missing_keys_blank_lines_crlf_and_bom():
    data = '\ufeff{"text": "a", "label": "x"}\r\n\r\n  \n{"label": "y"}\r\n{}\n'.encode()
    assert read_rows(data, "jsonl").rows == [
        {"text": "a", "label": "x"}, {"text": "", "label": "y"}, {"text": "", "label": ""}
    ]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b'{"text": "a"}\n{"text": "b", "label": "x"}\n', "line 2: key 'label' is not in the first object's keys"),
        (b'{"text": "a"}\n\n["b"]\n', "line 3: expected a JSON object ({...}), got an array"),
        (b'{"text": "a"}\n"b"\n', "line 2: expected a JSON object ({...}), got a string"),
        (b'{"text": "a"}\n42\n', "got a number"),
        (b'{"text": "a"}\nnull\n', "got null"),
        (b'{"text": "a"}\n{"text": "b"\n', "line 2: invalid JSON (Expecting ',' delimiter at column 13)"),
        (b'{"text": "a"}\n{"text": NaN}\n', "line 2: invalid JSON (NaN is not valid JSON)"),
        (b'{"text": "a", "text": "b"}\n', "line 1: duplicate keys in the object: text"),
        (b"{}\n", "line 1: the first object has no keys"),
        (b'{" ": "a"}\n', "line 1: every key of the first object needs a name"),
        (b'{"text": "a\\u0000b"}\n', "line 1: column 'text' contains a NUL character"),
        (b'{"text": "a"}\n{"text": "\\ud800"}\n', "line 2: a \\u escape makes a lone UTF-16 surrogate"),
        (b'{"text": "a", "t\\uDC00": "x"}\n', "line 1: a \\u escape makes a lone UTF-16 surrogate"),
        (b'{"text": {"nested": ["\\udfff"]}}\n', "line 1: a \\u escape makes a lone UTF-16 surrogate"),
        (b'text,label\n', "line 1: invalid JSON"),
    ],
)
def test_bad_jsonl(data, fragment):
    error = error_of(data, "jsonl")
    assert error.code == "invalid_jsonl"
    assert fragment in error.message


def test_jsonl_surrogate_pairs_are_text():
    """An escaped pair (an emoji) is one character; only a lone half is refused."""
    rows = list(open_rows(b'{"text": "hi \\ud83d\\ude00", "label": "\\\\ud800 is written out"}\n', "jsonl"))
    assert rows == [{"text": "hi \U0001f600", "label": "\\ud800 is written out"}]


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_ragged_delimited_rows(fmt):
    sep = b"," if fmt == "csv" else b"\t"
    error = error_of(sep.join([b"text", b"label"]) + b"\nok" + sep + b"x\n\nonly-one\n", fmt)
    assert error.code == "invalid_csv" and error.message == "line 4: 1 fields, but the header has 2"
    error = error_of(sep.join([b"text", b"label"]) + b"\n" + sep.join([b"a", b"b", b"c"]) + b"\n", fmt)
    assert error.message == "line 2: 3 fields, but the header has 2"


def test_line_numbers_count_physical_lines():
    error = error_of(b'\n\ntext,label\n"two\nlines",a\nx\n', "csv")
    assert error.message == "line 6: 1 fields, but the header has 2"


@pytest.mark.parametrize("fmt", FORMATS)
def test_non_utf8_nul_and_empty_files_in_every_format(fmt):
    json_open = {"jsonl": b"", "json": b"["}.get(fmt)
    header = json_open + b'{"text": "caf' if json_open is not None else b"text\ncaf"
    error = error_of(header + b'\xe9"}\n' if json_open is not None else header + b"\xe9\n", fmt)
    assert error.code == "invalid_encoding" and f"(byte {len(header)})" in error.message and "UTF-8" in error.message
    error = error_of(json_open + b'{"text": "a\x00"}\n' if json_open is not None else b"text\na\x00b\n", fmt)
    codes = {"jsonl": "invalid_jsonl", "json": "invalid_json_array", "conll": "invalid_conll"}
    assert error.code == codes.get(fmt, "invalid_csv") and "NUL bytes" in error.message
    for empty in (b"", b" \r\n\t\n", b"\xef\xbb\xbf\n"):
        error = error_of(empty, fmt)
        assert (error.code, error.message) == ("empty_file", "the file is empty")


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_header_only_and_bad_headers(fmt):
    sep = "," if fmt == "csv" else "\t"
    cases = [
        (f"text{sep}label\n\n", "empty_file", "the file has a header but no data rows"),
        (f"text{sep}text\na{sep}b\n", "invalid_csv", "duplicate column names in the header: text"),
        (f"text{sep} \na{sep}b\n", "invalid_csv", "every column in the header row needs a name"),
    ]
    for data, code, message in cases:
        error = error_of(data.encode(), fmt)
        assert (error.code, error.message) == (code, message)


def test_utf8_characters_split_across_read_chunks():
    # 2-, 3- and 4-byte characters after an odd-length header: chunk boundaries fall inside characters
    text = "é€🎉" * 20_000
    data = f"t\n{text}\n{text}\n".encode()
    assert read_rows(data, "csv").rows == [{"t": text}, {"t": text}]
    bad = b"t\n" + b"a\n" * 100_000 + b"\xff\n"
    error = error_of(bad, "csv")
    assert error.code == "invalid_encoding" and f"(byte {2 + 200_000})" in error.message
    truncated = b"t\n" + b"a\n" * 100_000 + "é".encode()[:1]
    assert f"(byte {2 + 200_000})" in error_of(truncated, "csv").message


def test_overlong_line_is_refused(monkeypatch):
    monkeypatch.setattr(datasets, "MAX_LINE_CHARS", 1000)
    for fmt, data in [("csv", b"t\n" + b"x" * 2000), ("jsonl", b'{"t": "' + b"x" * 2000 + b'"}\n')]:
        assert "longer than 1000 characters" in error_of(data, fmt).message
    big_field = b'{"t": "' + b"x" * 600 + b'"}\n'
    monkeypatch.setattr(datasets, "MAX_FIELD_CHARS", 500)
    assert "field larger than field limit (500)" in error_of(big_field, "jsonl").message


def test_open_rows_streams_from_a_file_object(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"text,label\n" + b"some text,x\n" * 100_000)
    with path.open("rb") as f:
        rows = open_rows(f, "csv")
        assert rows.columns == ["text", "label"]
        first = next(iter(rows))
        assert first == {"text": "some text", "label": "x"}
        assert f.tell() < 256 * 1024 < path.stat().st_size  # only the first chunks were read
    with path.open("rb") as f:
        rows = open_rows(f, "csv")
        assert sum(1 for _ in rows) == 100_000
        assert rows.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_max_rows_and_unknown_format():
    with pytest.raises(datasets.DatasetError) as info:
        scan(JSONL, "a.jsonl", max_rows=1)
    assert (info.value.code, info.value.status) == ("too_many_rows", 413)
    with pytest.raises(datasets.DatasetError) as info:
        open_rows(b"a\n1\n", "xlsx")
    assert info.value.code == "invalid_format"


# ---------------------------------------------------------------- profile


def old_profile_rows(parsed) -> dict:
    """web.services.profile_rows as it was before profiles moved to core (the reference)."""
    preview = [{k: v[:200] for k, v in row.items()} for row in parsed.rows[:5]]
    stats = {}
    for column in parsed.columns:
        values = Counter(row[column].strip() for row in parsed.rows)
        empty = values.pop("", 0)
        label_like = 2 <= len(values) <= 50 and len(values) < sum(values.values())
        stats[column] = {
            "distinct": len(values),
            "empty": empty,
            "label_like": label_like,
            "top_values": [[v, n] for v, n in values.most_common(20)] if label_like else None,
        }
    return {"preview": preview, "column_stats": stats}


@pytest.mark.parametrize("name", ["sample_tweets.csv", "sample_tweets_multitask.csv"])
def test_profile_equals_the_old_profile_on_the_samples(name):
    data = (SAMPLES / name).read_bytes()
    expected = old_profile_rows(parse_csv(data))
    with (SAMPLES / name).open("rb") as f:
        result = scan_upload(f, name)
    assert result.profile == expected
    assert profile_rows(parse_csv(data)) == expected
    assert result.row_count == 2000 and expected["column_stats"]["text"]["distinct"] == 2000
    assert expected["column_stats"]["sentiment"]["top_values"][0] == ["negative", 854]


def test_profile_of_tricky_columns():
    rows = ["id,label,few,blank"] + [f"{i},{'ab'[i % 2]}, {i % 60} ,{' ' if i % 3 else 'z'}" for i in range(120)]
    data = "\n".join(rows).encode() + b"\n"
    result = scan(data)
    assert result.profile == old_profile_rows(parse_csv(data))
    stats = result.profile["column_stats"]
    assert stats["few"] == {"distinct": 60, "empty": 0, "label_like": False, "top_values": None}
    assert stats["blank"] == {"distinct": 1, "empty": 80, "label_like": False, "top_values": None}
    assert stats["label"]["top_values"] == [["a", 60], ["b", 60]]


def test_distinct_values_are_capped():
    n = DISTINCT_CAP + 5
    assert n == 10_005
    data = ("text,label\n" + "".join(f"text {i},{i % 3}\n" for i in range(n))).encode()
    stats = scan(data).profile["column_stats"]
    assert stats["text"] == {"distinct": DISTINCT_CAP, "empty": 0, "label_like": False, "top_values": None,
                             "distinct_capped": True}
    assert stats["label"] == {"distinct": 3, "empty": 0, "label_like": True,
                              "top_values": [["0", 3335], ["1", 3335], ["2", 3335]]}
    exact = ("text\n" + "".join(f"t{i}\n" for i in range(DISTINCT_CAP))).encode()
    assert scan(exact).profile["column_stats"]["text"] == {
        "distinct": DISTINCT_CAP, "empty": 0, "label_like": False, "top_values": None
    }


def test_scanning_a_large_file_keeps_memory_small(tmp_path):
    random.seed(7)
    words = "flight delayed again thanks crew amazing worst service ever lost bag seat gate late great awful".split()
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text", "label"])
        for i in range(200_000):
            text = f"@airline {' '.join(random.choices(words, k=22))} #{i} ünï 🎉"
            writer.writerow([i, text, random.choice(["pos", "neg", "neutral"])])
    size = path.stat().st_size
    assert size > 30 * 2**20
    tracemalloc.start()
    try:
        with path.open("rb") as f:
            result = scan_upload(f, "big.csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.row_count == 200_000 and result.size_bytes == size
    assert result.profile["column_stats"]["id"]["distinct_capped"] is True
    assert result.profile["column_stats"]["label"]["distinct"] == 3
    # holding the file (or its rows) would take well over its size; streaming needs a few buffers and counters
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MB scanning a {size / 2**20:.0f} MB file"


def test_json_array_uploads_stream_object_by_object():
    from core.datasets import detect_format, read_rows

    data = b'[\n {"text": "a", "label": "x"},\n {"text": "b", "label": 1, "extra": null}\n]\n'
    assert detect_format(None, data) == "json" and detect_format("d.json", b"") == "json"
    with pytest.raises(DatasetError) as info:  # keys must be those of the first object
        read_rows(data, "json")
    assert info.value.code == "invalid_json_array" and "line 3" in info.value.message
    rows = read_rows(b'[{"text": "a", "label": "x"}, {"text": "b", "label": 1}]', "json").rows
    assert rows == [{"text": "a", "label": "x"}, {"text": "b", "label": "1"}]
    big = b"[" + b",".join(b'{"text": "%d", "label": "y"}' % i for i in range(20_000)) + b"]"
    assert len(read_rows(big, "json").rows) == 20_000
    for bad, message in [(b"[]", "empty"), (b'[{"a":1},]', "followed by another object"),
                         (b'[{"a":1} {"a":2}]', "expected ','"), (b'[{"a":1}] x', "after the closing"),
                         (b'[1]', "expected a JSON object"), (b'[{"a":1,"a":2}]', "duplicate keys"),
                         (b'[{"a":NaN}]', "NaN"), (b'[{"a":"\\ud800"}]', "surrogate"), (b'{"a": 1}', "array")]:
        with pytest.raises(DatasetError) as info:
            read_rows(bad, "json")
        assert message in info.value.message, (bad, info.value.message)


def test_json_named_json_lines_and_partly_filled_flag_rows():
    from core.datasets import detect_format

    assert detect_format("rows.json", b'{"text": "a"}\n{"text": "b"}\n') == "jsonl"
    assert detect_format("rows.json", b'[{"text": "a"}]') == "json"
    partly = parse_csv(b"text,a,b\nx,1,\ny,0,1\n")
    with pytest.raises(DatasetError) as info:  # training refuses a row with some 0/1 cells empty: so does the check
        check_training_columns(partly, cfg("text", ["a", "b"], multi_label=True))
    assert info.value.code == "invalid_label_value" and "row 2" in info.value.message
    unlabelled = parse_csv(b"text,a,b\nx,1.0,0.0\ny,,\nz,0,yes\n")
    assert check_training_columns(unlabelled, cfg("text", ["a", "b"], multi_label=True))["labels"] == {"a": 1, "b": 1}


def test_a_pretty_printed_json_object_is_one_row_and_json_lines_still_read_line_by_line():
    """A SQuAD file as ``json.dumps(indent=2)`` writes it: its first line only opens the object, so the whole file is
    that one object (one row, its ``data`` a JSON cell); JSON Lines keep one row a line; a multi-line object followed
    by more, or broken, is a 400 naming the line."""
    import io as _io

    from core.datasets import open_rows, scan_upload

    squad = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "Bob flew to Paris.", "qas": [
        {"id": "q1", "question": "where?", "answers": [{"text": "Paris", "answer_start": 12}]}]}]}]}
    pretty = json.dumps(squad, indent=2).encode()
    [row] = list(open_rows(pretty, "jsonl"))
    assert json.loads(row["data"]) == squad["data"] and row["version"] == "v2.0"
    for name in ("train-v2.0.json", None):
        scan = scan_upload(_io.BytesIO(pretty), name)
        assert (scan.format, scan.row_count, scan.columns) == ("jsonl", 1, ["version", "data"])
    assert [r["a"] for r in open_rows(b'{"a": 1}\n{"a": 2}\n', "jsonl")] == ["1", "2"]
    for content, fragment in [
        (pretty + b"\n{\"a\": 1}\n", "line 26: a JSON object written over several lines must be the whole file"),
        (b'{\n  "a": [1,\n', "invalid JSON"),
        (b'{\n  "a": 1,\n  "a": 2\n}\n', "duplicate keys"),
        (b'{\n  "a": NaN\n}\n', "NaN is not valid JSON"),
        (b'{\n  "a": "\\u0000"\n}\n', "NUL"),
    ]:
        with pytest.raises(DatasetError) as caught:
            list(open_rows(content, "jsonl"))
        assert caught.value.code == "invalid_jsonl" and fragment in caught.value.message, caught.value.message
