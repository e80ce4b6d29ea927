"""Parsing and validating uploaded datasets (CSV, TSV, JSON Lines, a JSON array of objects). Errors carry a user-facing message and an
HTTP status.

Everything here streams: :func:`open_rows` decodes and parses a file chunk by chunk, so validating or profiling an
upload near ``MAX_UPLOAD_MB`` holds a few buffers, not the whole file (nor every row) in memory. Only
:func:`read_rows` (training needs every row) builds a list.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import itertools
import json
import re
import typing
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

from .options import task_names
from .task_types.text_classification import row_labels
from .schema import LABEL_MAX
from .validation import COLUMN_NAME_MAX

# Tweets are short, but users upload documents too; the per-field cap protects memory, not realism.
MAX_FIELD_CHARS = 1_000_000
csv.field_size_limit(MAX_FIELD_CHARS)
# One physical line is read whole (csv and json need complete lines); the cap keeps a file without newlines from
# becoming one huge string. Several maximal fields (or a JSON-escaped one) still fit.
MAX_LINE_CHARS = 8 * MAX_FIELD_CHARS

FORMATS = ("csv", "tsv", "jsonl", "json", "conll")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
               ".conll": "conll", ".iob": "conll", ".iob2": "conll", ".bio": "conll", ".bioes": "conll"}
_FORMAT_NAMES = {"csv": "CSV", "tsv": "TSV", "jsonl": "JSON Lines", "json": "JSON", "conll": "CoNLL"}
_ERROR_CODES = {"csv": "invalid_csv", "tsv": "invalid_csv", "jsonl": "invalid_jsonl", "json": "invalid_json_array",
                "conll": "invalid_conll"}
_DELIMITERS = (",", ";", "\t")

HEAD_BYTES = 64 * 1024  # what format detection looks at
_READ_CHUNK = 64 * 1024  # bytes per read from the upload

PREVIEW_ROWS = 5
PREVIEW_CELL_CHARS = 200
LABEL_LIKE_MAX_DISTINCT = 50  # a column with at most this many distinct values is offered as a label column
TOP_VALUES = 20
# Distinct values are counted up to this many per column, then reported as capped: the count is for display, and
# an exact count of a free-text column would need memory proportional to the file. Past LABEL_LIKE_MAX_DISTINCT
# only 64-bit hashes are kept, so the cap costs under 1 MB per column however long the values are.
DISTINCT_CAP = 10_000
# Distinct labels one training task may have: far more than a classifier head is useful with, and it bounds the
# memory of the one streaming pass that checks a training request's labels (each label is at most LABEL_MAX chars).
MAX_TRAINING_LABELS = 10_000


class DatasetError(ValueError):
    """Bad dataset input. ``code`` is machine-readable, ``status`` the HTTP status to answer with."""

    def __init__(self, message: str, *, code: str = "invalid_dataset", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass(frozen=True)
class ParsedCSV:
    """A whole dataset in memory (see :func:`read_rows`); despite the name, of any format."""

    columns: list[str]
    rows: list[dict[str, str]]
    delimiter: str | None  # None for JSON Lines
    sha256: str
    format: str = "csv"

    @property
    def row_count(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class UploadScan:
    """What one streaming pass over an upload learned (see :func:`scan_upload`)."""

    format: str
    columns: list[str]
    row_count: int
    size_bytes: int
    sha256: str
    profile: dict  # {"preview": [...], "column_stats": {...}}, as :func:`profile_rows` returns


# ---------------------------------------------------------------- format detection


def detect_format(filename: str | None, head: bytes) -> str:
    """The format of an upload: by the file name's extension, else by its first bytes (``head``).

    Content rules: a first non-blank character ``{`` means JSON Lines, ``[`` a JSON array; a first line with tabs and no commas means
    TSV; anything else is CSV (whose delimiter, comma, semicolon or tab, is sniffed when it is parsed).
    """
    suffix = PurePosixPath((filename or "").replace("\\", "/")).suffix.lower()
    text = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if suffix == ".json" and text.startswith(b"{"):
        return "jsonl"  # ".json" is used for JSON Lines too: objects one per line, not an array
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    from .task_types.conll import looks_like_conll  # (the CoNLL reader raises this module's DatasetError)

    if looks_like_conll(text.decode("utf-8", errors="replace")):
        return "conll"
    first_line = text.split(b"\n", 1)[0]
    if b"\t" in first_line and b"," not in first_line:
        return "tsv"
    return "csv"


def _detect_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


# ---------------------------------------------------------------- bytes -> checked text


class _CheckedBytes(io.RawIOBase):
    """The upload's bytes as they stream past: hashed, counted, and checked chunk by chunk (no NUL, valid UTF-8).

    Checking here rather than in the text layer gives exact byte offsets in error messages, and makes the checks
    run before any parser sees the bytes. The caller's stream is never closed.
    """

    def __init__(self, stream: typing.BinaryIO, prefix: bytes, fmt: str) -> None:
        super().__init__()
        self._stream, self._prefix, self._format = stream, prefix, fmt
        self._sha256 = hashlib.sha256()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._next_chunk(len(buffer))
        if not chunk:
            self._check_utf8(b"", final=True)
            return 0
        if b"\x00" in chunk:
            raise DatasetError(
                f"the file contains NUL bytes: it is not a text {_FORMAT_NAMES[self._format]} file",
                code=_ERROR_CODES[self._format],
            )
        self._check_utf8(chunk, final=False)
        self._sha256.update(chunk)
        self.size += len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def _next_chunk(self, size: int) -> bytes:
        if self._prefix:
            chunk, self._prefix = self._prefix[:size], self._prefix[size:]
            return chunk
        return self._stream.read(size) or b""

    def _check_utf8(self, chunk: bytes, *, final: bool) -> None:
        pending = len(self._utf8.getstate()[0])  # bytes of an unfinished character from the previous chunk
        try:
            self._utf8.decode(chunk, final)
        except UnicodeDecodeError as exc:
            offset = self.size - pending + exc.start
            raise DatasetError(
                f"the file is not valid UTF-8 (byte {offset}): save it as UTF-8 and upload again",
                code="invalid_encoding",
            ) from None

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()


# ---------------------------------------------------------------- rows


def _check_width(count: int, max_columns: int | None) -> None:
    """413 ``too_many_columns`` past ``max_columns``: checked on the header, before any row becomes a dict."""
    if max_columns is not None and count > max_columns:
        raise DatasetError(f"too many columns: {count:,}, at most {max_columns:,} are allowed (MAX_DATASET_COLUMNS)",
                           code="too_many_columns", status=413)


def _check_header(columns: list[str], code: str) -> None:
    if not columns or all(not c for c in columns):
        raise DatasetError("the first row must be a header naming the columns", code=code)
    if any(not c for c in columns):
        raise DatasetError("every column in the header row needs a name", code=code)
    # a request names columns with at most COLUMN_NAME_MAX characters and no NUL: other names could never be used
    bad = next((c for c in columns if len(c) > COLUMN_NAME_MAX or "\x00" in c), None)
    if bad is not None:
        problem = "contains a NUL character" if "\x00" in bad else f"is longer than {COLUMN_NAME_MAX} characters"
        raise DatasetError(f"column name {bad[:60]!r}... {problem}", code="invalid_column_name")
    duplicates = sorted(c for c, n in Counter(columns).items() if n > 1)
    if duplicates:
        raise DatasetError(f"duplicate column names in the header: {', '.join(duplicates)}", code=code)


class _DuplicateKeys(ValueError):
    pass


def _json_object(pairs: list[tuple[str, object]]) -> dict:
    """``object_pairs_hook``: a JSON object, refusing repeated keys (``json`` would silently keep the last)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKeys(", ".join(sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)))
    return obj


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return "a number"


# a \u escape of a UTF-16 surrogate; alone (not in a high-low pair) it is no character, and SQL cannot store it
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def _cell(value: object) -> str:
    """A JSON value as the text a CSV cell would hold: strings as they are, null empty, anything else its JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False)


class RowStream:
    """The rows of a dataset, parsed as they are read. ``columns`` is known once constructed (the header, or the
    keys of the first JSON object); iterate (once) for ``dict[str, str]`` rows, blank lines skipped.

    Iteration raises :class:`DatasetError` (with the line number) at the first bad row, and at the end when the
    file had no data rows. Once iteration has finished, ``sha256`` and ``size_bytes`` cover the whole file.
    """

    def __init__(
        self, source: bytes | typing.BinaryIO, fmt: str, *, max_rows: int | None = None, prefix: bytes = b"",
        max_columns: int | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise DatasetError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}", code="invalid_format")
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
        self.format, self.max_rows, self.max_columns = fmt, max_rows, max_columns
        self.delimiter: str | None = None
        self.line = 0  # physical lines read so far
        self._code = _ERROR_CODES[fmt]
        self._bytes = _CheckedBytes(stream, prefix, fmt)
        # JSON strings cannot hold raw line breaks, so only "\n" ends a JSON line; csv wants newline="" (its docs).
        self._text = io.TextIOWrapper(
            io.BufferedReader(self._bytes, _READ_CHUNK), encoding="utf-8-sig", newline="\n" if fmt == "jsonl" else ""
        )
        self._lines = self._physical_lines()
        self._iterated = False
        if fmt == "conll":
            from .task_types.conll import COLUMNS

            self.columns = list(COLUMNS)
            self._column_set = frozenset(self.columns)
        elif fmt in ("jsonl", "json"):
            self._objects = self._array_objects() if fmt == "json" else None
            self._first = next(self._objects, None) if fmt == "json" else self._first_json_object()
            if self._first is None:
                raise DatasetError("the JSON array is empty", code="empty_file")
            _check_width(len(self._first), max_columns)
            self.columns = list(self._first)  # duplicate keys were refused while parsing
            self._column_set = frozenset(self.columns)
            if not self.columns:
                raise self._error("the first object has no keys: its keys name the columns")
            if any(not c.strip() for c in self.columns):
                raise self._error("every key of the first object needs a name (it names a column)")
            _check_header(self.columns, self._code)
        else:
            self._reader, self.columns = self._open_delimited()

    @property
    def sha256(self) -> str:
        return self._bytes.sha256

    @property
    def size_bytes(self) -> int:
        return self._bytes.size

    def __iter__(self) -> typing.Iterator[dict[str, str]]:
        if self._iterated:
            raise RuntimeError("a RowStream can be iterated only once")
        self._iterated = True
        if self.format == "json":
            return self._counted(self._json_array_rows())
        if self.format == "conll":
            return self._counted(self._conll_rows())
        return self._counted(self._jsonl_rows() if self.format == "jsonl" else self._delimited_rows())

    def _error(self, message: str) -> DatasetError:
        return DatasetError(f"line {self.line}: {message}", code=self._code)

    def _physical_lines(self) -> typing.Iterator[str]:
        while True:
            try:
                line = self._text.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError:  # _CheckedBytes reports bad UTF-8 first; this is a safety net
                raise DatasetError("the file is not valid UTF-8", code="invalid_encoding") from None
            if not line:
                return
            self.line += 1
            if len(line) > MAX_LINE_CHARS:
                raise self._error(f"the line is longer than {MAX_LINE_CHARS} characters")
            yield line

    def _first_line(self) -> str:
        """The first non-blank line (blank lines before a header are skipped, like those between rows); a file of
        only whitespace is empty."""
        for line in self._lines:
            if line.strip():
                return line
        raise DatasetError("the file is empty", code="empty_file")

    def _counted(self, rows: typing.Iterator[dict[str, str]]) -> typing.Iterator[dict[str, str]]:
        count = 0
        for row in rows:
            count += 1
            if self.max_rows is not None and count > self.max_rows:
                raise DatasetError(f"too many rows: at most {self.max_rows} are allowed", code="too_many_rows",
                                   status=413)
            yield row
        if not count:
            raise DatasetError("the file has a header but no data rows", code="empty_file")

    # -------------------------------------------------------------- csv / tsv

    def _open_delimited(self) -> tuple[typing.Iterator[list[str]], list[str]]:
        first = self._first_line()
        self.delimiter = "\t" if self.format == "tsv" else _detect_delimiter(first)
        # TSV keeps CSV quoting: tab-separated uploads were parsed that way before TSV had a name here.
        reader = csv.reader(itertools.chain([first], self._lines), delimiter=self.delimiter, strict=True)
        try:
            header = next(reader)
        except csv.Error as exc:
            raise self._error(f"malformed CSV ({exc})") from None
        _check_width(len(header), self.max_columns)
        columns = [c.strip() for c in header]
        _check_header(columns, self._code)
        return reader, columns

    def _delimited_rows(self) -> typing.Iterator[dict[str, str]]:
        columns, width = self.columns, len(self.columns)
        try:
            for record in self._reader:
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # blank line
                if len(record) != width:
                    raise self._error(f"{len(record)} fields, but the header has {width}")
                yield dict(zip(columns, record))
        except csv.Error as exc:
            raise self._error(f"malformed CSV ({exc})") from None

    # -------------------------------------------------------------- conll

    def _conll_rows(self) -> typing.Iterator[dict[str, str]]:
        """Sentences as rows whose ``tokens`` and ``tags`` cells hold JSON arrays: what a JSON Lines upload of token
        lists gives too, so every reader of token datasets sees one representation."""
        from .task_types.conll import conll_rows

        for sentence in conll_rows(self._lines):
            row = {column: json.dumps(values, ensure_ascii=False) for column, values in sentence.items()}
            if any(len(cell) > MAX_FIELD_CHARS for cell in row.values()):
                raise self._error(f"the sentence ending here is longer than {MAX_FIELD_CHARS} characters as JSON")
            yield row

    # -------------------------------------------------------------- json lines

    def _parse_json_line(self, line: str) -> dict:
        return self._check_object(self._decode(json.loads, line.rstrip()), line)

    def _first_json_object(self) -> dict:
        """The first object of a JSON Lines file -- or, when its first line is only the start of an object (a
        pretty-printed JSON document, as ``json.dumps(indent=2)`` writes a SQuAD file), the whole file as that one
        object: one row, told from the whole file rather than line by line."""
        line = self._first_line()
        text = line.rstrip()
        try:
            json.loads(text, object_pairs_hook=_json_object, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            if exc.pos >= len(text):  # the line ends inside a value: a document goes on over the next lines
                return self._whole_document(line)
        except (ValueError, RecursionError):
            pass  # parsed again below, for the dataset's message
        return self._parse_json_line(line)

    def _whole_document(self, first: str) -> dict:
        """The rest of the file after its ``first`` line, read as one JSON object spread over lines, at most
        ``MAX_LINE_CHARS`` in all (what one JSON Lines row may be; the cell limit applies to its values as to any
        row's); nothing may follow it."""
        start, parts, size = self.line, [first], len(first)
        for line in self._lines:
            size += len(line)
            if size > MAX_LINE_CHARS:
                raise self._error(f"a JSON object over several lines may have at most {MAX_LINE_CHARS} characters")
            parts.append(line)
        text = "".join(parts)
        try:
            value = json.loads(text, object_pairs_hook=_json_object, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            self.line = start + exc.lineno - 1
            if exc.msg == "Extra data":
                raise self._error("a JSON object written over several lines must be the whole file (JSON Lines: "
                                  "one object per line)") from None
            raise self._error(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError):
            value = self._decode(json.loads, text)  # raises, with the dataset's message
        return self._check_object(value, text)

    def _decode(self, parse: typing.Callable, text: str) -> typing.Any:
        """``parse(text)`` with the dataset rules (no repeated key, no NaN); errors become :class:`DatasetError`."""
        try:
            return parse(text, object_pairs_hook=_json_object, parse_constant=_reject_constant)
        except _DuplicateKeys as exc:
            raise self._error(f"duplicate keys in the object: {exc}") from None
        except json.JSONDecodeError as exc:
            raise self._error(f"invalid JSON ({exc.msg} at column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise self._error(f"invalid JSON ({exc})") from None

    def _check_object(self, value: typing.Any, text: str) -> dict:
        """``value`` (decoded from ``text``) must be an object whose strings SQL can store."""
        if not isinstance(value, dict):
            raise self._error(f"expected a JSON object ({{...}}), got {_json_kind(value)}")
        if _SURROGATE_ESCAPE.search(text):  # only a \u escape can make one: the bytes were valid UTF-8
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise self._error("a \\u escape makes a lone UTF-16 surrogate (\\ud800-\\udfff): not text") from None
        return value

    def _json_row(self, obj: dict) -> dict[str, str]:
        extra = [k for k in obj if k not in self._column_set]
        if extra:
            raise self._error(
                f"key {extra[0]!r} is not in the first object's keys ({', '.join(self.columns)}); "
                "every line must use those keys"
            )
        row = {}
        for column in self.columns:
            value = _cell(obj.get(column))
            if len(value) > MAX_FIELD_CHARS:
                raise self._error(f"field larger than field limit ({MAX_FIELD_CHARS})")
            if "\x00" in value:  # an escaped \u0000: text columns in SQL cannot store it
                raise self._error(f"column {column!r} contains a NUL character")
            row[column] = value
        return row

    def _array_objects(self) -> typing.Iterator[dict]:
        """The objects of a JSON array, decoded one at a time from a sliding buffer (never the whole file).

        ``self.line`` follows the line of the object being decoded, for error messages.
        """
        buffer, eof = "", False

        def fill() -> bool:
            nonlocal buffer, eof
            chunk = self._text.read(_READ_CHUNK)
            eof = not chunk
            buffer += chunk
            return bool(chunk)

        def skip_space() -> str:
            nonlocal buffer
            while True:
                stripped = buffer.lstrip()
                self.line += buffer.count("\n", 0, len(buffer) - len(stripped))
                buffer = stripped
                if buffer or not fill():
                    return buffer[:1]

        self.line = 1
        if not skip_space():
            raise DatasetError("the file is empty", code="empty_file")
        if buffer[:1] != "[":
            raise self._error("a JSON dataset is an array of objects: [{...}, {...}]")
        buffer = buffer[1:]
        head = skip_space()
        while head != "]":
            if not head:
                raise self._error("the JSON array is not closed with ']'")
            raw_decode = json.JSONDecoder(object_pairs_hook=_json_object, parse_constant=_reject_constant).raw_decode
            while True:
                try:
                    obj, end = raw_decode(buffer)
                except json.JSONDecodeError:  # maybe only cut short: read on, up to the longest object allowed
                    if not eof and len(buffer) <= MAX_LINE_CHARS and fill():
                        continue
                    self._decode(lambda text, **_: raw_decode(text), buffer)  # raises, with the dataset's message
                except (ValueError, RecursionError):
                    self._decode(lambda text, **_: raw_decode(text), buffer)
                break
            self._check_object(obj, buffer[:end])
            self.line += buffer.count("\n", 0, end)
            buffer = buffer[end:]
            yield obj
            head = skip_space()
            if head == "]":
                break
            if head != ",":
                raise self._error("expected ',' or ']' after an object")
            buffer = buffer[1:]
            head = skip_space()
            if head == "]":
                raise self._error("a ',' must be followed by another object")
        buffer = buffer[1:]
        if skip_space():
            raise self._error("text after the closing ']'")

    def _json_array_rows(self) -> typing.Iterator[dict[str, str]]:
        yield self._json_row(self._first)
        del self._first
        for obj in self._objects:
            yield self._json_row(obj)

    def _jsonl_rows(self) -> typing.Iterator[dict[str, str]]:
        yield self._json_row(self._first)
        del self._first
        for line in self._lines:
            if line.strip():
                yield self._json_row(self._parse_json_line(line))


def open_rows(source: bytes | typing.BinaryIO, fmt: str, *, max_rows: int | None = None) -> RowStream:
    """Stream the rows of ``source`` (bytes, or a binary file object read from where it is) in format ``fmt``.

    Header problems raise :class:`DatasetError` here; row problems while iterating. Decoding is incremental
    (UTF-8, a BOM allowed), so memory stays bounded by the longest line, not the file.
    """
    return RowStream(source, fmt, max_rows=max_rows)


def read_rows(content: bytes, fmt: str = "csv", *, max_rows: int | None = None) -> ParsedCSV:
    """Every row of a stored dataset, in memory (training needs them all). Raises :class:`DatasetError`."""
    stream = open_rows(content, fmt, max_rows=max_rows)
    rows = list(stream)
    return ParsedCSV(columns=stream.columns, rows=rows, delimiter=stream.delimiter, sha256=stream.sha256,
                     format=fmt)


def parse_csv(data: bytes, *, max_rows: int | None = None) -> ParsedCSV:
    """Parse a CSV with a header row into dict rows. Raises :class:`DatasetError` for anything malformed."""
    return read_rows(data, "csv", max_rows=max_rows)


def decode_csv_bytes(data: bytes) -> str:
    """UTF-8 text of an upload (a BOM is allowed); anything else is a clear 400."""
    if not data or not data.strip():
        raise DatasetError("the file is empty", code="empty_file")
    if b"\x00" in data:
        raise DatasetError("the file contains NUL bytes: it is not a text CSV file", code="invalid_csv")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            f"the file is not valid UTF-8 (byte {exc.start}): save it as UTF-8 and upload again",
            code="invalid_encoding",
        ) from None


# ---------------------------------------------------------------- profile


class _ColumnStats:
    """Distinct, empty and (for label-like columns) per-value counts of one column, in bounded memory."""

    def __init__(self) -> None:
        self.empty = 0
        self.filled = 0
        self.counts: Counter[str] | None = Counter()  # real values, while the column may still be label-like
        self.hashes: set[int] | None = None  # past that: only the distinct count is wanted, hashes are small
        self.capped = False

    def add(self, value: str) -> None:
        value = value.strip()
        if not value:
            self.empty += 1
            return
        self.filled += 1
        if self.counts is not None:
            self.counts[value] += 1
            if len(self.counts) > LABEL_LIKE_MAX_DISTINCT:
                self.hashes, self.counts = {hash(v) for v in self.counts}, None
        elif self.hashes is not None:
            # 64-bit hashes: a collision among DISTINCT_CAP values (odds about 1e-13) would undercount by one
            self.hashes.add(hash(value))
            if len(self.hashes) > DISTINCT_CAP:
                self.hashes, self.capped = None, True

    def result(self) -> dict:
        if self.capped:
            return {"distinct": DISTINCT_CAP, "empty": self.empty, "label_like": False, "top_values": None,
                    "distinct_capped": True}
        distinct = len(self.counts) if self.counts is not None else len(self.hashes)
        # label-like: a few distinct values, some repeated (an all-unique column is text or an id)
        label_like = 2 <= distinct <= LABEL_LIKE_MAX_DISTINCT and distinct < self.filled
        return {
            "distinct": distinct,
            "empty": self.empty,
            "label_like": label_like,
            # label counts for columns that look like labels: [[value, count], ...], most common first
            "top_values": [[v, n] for v, n in self.counts.most_common(TOP_VALUES)] if label_like else None,
        }


class _ListStats:
    """Counts of a column whose cells are JSON arrays of strings (a token dataset's ``tokens`` and ``tags``): rows,
    items, and per-item counts while the column has few distinct items (a tag set), in bounded memory."""

    def __init__(self) -> None:
        self.rows = 0
        self.items = 0
        self.counts: Counter[str] | None = Counter()

    def add(self, cell: str) -> bool:
        """Count one cell; False when it is not a JSON array of strings (the column is then no list column)."""
        if not cell.strip():
            return True
        if not cell.lstrip().startswith("["):
            return False
        try:
            values = json.loads(cell)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            return False
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            return False
        self.rows += 1
        self.items += len(values)
        if self.counts is not None:
            self.counts.update(values)
            if len(self.counts) > DISTINCT_CAP // 10:
                self.counts = None  # free text (tokens), not a tag set: only the totals are kept
        return True

    def result(self) -> dict:
        few = self.counts is not None and len(self.counts) <= LABEL_LIKE_MAX_DISTINCT
        return {"rows": self.rows, "items": self.items,
                "distinct": len(self.counts) if self.counts is not None else None,
                # [[item, count], ...], most common first: a tag set's counts
                "top_values": [[v, n] for v, n in self.counts.most_common()] if few else None}


class Profiler:
    """Builds a dataset's profile row by row: the first rows (cells truncated), per-column statistics, and for
    columns of JSON arrays (token datasets) their item counts."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.preview: list[dict[str, str]] = []
        self._stats = {column: _ColumnStats() for column in columns}
        self._lists = {column: _ListStats() for column in columns}  # until a cell is not an array of strings

    def add(self, row: dict[str, str]) -> None:
        if len(self.preview) < PREVIEW_ROWS:
            self.preview.append({k: v[:PREVIEW_CELL_CHARS] for k, v in row.items()})
        for column, stats in self._stats.items():
            stats.add(row[column])
        for column in [c for c, lists in self._lists.items() if not lists.add(row[c])]:
            del self._lists[column]

    def result(self) -> dict:
        """``{"preview": [...], "column_stats": {column: {distinct, empty, label_like, top_values}}}``; a column
        with more than ``DISTINCT_CAP`` distinct values reports that many, plus ``"distinct_capped": true``.
        Columns whose every filled cell is a JSON array of strings add ``"list_stats": {column: {rows, items,
        distinct, top_values}}`` (a token dataset: sentences, tokens and tag counts)."""
        result = {"preview": self.preview, "column_stats": {c: s.result() for c, s in self._stats.items()}}
        lists = {c: s.result() for c, s in self._lists.items() if s.rows}
        if lists:
            result["list_stats"] = lists
        return result


def profile_rows(parsed: ParsedCSV) -> dict:
    """The profile (see :meth:`Profiler.result`) of rows already in memory."""
    profiler = Profiler(parsed.columns)
    for row in parsed.rows:
        profiler.add(row)
    return profiler.result()


def scan_upload(
    stream: typing.BinaryIO, filename: str | None, *, max_rows: int | None = None, fmt: str | None = None,
    max_columns: int | None = None,
) -> UploadScan:
    """Validate every row of an upload and profile it in one streaming pass, from the stream's current position.

    The format is ``fmt`` if given, else detected from ``filename`` and the first bytes. Raises
    :class:`DatasetError`; memory stays bounded whatever the file's size.
    """
    head = stream.read(HEAD_BYTES) or b""
    fmt = fmt or detect_format(filename, head)
    rows = RowStream(stream, fmt, max_rows=max_rows, prefix=head, max_columns=max_columns)
    profiler = Profiler(rows.columns)
    count = 0
    for row in rows:
        profiler.add(row)
        count += 1
    return UploadScan(format=fmt, columns=rows.columns, row_count=count, size_bytes=rows.size_bytes,
                      sha256=rows.sha256, profile=profiler.result())


# ---------------------------------------------------------------- training columns


# a row's labels and the 0/1 label cells are text classification's (core.task_types.text_classification)


def check_column_names(columns: list[str], config: typing.Any) -> None:
    """The columns ``config`` (a ``core.options.TrainConfig``) trains on exist in ``columns`` and are not both text
    and label (422); needs only a dataset's stored column list, so it runs before any row is read."""
    from . import task_types  # (the package's modules import this one)

    text_columns, label_columns = task_types.get(config.task_type).dataset_columns(config, columns)
    missing = [c for c in [*text_columns, *label_columns] if c not in columns]
    if missing:
        shown = ", ".join(columns[:50]) + (f", ... ({len(columns)} columns)" if len(columns) > 50 else "")
        raise DatasetError(
            f"column(s) {', '.join(repr(c) for c in missing)} not in the dataset; it has {shown}",
            code="unknown_column",
            status=422,
        )
    if set(text_columns) & set(label_columns):
        raise DatasetError("a text column cannot also be a label column", code="invalid_columns", status=422)


def check_training_columns(data: ParsedCSV | RowStream, config: typing.Any, *,
                           known: dict[str, set[str]] | None = None) -> dict[str, Counter[str]]:
    """Validate the columns ``config`` (a ``core.options.TrainConfig``) trains on; returns label counts per task
    (multi-label: one task named after its label column, or ``labels``). Errors are 422.

    ``data``: rows in memory, or a :class:`RowStream` read once (memory then stays bounded: at most
    ``MAX_TRAINING_LABELS`` labels of at most ``LABEL_MAX`` characters per task are counted, whatever the rows).
    ``known``: the label sets of the training data, for a separate validation dataset (its labels must be among them).
    """
    from . import task_types  # (the package's modules import this one)

    check_column_names(data.columns, config)
    rows = data.rows if isinstance(data, ParsedCSV) else data
    return task_types.get(config.task_type).check_training_rows(rows, config, known=known)


def check_text_rows(rows: typing.Iterable[dict[str, str]], config: typing.Any, *,
                    known: dict[str, set[str]] | None = None) -> dict[str, Counter[str]]:
    """Text classification's rows (see :func:`check_training_columns`): label cells read by ``row_labels``."""
    label_columns, text_columns = list(config.label_columns), config.text_columns()
    tasks = task_names(config)
    counts: dict[str, Counter[str]] = {task: Counter() for task in tasks}
    for number, row in enumerate(rows, start=2):
        if not all(row.get(c, "").strip() for c in text_columns[:1]):
            continue
        labels = row_labels(row, config)
        if labels is None:
            raise DatasetError(
                f"row {number}: multi-label columns hold 0/1 (or true/false, yes/no) in every cell; found "
                f"{', '.join(repr(row.get(c, '')[:40]) for c in label_columns)}",
                code="invalid_label_value", status=422,
            )
        if config.multi_label:
            counts[tasks[0]].update(labels)
        else:
            for task, label in zip(tasks, labels):
                if label:
                    counts[task][label] += 1
        for task in tasks:  # checked as rows come, so neither a label's length nor their number grows memory
            _check_labels_bounded(task, counts[task], labels)
    for task, counter in counts.items():
        if known is not None:
            unknown = sorted(set(counter) - known.get(task, set()))
            if unknown:
                raise DatasetError(
                    f"the validation data has labels the training data lacks for {task!r}: {', '.join(unknown[:10])}",
                    code="unknown_labels", status=422,
                )
            continue
        if len(counter) < 2:
            found = ", ".join(repr(x) for x in counter) or "none"
            raise DatasetError(
                f"label column {task!r} needs at least 2 classes with non-empty text; found {found}",
                code="too_few_classes",
                status=422,
            )
    return counts


def _check_labels_bounded(task: str, counter: Counter[str], labels: list[str]) -> None:
    """422 for a label longer than LABEL_MAX (a predicted label is stored in a column that long) or for a task past
    MAX_TRAINING_LABELS distinct labels: both mean a text column was picked as a label column."""
    too_long = next((label for label in labels if len(label) > LABEL_MAX), None)
    if too_long is not None:
        raise DatasetError(
            f"label column {task!r}: a label longer than {LABEL_MAX} characters, e.g. {too_long[:60]!r}...; "
            "is it a text column?",
            code="label_too_long",
            status=422,
        )
    if len(counter) > MAX_TRAINING_LABELS:
        raise DatasetError(
            f"label column {task!r} has more than {MAX_TRAINING_LABELS:,} distinct labels; is it a text column?",
            code="too_many_labels",
            status=422,
        )
