"""A multipart/form-data body read from disk as it is sent, with a known length and a progress callback.

``requests`` streams any file-like ``data`` with a ``__len__`` (it then sends a ``Content-Length`` header, which
every WSGI server understands, unlike chunked request bodies), so an archive of gigabytes is never held in memory.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK_BYTES = 1 << 20  # bytes handed to the connection at a time


def _quote(value: str) -> str:
    # RFC 7578 4.2: a quoted-string; a quote or line break in a field or file name would break the header
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class MultipartFile:
    """A ``multipart/form-data`` body with text ``fields`` and one file part named ``field`` read from ``path``.

    Use as ``requests.post(url, data=body, headers={"Content-Type": body.content_type})``; ``on_read(n)`` is called
    with the number of bytes of each chunk handed to the connection (upload progress).
    """

    def __init__(self, path: str | os.PathLike, *, field: str = "file", fields: dict[str, str] | None = None,
                 on_read: Callable[[int], None] | None = None) -> None:
        self.path = Path(path)
        self.boundary = f"bertqueue-{uuid.uuid4().hex}"
        self.on_read = on_read
        head = b""
        for name, value in (fields or {}).items():
            head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
                     f"{value}\r\n").encode("utf-8")
        head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(field)}"; '
                 f'filename="{_quote(self.path.name)}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 ).encode("utf-8")
        self._parts: list[bytes | BinaryIO] = [head, b"", f"\r\n--{self.boundary}--\r\n".encode("ascii")]
        self._length = len(head) + self.path.stat().st_size + len(self._parts[2])
        self._file: BinaryIO | None = None
        self._index = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def __iter__(self):
        # requests streams an iterable body chunk by chunk (with the Content-Length from __len__)
        while chunk := self.read(CHUNK_BYTES):
            yield chunk

    def read(self, size: int = -1) -> bytes:
        """The next bytes of the body (at most ``size``; everything left when negative)."""
        out = bytearray()
        while self._index < len(self._parts) and (size < 0 or len(out) < size):
            want = -1 if size < 0 else size - len(out)
            if self._index == 1:  # the file itself, opened on first read and closed at its end
                if self._file is None:
                    self._file = open(self.path, "rb")  # noqa: SIM115  (closed below or in close())
                chunk = self._file.read(want)
                if not chunk:
                    self._file.close()
                    self._index += 1
                out += chunk
            else:
                part = self._parts[self._index]
                take = part if want < 0 else part[:want]
                self._parts[self._index] = part[len(take):]
                out += take
                if not self._parts[self._index]:
                    self._index += 1
        if out and self.on_read is not None:
            self.on_read(len(out))
        return bytes(out)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
