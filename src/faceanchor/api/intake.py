"""Bounded intake: how request work reaches threads without starving the rest of the server.

Submits (validate the body cheaply, store its bytes, insert the job) run in threads, at most
``intake_concurrency`` at once; the others wait on the event loop holding only their parsed
body. ``/health`` answers from memory (the service counts its queue on a thread of its own,
:meth:`Service.cached_health <faceanchor.service.runtime.Service.cached_health>`), or, without a
recent count, on a thread of its own, so readiness never waits behind request work in the shared
pool (anyio's default limiter, 40 threads, which every sync route uses).

A queued submit's body is taken as raw bytes (:func:`read_body`, one buffer, never parsed on the
event loop) and parsed and validated in its intake thread in one pass by pydantic-core
(:func:`parse_body`, ``model_validate_json``): while a submit waits for its place it holds its
body once, and the loop stays free for the other connections and ``/health``.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class Lanes:
    """Capacity limiters by name, made on first use inside the running event loop."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = dict(sizes)
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    async def run(self, lane: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, holding one of ``lane``'s places."""
        limiter = self._limiters.get(lane)
        if limiter is None:
            limiter = self._limiters.setdefault(lane, anyio.CapacityLimiter(self.sizes[lane]))
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


def lanes_for(settings: Any) -> Lanes:
    return Lanes({"intake": settings.intake_concurrency, "health": 1})


def json_body_openapi(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON body of ``model`` for a route that reads it itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def _invalid(message: str, kind: str = "missing") -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": ("body",), "msg": message, "input": None}])


async def read_body(request: Request) -> bytearray | bytes:
    """The request's JSON body as received: into one buffer of its ``Content-Length`` (no join
    copy), or joined from its chunks without one. 422 when it is empty or not JSON."""
    kind = request.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
    if not (kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))):
        raise _invalid("a JSON body is required (Content-Type: application/json)", "model_attributes_type")
    try:
        declared = int(request.headers.get("content-length", ""))
    except ValueError:
        declared = -1
    if declared >= 0:
        buf = bytearray(declared)
        view, filled = memoryview(buf), 0
        async for chunk in request.stream():
            end = filled + len(chunk)
            if end > declared:
                raise _invalid("the body is longer than its Content-Length", "json_invalid")
            view[filled:end] = chunk
            filled = end
        view.release()
        if filled != declared:
            raise _invalid("the body is shorter than its Content-Length", "json_invalid")
        body: bytearray | bytes = buf
    else:
        body = b"".join([chunk async for chunk in request.stream()])
    if not body:
        raise _invalid("Field required")
    return body


def parse_body(model: type[M], raw: bytes | bytearray) -> M:
    """``raw`` parsed and validated as ``model`` in one pass (pydantic-core reads the JSON
    itself: one Python string per field, no intermediate dict); errors as FastAPI's 422."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        raise RequestValidationError(
            [dict(err, loc=("body", *err.get("loc", ()))) for err in e.errors(include_url=False)]) from None
