"""Assertions shared by the web tests."""
from __future__ import annotations


def assert_error(response, status: int, code: str | None = None) -> dict:
    """``response`` is a JSON error with the API's shape; returns the ``error`` object."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True)[:500])
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert set(body) >= {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error
