"""The REST calls the commands make: one :class:`Client` per invocation, errors as :class:`ApiError`.

Every call sends ``Authorization: Bearer <token>`` (``web.auth``); an answer outside 2xx becomes an
:class:`ApiError` carrying the API's ``{"error": {"code", "message"}}``, and an unreachable server one with the code
``connection_error``, so the command line has one kind of failure to report.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from .multipart import MultipartFile

DEFAULT_URL = "http://127.0.0.1:5000"
DOWNLOAD_CHUNK_BYTES = 1 << 20
IMPORT_ATTEMPTS = 3  # uploads of an import whose version a concurrent one took (409 version_conflict)
PAGE_LIMIT = 1000  # items per list request when every page is read (the API's largest page)


class ApiError(Exception):
    """A failed call: the HTTP status (None when the server was not reached), the API's error code and message."""

    def __init__(self, status: int | None, code: str, message: str, details: list | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []

    def __str__(self) -> str:
        where = f"HTTP {self.status} {self.code}" if self.status is not None else self.code
        lines = [f"{self.message} ({where})"]
        lines += [f"  {d.get('field') or '-'}: {d.get('message')}" for d in self.details if isinstance(d, dict)]
        return "\n".join(lines)


def _error_from(response: requests.Response) -> ApiError:
    """The API's error body, or the status line when the answer is not one (a proxy's HTML page, say)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return ApiError(response.status_code, str(error.get("code", "error")), str(error["message"]),
                        error.get("details") if isinstance(error.get("details"), list) else None)
    return ApiError(response.status_code, "http_error", f"{response.status_code} {response.reason or ''}".strip())


class Client:
    """Calls to one deployment's ``/api/v1`` with one token; ``timeout`` bounds each connect and each read."""

    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 60.0) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "bertqueue-cli"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # ---- plumbing
    def request(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
        """``method path`` under the base URL; raises :class:`ApiError` for a non-2xx answer or no answer."""
        try:
            response = self.session.request(method, f"{self.base}{path}", timeout=self.timeout, stream=stream,
                                            **kwargs)
        except requests.Timeout as exc:
            raise ApiError(None, "timeout", f"no answer from {self.base} within {self.timeout:g} s: {exc}") from exc
        except requests.RequestException as exc:
            raise ApiError(None, "connection_error", f"cannot reach {self.base}: {_reason(exc)}") from exc
        if not response.ok:
            error = _error_from(response)
            response.close()
            raise error
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON answer of ``method path`` (an answer that is not JSON is an :class:`ApiError` too)."""
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(response.status_code, "invalid_answer",
                           f"{method} {path} answered {response.headers.get('Content-Type')!r}, not JSON: is "
                           f"{self.base} a bertqueue server?") from exc

    def all_pages(self, path: str, params: dict | None = None) -> Iterator[dict]:
        """Every item of a paged list (``{"items", "total", "limit", "offset"}``), page after page."""
        offset = 0
        while True:
            page = self.json("GET", path, params={**(params or {}), "limit": PAGE_LIMIT, "offset": offset})
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

    # ---- datasets
    def upload_dataset(self, path: str | os.PathLike, name: str | None = None,
                       on_read: Callable[[int], None] | None = None) -> dict:
        """``POST /api/v1/datasets``: the file streamed from disk."""
        return self._upload("/api/v1/datasets", path, {"name": name} if name else {}, on_read)

    def datasets(self, limit: int = 100) -> dict:
        return self.json("GET", "/api/v1/datasets", params={"limit": limit})

    def delete_dataset(self, dataset_id: int) -> dict:
        """``DELETE /api/v1/datasets/<id>``: the deleted dataset (409 while a queued or running job uses it)."""
        return self.json("DELETE", f"/api/v1/datasets/{dataset_id}")

    # ---- jobs
    def create_job(self, kind: str, body: dict) -> dict:
        """``POST /api/v1/jobs/<kind>`` (train, classify, evaluate): the queued job."""
        return self.json("POST", f"/api/v1/jobs/{kind}", json=body)

    def job(self, job_id: str) -> dict:
        return self.json("GET", f"/api/v1/jobs/{_segment(job_id)}")

    def jobs(self, **filters: Any) -> dict:
        return self.json("GET", "/api/v1/jobs", params={k: v for k, v in filters.items() if v is not None})

    def cancel(self, job_id: str) -> dict:
        return self.json("POST", f"/api/v1/jobs/{_segment(job_id)}/cancel")

    def predictions(self, job_id: str) -> list[dict]:
        return list(self.all_pages(f"/api/v1/jobs/{_segment(job_id)}/predictions"))

    def export(self, job_id: str, destination: str | os.PathLike, fmt: str = "csv",
               on_total: Callable[[int | None], None] | None = None,
               on_chunk: Callable[[int], None] | None = None) -> int:
        """A succeeded classify job's predictions as CSV or JSONL, streamed to ``destination``."""
        return self.download(f"/api/v1/jobs/{_segment(job_id)}/export", destination, params={"format": fmt},
                             on_total=on_total, on_chunk=on_chunk)

    # ---- models
    def models(self, name: str | None = None, limit: int = 100) -> dict:
        """``GET /api/v1/models[?name=]``: newest first (a name's versions, newest first)."""
        params: dict = {"limit": limit}
        if name is not None:
            params["name"] = name
        return self.json("GET", "/api/v1/models", params=params)

    def model(self, model_id: int) -> dict:
        return self.json("GET", f"/api/v1/models/{model_id}")

    def resolve_model(self, reference: str) -> dict:
        """The model a reference names: an id (digits), ``name`` (its latest version that is not deleted) or
        ``name:version``, as the API resolves ``"model"`` in a classify body (needed where the API takes an id)."""
        kind, value = parse_model_reference(reference)
        if kind == "model_id":
            return self.model(value)
        name, version = split_model_reference(value)
        params = {"name": name, **({"include_deleted": "true"} if version is not None else {})}
        # filtered here too: the name filter narrows the list, equality decides
        matches = [m for m in self.all_pages("/api/v1/models", params) if m.get("name") == name]
        if version is not None:
            matches = [m for m in matches if m.get("version") == version]
        if not matches:
            raise ApiError(404, "not_found", f"no model {value!r}")
        if len({m.get("owner_id") for m in matches}) > 1:  # an admin sees every user's models: names are per user
            ids = ", ".join(str(m["id"]) for m in matches[:10])
            raise ApiError(None, "ambiguous_model", f"several users have a model {value!r} (ids {ids}): give its id")
        return max(matches, key=lambda m: m.get("version") or 0)

    def delete_model(self, model_id: int) -> dict:
        """``DELETE /api/v1/models/<id>``: the model marked deleted (409 while a queued or running job uses it)."""
        return self.json("DELETE", f"/api/v1/models/{model_id}")

    def download_model(self, model_id: int, destination: str | os.PathLike,
                       on_total: Callable[[int | None], None] | None = None,
                       on_chunk: Callable[[int], None] | None = None) -> int:
        """``GET /api/v1/models/<id>/download``: the model's zip, streamed to ``destination``."""
        return self.download(f"/api/v1/models/{model_id}/download", destination, on_total=on_total,
                             on_chunk=on_chunk)

    def import_model(self, path: str | os.PathLike, name: str | None = None,
                     on_read: Callable[[int], None] | None = None) -> dict:
        """``POST /api/v1/models/import``: a Hugging Face checkpoint zip, streamed from disk (no ``name``: the
        server names it after the file). A version taken by a concurrent import or training is tried again."""
        for attempt in range(IMPORT_ATTEMPTS):
            try:
                return self._upload("/api/v1/models/import", path, {"name": name} if name else {}, on_read)
            except ApiError as exc:
                if exc.code != "version_conflict" or attempt == IMPORT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # ---- transfers
    def _upload(self, path: str, file: str | os.PathLike, fields: dict, on_read) -> dict:
        body = MultipartFile(file, fields=fields, on_read=on_read)
        try:
            return self.json("POST", path, data=body, headers={"Content-Type": body.content_type})
        finally:
            body.close()

    def download(self, path: str, destination: str | os.PathLike, *, params: dict | None = None,
                 on_total: Callable[[int | None], None] | None = None,
                 on_chunk: Callable[[int], None] | None = None) -> int:
        """Stream ``GET path`` into ``destination`` through a ``.part`` file renamed at the end (an interrupted
        download never leaves a truncated file under the real name); returns the bytes written."""
        destination = Path(destination)
        partial = destination.with_name(destination.name + ".part")
        written = 0
        with self.request("GET", path, params=params, stream=True) as response:
            length = response.headers.get("Content-Length")
            if on_total is not None:
                on_total(int(length) if length and length.isdigit() else None)
            try:
                with open(partial, "wb") as out:
                    for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                        out.write(chunk)
                        written += len(chunk)
                        if on_chunk is not None:
                            on_chunk(len(chunk))
            except BaseException as exc:
                partial.unlink(missing_ok=True)
                if isinstance(exc, requests.RequestException):
                    raise ApiError(None, "connection_error", f"download interrupted: {exc}") from exc
                raise
        partial.replace(destination)
        return written


def parse_model_reference(reference: str) -> tuple[str, Any]:
    """``("model_id", 12)`` for digits, else ``("model", "name")`` / ``("model", "name:3")`` (the API's contract)."""
    reference = reference.strip()
    if reference.isascii() and reference.isdigit():
        return "model_id", int(reference)
    if not reference:
        raise ValueError("a model reference is an id, a name or name:version")
    return "model", reference


def split_model_reference(reference: str) -> tuple[str, int | None]:
    """``"name:3"`` -> ``("name", 3)``; ``"name"`` -> ``("name", None)``. The version follows the last colon (as
    the API reads it): a name holding colons is written ``"a:b:2"``."""
    name, sep, version = reference.rpartition(":")
    if sep and name and version.isascii() and version.isdigit():
        return name, int(version)
    return reference, None


def _reason(exc: requests.RequestException) -> str:
    """Why a connection failed, without urllib3's wrapping ("Max retries exceeded ... Caused by ...")."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    text = str(reason if reason is not None else exc)
    return text.split("): ", 1)[-1]  # drops "HTTPConnection(host=..., port=...)" before the cause


def _segment(value: str) -> str:
    """A value put in a URL path, escaped (a job id typed with a slash must not reach another route)."""
    return requests.utils.quote(str(value), safe="")
