"""``@documented``: one declaration of what an API route takes and answers, read by the route and the document.

The decorator goes *under* the route decorator (Flask must register the documented function)::

    @bp.post("/api/v1/jobs/train")
    @documented("Queue a training job", body=TrainRequest, creates_job=True,
                responses={202: QUEUED, 404: "unknown dataset"})
    def create_train_job(body: TrainRequest): ...

- ``body``: a pydantic model (``core.specs``) of the JSON body. The decorator reads the body (400 ``invalid_json``,
  see ``request_args.json_object``), validates it strictly (no coercion: ``"3"`` is not an integer, as in the
  document) under the deployment's limits (422 ``validation_error``) and passes the model to the view as ``body=``.
- ``form``: the same for a multipart/form-data body (``web.queries.DatasetUpload``), passed as ``form=``.
- ``query``: a pydantic model (``web.queries``) of the query string, validated (400 ``invalid_parameter``) and
  passed as ``query=``.
- ``responses``: status -> an :class:`Answer`, a response model (``web.schemas``), or a description of an error
  answer (its body is ``Error``).

``web.openapi`` walks ``app.url_map`` and writes each route's operation from this declaration, adding what every
route shares (401, 415, 429, the 400/404/422 a body, query or path id implies), so the bounds and enums in the
document are the ones enforced and a new route is documented by its own decorator.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .. import schemas, services
from .request_args import form_args, json_object, query_args

ATTRIBUTE = "openapi_operation"  # where a documented view keeps its Operation


@dataclass(frozen=True)
class Answer:
    """One documented response: a description and a JSON body model, or raw OpenAPI ``content`` (non-JSON)."""

    description: str
    model: type[BaseModel] | None = schemas.Error
    headers: Mapping[str, str] = field(default_factory=dict)  # header name -> description (string values)
    content: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Operation:
    """What ``@documented`` declared about one view."""

    summary: str
    description: str | None
    body: type[BaseModel] | None
    form: type[BaseModel] | None
    query: type[BaseModel] | None
    responses: Mapping[int, Answer]
    creates_job: bool


def _answer(value: Answer | type[BaseModel] | str) -> Answer:
    if isinstance(value, Answer):
        return value
    if isinstance(value, str):
        return Answer(value)
    if isinstance(value, type) and issubclass(value, BaseModel):
        return Answer((value.__doc__ or value.__name__).strip().splitlines()[0], value)
    raise TypeError(f"a response is an Answer, a pydantic model or a description, not {value!r}")


def documented(
    summary: str,
    *,
    responses: Mapping[int, Answer | type[BaseModel] | str],
    description: str | None = None,
    body: type[BaseModel] | None = None,
    form: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    creates_job: bool = False,
) -> Callable[[Callable], Callable]:
    """Declare a route's summary, inputs and answers; validate its body/form/query and pass them to the view."""
    if body is not None and form is not None:
        raise TypeError("a route takes a JSON body or a multipart form, not both")
    operation = Operation(
        summary=summary,
        description=description,
        body=body,
        form=form,
        query=query,
        responses={status: _answer(value) for status, value in responses.items()},
        creates_job=creates_job,
    )

    def decorate(view: Callable) -> Callable:
        @functools.wraps(view)
        def validated(*args: Any, **kwargs: Any):
            # query first: a bad query string is a 400 whatever the body holds
            if query is not None:
                kwargs["query"] = query_args(query)
            if body is not None:
                kwargs["body"] = services.validate(body, json_object(), strict=True)
            if form is not None:
                kwargs["form"] = form_args(form)
            return view(*args, **kwargs)

        setattr(validated, ATTRIBUTE, operation)
        return validated

    return decorate


def operation_of(view: Callable | None) -> Operation | None:
    """The :class:`Operation` a view was documented with, or None."""
    return getattr(view, ATTRIBUTE, None)


# Answers several routes share.
LOCATION = {"Location": "where to poll the job"}
QUEUED = Answer("queued", schemas.Job, headers=LOCATION)
FORBIDDEN = Answer("the token is valid but its user is not an admin")
