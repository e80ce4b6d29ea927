"""Parsing and validating uploaded CSV datasets. Errors carry a user-facing message and an HTTP status."""
from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from dataclasses import dataclass

# Tweets are short, but users upload documents too; the per-field cap protects memory, not realism.
MAX_FIELD_CHARS = 1_000_000
csv.field_size_limit(MAX_FIELD_CHARS)

_DELIMITERS = (",", ";", "\t")


class DatasetError(ValueError):
    """Bad dataset input. ``code`` is machine-readable, ``status`` the HTTP status to answer with."""

    def __init__(self, message: str, *, code: str = "invalid_dataset", status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


@dataclass(frozen=True)
class ParsedCSV:
    columns: list[str]
    rows: list[dict[str, str]]
    delimiter: str
    sha256: str

    @property
    def row_count(self) -> int:
        return len(self.rows)


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


def _detect_delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else ","


def parse_csv(data: bytes, *, max_rows: int | None = None) -> ParsedCSV:
    """Parse a CSV with a header row into dict rows. Raises :class:`DatasetError` for anything malformed."""
    text = decode_csv_bytes(data)
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    delimiter = _detect_delimiter(first_line)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
        columns = [c.strip() for c in header]
        if not columns or all(not c for c in columns):
            raise DatasetError("the first row must be a header naming the columns", code="invalid_csv")
        if any(not c for c in columns):
            raise DatasetError("every column in the header row needs a name", code="invalid_csv")
        duplicates = sorted(c for c, n in Counter(columns).items() if n > 1)
        if duplicates:
            raise DatasetError(f"duplicate column names in the header: {', '.join(duplicates)}", code="invalid_csv")
        rows: list[dict[str, str]] = []
        for record in reader:
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if len(record) != len(columns):
                raise DatasetError(
                    f"line {reader.line_num}: {len(record)} fields, but the header has {len(columns)}",
                    code="invalid_csv",
                )
            rows.append(dict(zip(columns, record)))
            if max_rows is not None and len(rows) > max_rows:
                raise DatasetError(f"too many rows: at most {max_rows} are allowed", code="too_many_rows", status=413)
    except csv.Error as exc:
        raise DatasetError(f"line {reader.line_num}: malformed CSV ({exc})", code="invalid_csv") from None
    if not rows:
        raise DatasetError("the file has a header but no data rows", code="empty_file")
    return ParsedCSV(columns=columns, rows=rows, delimiter=delimiter, sha256=hashlib.sha256(data).hexdigest())


def label_counts(rows: list[dict[str, str]], text_column: str, label_column: str) -> Counter[str]:
    """How many usable rows (non-empty text and label) each label has."""
    return Counter(
        row[label_column].strip()
        for row in rows
        if row.get(text_column, "").strip() and row.get(label_column, "").strip()
    )


def check_training_columns(
    parsed: ParsedCSV, text_column: str, label_columns: list[str], *, min_rows_per_class: int = 1
) -> dict[str, Counter[str]]:
    """Validate the columns chosen for training; returns label counts per label column. Errors are 422."""
    missing = [c for c in [text_column, *label_columns] if c not in parsed.columns]
    if missing:
        raise DatasetError(
            f"column(s) {', '.join(repr(c) for c in missing)} not in the dataset; it has {', '.join(parsed.columns)}",
            code="unknown_column",
            status=422,
        )
    if text_column in label_columns:
        raise DatasetError("the text column cannot also be a label column", code="invalid_columns", status=422)
    counts = {}
    for column in label_columns:
        counts[column] = label_counts(parsed.rows, text_column, column)
        if len(counts[column]) < 2:
            found = ", ".join(repr(x) for x in counts[column]) or "none"
            raise DatasetError(
                f"label column {column!r} needs at least 2 classes with non-empty text; found {found}",
                code="too_few_classes",
                status=422,
            )
        rare = sorted(label for label, n in counts[column].items() if n < min_rows_per_class)
        if rare:
            raise DatasetError(
                f"label column {column!r}: classes with fewer than {min_rows_per_class} rows: {', '.join(rare[:10])}",
                code="too_few_rows",
                status=422,
            )
    return counts
