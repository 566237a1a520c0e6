"""A Python client for faceanchor's HTTP API: :class:`Client` (sync) and :class:`AsyncClient`.

Both speak the same API through one *sans-IO* core: every call is described once as a
:class:`_Call` (method, path, body, how to parse the answer), and one generator,
:meth:`_Core.exchange`, decides retries and raises typed errors. The two clients only drive it,
one with ``httpx.Client`` and ``time.sleep``, the other with ``httpx.AsyncClient`` and
``asyncio.sleep``; nothing about the protocol is written twice.

.. code-block:: python

    from faceanchor.client import Client

    with Client("http://gpu-box:8000", key="fa_...") as fa:
        out = fa.generate(prompt="a portrait in a garden", face_image="me.jpg", seed=3)
        open("out.png", "wb").write(out.image)
        res = fa.subscribe("instantid", {"prompt": "...", "face_image": "me.jpg"},
                           on_queue_update=lambda s: print(s.status, s.progress))

Retries: only answers 429, 503 and 504 (honouring ``Retry-After``, in seconds or as an HTTP
date) and connection errors of calls that are safe to repeat (reads, cancel, delete, and every
POST that carries an ``Idempotency-Key``). Every submit and every synchronous generation carries
an ``Idempotency-Key``, generated once per logical call and reused on each of its retries, so a
retried submit never creates a second job. One exception: after the server's own 504
``deadline_exceeded`` (the keyed job failed *without starting*), the retry takes a fresh key,
since the old key would only replay that failure.

Errors are :class:`FaceAnchorClientError` subclasses carrying the status code and the server's
``{"error": {"type", "message"}}``; an HTTP error answer never surfaces as an httpx exception.

Only httpx and the standard library are needed (Pillow only when a PIL image is passed); the
client imports nothing of the server side.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import json
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping, Sequence, TypeVar, Union
from urllib.parse import urlsplit

import httpx

__all__ = [
    "AsyncClient", "AuthError", "Character", "CharacterHistory", "Client", "ConflictError", "Deleted",
    "FaceAnchorClientError", "FaceAnchorConnectionError", "GenerateResult", "Health", "HistoryEntry", "ImageInput",
    "JobError", "JobStatus", "LogLine", "MethodInfo", "Methods", "NotFinishedError", "NotFoundError", "OutputImage",
    "Progress", "QueueHandle", "RateLimitedError", "Result", "RetryPolicy", "ServerError", "UnavailableError",
    "ValidationError", "image_ref",
]

T = TypeVar("T")
FINISHED = ("COMPLETED", "FAILED", "CANCELLED")
RETRY_STATUSES = frozenset({429, 502, 503, 504})  # 502: the Segmind-shaped /v1/instantid while loading or full
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
#: Synchronous generations and character operations wait for the job (the server's own start
#: deadline is 300 s by default), and status streams stay open while a job runs.
DEFAULT_LONG_TIMEOUT = httpx.Timeout(900.0, connect=10.0)


# =========================================================================== errors


class FaceAnchorClientError(Exception):
    """An error answer of the server (or, with ``status_code`` None, no answer at all)."""

    def __init__(self, message: str, *, status_code: int | None = None, type: str = "error",  # noqa: A002
                 body: Any = None, headers: Mapping[str, str] | None = None, request_id: str | None = None):
        super().__init__(f"{status_code} {type}: {message}" if status_code is not None else message)
        self.status_code = status_code
        self.type = type
        self.message = message
        self.body = body
        self.headers = dict(headers or {})
        self.request_id = request_id


class AuthError(FaceAnchorClientError):
    """401 (no or unknown key) or 403 (revoked key)."""


class ValidationError(FaceAnchorClientError):
    """400, 413, 415 or 422: the request was refused as it stands (e.g. ``no_face``, a bad field)."""


class NotFoundError(FaceAnchorClientError):
    """404: no such app, request, character or file (for this key)."""


class ConflictError(FaceAnchorClientError):
    """409: e.g. an ``Idempotency-Key`` reused with a different request, or a cancelled job's result."""


class _RetryableError(FaceAnchorClientError):
    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class RateLimitedError(_RetryableError):
    """429, after the client's retries ran out; ``retry_after`` is the server's hint in seconds."""


class ServerError(FaceAnchorClientError):
    """A 5xx answer (500: the engine or the server failed)."""


class UnavailableError(ServerError, _RetryableError):
    """503 (loading, queue full) or 504 (deadline exceeded), after the client's retries ran out."""


class NotFinishedError(FaceAnchorClientError):
    """``result()`` of a job that is still queued or running (the server answered 202); ``status`` says where it is."""

    def __init__(self, status: "JobStatus"):
        super().__init__(f"request {status.request_id} is {status.status}", status_code=202, type="not_finished",
                         request_id=status.request_id)
        self.status = status


class FaceAnchorConnectionError(FaceAnchorClientError):
    """The server could not be reached (or the connection broke), after any retries."""


def _error_class(status: int) -> type[FaceAnchorClientError]:
    if status in (401, 403):
        return AuthError
    if status in (400, 413, 415, 422):
        return ValidationError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitedError
    if status in (502, 503, 504):
        return UnavailableError
    if status >= 500:
        return ServerError
    return FaceAnchorClientError


def error_from_response(resp: httpx.Response) -> FaceAnchorClientError:
    """The typed error of an error answer (the body must have been read)."""
    body: Any = None
    type_, message = "error", resp.reason_phrase or f"HTTP {resp.status_code}"
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip()
        if text:
            message = text[:500]
    else:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            type_ = str(err.get("type", type_))
            message = str(err.get("message", message))
    return _error_class(resp.status_code)(message, status_code=resp.status_code, type=type_, body=body,
                                          headers=resp.headers, request_id=resp.headers.get("x-request-id"))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# =========================================================================== results


def _pick(cls: type[T], data: Mapping[str, Any], **override: Any) -> T:
    """``cls(**data)`` keeping only the fields ``cls`` declares (newer servers may answer more)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kw = {k: v for k, v in data.items() if k in names}
    kw.update(override)
    return cls(**kw)


@dataclass(frozen=True)
class Progress:
    stage: str
    step: int = 0
    total: int = 0
    message: str = ""
    sample: int = 0
    fraction: float | None = None


@dataclass(frozen=True)
class LogLine:
    timestamp: float
    message: str


@dataclass(frozen=True)
class JobError:
    type: str
    message: str


@dataclass(frozen=True)
class JobStatus:
    """One status of a queued request: ``status`` is IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED or CANCELLED."""

    request_id: str
    status: str
    response_url: str = ""
    queue_position: int | None = None
    progress: Progress | None = None
    logs: list[LogLine] = field(default_factory=list)
    error: JobError | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JobStatus:
        return _pick(cls, d, progress=_pick(Progress, d["progress"]) if d.get("progress") else None,
                     logs=[_pick(LogLine, x) for x in d.get("logs") or []],
                     error=_pick(JobError, d["error"]) if d.get("error") else None)


@dataclass(frozen=True)
class QueueHandle:
    """What a submit answers: the request id and where to follow it."""

    app: str
    request_id: str
    status: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None


@dataclass(frozen=True)
class OutputImage:
    """One generated image as a queued result names it (``Client.file(image)`` fetches its bytes)."""

    url: str
    file_id: str
    content_type: str
    width: int
    height: int
    seed: int
    identity_score: float | None = None
    identity_reason: str | None = None


@dataclass(frozen=True)
class Result:
    """A finished generation (queued, or a character operation): images by URL, seeds, scores, timings."""

    request_id: str
    status: str
    images: list[OutputImage]
    seed: int
    seeds: list[int]
    identity_scores: list[float | None]
    timings: dict[str, float]
    params: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Result:
        return _pick(cls, d, images=[_pick(OutputImage, i) for i in d.get("images", [])])


@dataclass(frozen=True)
class GenerateResult:
    """A synchronous generation: the image bytes themselves, seeds, identity scores, timings, warnings."""

    request_id: str
    images: list[bytes]
    content_type: str
    seed: int
    seeds: list[int]
    identity_scores: list[float | None]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def image(self) -> bytes:
        """The first image."""
        return self.images[0]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GenerateResult:
        return _pick(cls, d, images=[base64.b64decode(s) for s in d.get("images", [])])


@dataclass(frozen=True)
class Character:
    id: str
    name: str
    created_at: float
    updated_at: float
    photos: list[str]
    spaces: list[str]
    files_url: str
    sheet_file: str | None = None
    views: list[dict[str, Any]] = field(default_factory=list)
    identities: list[dict[str, Any]] = field(default_factory=list)
    generations: int = 0


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    character_id: str
    kind: str
    created_at: float
    request: dict[str, Any] = field(default_factory=dict)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CharacterHistory:
    character_id: str
    entries: list[HistoryEntry]


@dataclass(frozen=True)
class Deleted:
    id: str
    deleted: bool
    files_deleted: int


@dataclass(frozen=True)
class Health:
    status: str
    workers: int = 0
    busy_workers: int = 0
    queue_depth: int = 0
    load_seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class MethodInfo:
    name: str
    app: str
    label: str = ""
    description: str = ""
    families: list[str] = field(default_factory=list)
    default_family: str = ""
    embedding_space: str = ""
    normalised_embedding: bool = False
    fields: list[str] = field(default_factory=list)
    method_fields: list[str] = field(default_factory=list)
    max_references: int = 1
    renders: bool = False
    models: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Methods:
    methods: list[MethodInfo]
    apps: dict[str, list[str]]


def _character(d: Mapping[str, Any]) -> Character:
    return _pick(Character, d)


# =========================================================================== image inputs

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Any]  # Any: a PIL image or a binary file object
_B64_TEXT = re.compile(r"^[A-Za-z0-9+/=\s]+$")
IMAGE_FIELDS = ("face_image", "face_images", "pose_image", "face_crop")


def image_ref(value: ImageInput) -> str:
    """What the API takes for an image: http(s) URLs and ``data:`` URIs as given, everything else base64.

    ``value`` is a local path (``str`` or ``Path``), bytes, a PIL image, a binary file object,
    a ``data:`` URI, an http(s) URL, or base64 text already. A string that is none of these
    raises ``FileNotFoundError`` (it is taken for a missing file), never sent as it is.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, os.PathLike):
        return base64.b64encode(Path(value).read_bytes()).decode()
    if isinstance(value, str):
        lowered = value[:10].lower()
        if lowered.startswith(("http://", "https://", "data:")):
            return value
        if len(value) < 4096 and os.path.isfile(value):
            return base64.b64encode(Path(value).read_bytes()).decode()
        if len(value) >= 64 and _B64_TEXT.match(value[:4096]):
            return value
        raise FileNotFoundError(f"image {value[:80]!r} is not a file, an http(s) URL, a data: URI or base64 text")
    if hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        import io

        buf = io.BytesIO()
        value.save(buf, "PNG")
        return base64.b64encode(buf.getvalue()).decode()
    if hasattr(value, "read"):
        data = value.read()
        if isinstance(data, str):
            raise TypeError("open image files in binary mode ('rb')")
        return base64.b64encode(data).decode()
    raise TypeError(f"an image is a path, bytes, a PIL image, a file object, a data: URI or a URL, not {type(value).__name__}")


def _with_image_refs(fields: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in fields.items() if v is not None}
    for name in IMAGE_FIELDS:
        if name in out:
            v = out[name]
            out[name] = [image_ref(x) for x in v] if isinstance(v, (list, tuple)) else image_ref(v)
    return out


def _character_images(face: ImageInput | Sequence[ImageInput] | None = None, target: ImageInput | None = None,
                      faces: Sequence[ImageInput] = ()) -> dict[str, Any]:
    if isinstance(face, (list, tuple)):
        face, faces = (face[0] if face else None), list(face[1:]) + list(faces)
    images: dict[str, Any] = {}
    if face is not None:
        images["face"] = image_ref(face)
    if faces:
        images["faces"] = [image_ref(f) for f in faces]
    if target is not None:
        images["target"] = image_ref(target)
    return images


# =========================================================================== the sans-IO core


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of 429/503/504 answers (and connection errors of calls safe to repeat).

    ``max_attempts`` counts the first try. Without ``Retry-After`` the wait is
    ``backoff * 2**(n-1)`` capped at ``max_backoff`` (with up to 25 % jitter); a ``Retry-After``
    is honoured as given, up to ``max_retry_after`` (a longer one is not waited for: the error is
    raised with it).
    """

    max_attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0
    jitter: bool = True
    statuses: frozenset[int] = RETRY_STATUSES

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds before attempt ``attempt + 1``, or None when no retry is left."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        d = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return d * (0.75 + random.random() * 0.25) if self.jitter else d


@dataclass
class _Call:
    """One API call, described once for both clients."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Any]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False  # safe to repeat after a connection error
    long: bool = False  # waits for a job: the long timeout
    stream: bool = False  # the answer is consumed as a stream (status/stream)
    accept: frozenset[int] = frozenset()  # error statuses that are answers here, parsed, not raised

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


_SEND = "send"
_SLEEP = "sleep"


class _Core:
    """Building requests, parsing answers and deciding retries: shared by both clients."""

    def __init__(self, base_url: str, key: str | None, retry: RetryPolicy | None, timeout: Any, long_timeout: Any):
        if key is None:
            key = os.environ.get("FACEANCHOR_KEY") or os.environ.get("FACEANCHOR_API_KEY")
        self.base_url = base_url.rstrip("/")
        self.key = key
        self.retry = retry or RetryPolicy()
        self.timeout = httpx.Timeout(timeout) if not isinstance(timeout, httpx.Timeout) else timeout
        self.long_timeout = httpx.Timeout(long_timeout) if not isinstance(long_timeout, httpx.Timeout) else long_timeout

    def http_kwargs(self) -> dict[str, Any]:
        headers = {"user-agent": "faceanchor-client/0.1", "accept": "application/json"}
        if self.key:
            headers["x-api-key"] = self.key
        return {"base_url": self.base_url, "headers": headers, "timeout": self.timeout, "follow_redirects": False}

    def request_kwargs(self, call: _Call) -> dict[str, Any]:
        kw: dict[str, Any] = {"params": call.params, "headers": call.headers}
        if call.json is not None:
            kw["json"] = call.json
        if call.long or call.stream:
            kw["timeout"] = self.long_timeout
        return kw

    def exchange(self, call: _Call) -> Generator[tuple[str, Any], Any, Any]:
        """The retry loop: yields ``("send", call)`` (sent back: the response or the transport
        exception) and ``("sleep", seconds)``; returns the parsed answer or raises a typed error."""
        attempt = 0
        while True:
            attempt += 1
            outcome = yield _SEND, call
            if isinstance(outcome, httpx.TransportError):
                delay = self.retry.delay(attempt, None) if call.idempotent else None
                if delay is None:
                    raise FaceAnchorConnectionError(f"{call.method} {call.path}: {type(outcome).__name__}: {outcome}") from outcome
                yield _SLEEP, delay
                continue
            resp: httpx.Response = outcome
            if resp.is_success or resp.status_code in call.accept:
                return call.parse(resp)
            error = error_from_response(resp)
            delay = None
            if resp.status_code in self.retry.statuses:
                delay = self.retry.delay(attempt, parse_retry_after(resp.headers.get("retry-after")))
            if delay is None:
                raise error
            if resp.status_code == 504 and error.type == "deadline_exceeded" and call.idempotency_key:
                # the keyed job failed before it started: the same key would replay that failure
                call.headers["Idempotency-Key"] = new_idempotency_key()
            yield _SLEEP, delay

    # ------------------------------------------------------------------ calls
    @staticmethod
    def _json(parse: Callable[[Any], T]) -> Callable[[httpx.Response], T]:
        return lambda r: parse(r.json())

    @staticmethod
    def _bytes(r: httpx.Response) -> bytes:
        return r.content

    def generate(self, app: str, fields: Mapping[str, Any], idempotency_key: str | None) -> _Call:
        body = _with_image_refs(fields)
        body["base64"] = True
        return _Call("POST", f"/v1/{app}", self._json(GenerateResult.from_json), json=body, long=True, idempotent=True,
                     headers={"Idempotency-Key": idempotency_key or new_idempotency_key()})

    def submit(self, app: str, fields: Mapping[str, Any], idempotency_key: str | None, webhook: str | None,
               start_timeout: float | None) -> _Call:
        params = {k: v for k, v in (("webhook", webhook), ("start_timeout", start_timeout)) if v is not None}
        return _Call("POST", f"/queue/{app}", self._json(lambda d: _pick(QueueHandle, d, app=app)), json=_with_image_refs(fields),
                     params=params or None, idempotent=True, headers={"Idempotency-Key": idempotency_key or new_idempotency_key()})

    @staticmethod
    def _request_path(app: str, request_id: str) -> str:
        return f"/queue/{app}/requests/{request_id}"

    def status(self, app: str, request_id: str, with_logs: bool) -> _Call:
        return _Call("GET", self._request_path(app, request_id) + "/status", self._json(JobStatus.from_json),
                     params={"logs": "1"} if with_logs else None, idempotent=True)

    def stream(self, app: str, request_id: str, with_logs: bool) -> _Call:
        return _Call("GET", self._request_path(app, request_id) + "/status/stream", lambda r: r,
                     params={"logs": "1"} if with_logs else None, idempotent=True, stream=True,
                     headers={"accept": "text/event-stream"})

    def result(self, app: str, request_id: str) -> _Call:
        def parse(r: httpx.Response) -> Result:
            if r.status_code == 202:
                raise NotFinishedError(JobStatus.from_json(r.json()))
            return Result.from_json(r.json())

        return _Call("GET", self._request_path(app, request_id), parse, idempotent=True)

    def cancel(self, app: str, request_id: str) -> _Call:
        return _Call("PUT", self._request_path(app, request_id) + "/cancel", self._json(lambda d: str(d["status"])), idempotent=True)

    def create_character(self, name: str, photos: ImageInput | Sequence[ImageInput], spaces: Sequence[str] | None,
                         face_index: int | None) -> _Call:
        body: dict[str, Any] = {"name": name, "images": _character_images(photos)}
        if spaces is not None:
            body["spaces"] = list(spaces)
        if face_index is not None:
            body["face_index"] = face_index
        return _Call("POST", "/v1/characters", self._json(_character), json=body)

    def list_characters(self, limit: int, offset: int) -> _Call:
        return _Call("GET", "/v1/characters", self._json(lambda d: [_character(c) for c in d["characters"]]),
                     params={"limit": limit, "offset": offset}, idempotent=True)

    def get_character(self, character_id: str) -> _Call:
        return _Call("GET", f"/v1/characters/{character_id}", self._json(_character), idempotent=True)

    def delete_character(self, character_id: str) -> _Call:
        return _Call("DELETE", f"/v1/characters/{character_id}", self._json(lambda d: _pick(Deleted, d)), idempotent=True)

    def character_history(self, character_id: str, limit: int, offset: int) -> _Call:
        parse = self._json(lambda d: CharacterHistory(d["character_id"], [_pick(HistoryEntry, e) for e in d["entries"]]))
        return _Call("GET", f"/v1/characters/{character_id}/history", parse, params={"limit": limit, "offset": offset}, idempotent=True)

    def character_file(self, character_id: str, file_id: str) -> _Call:
        return _Call("GET", f"/v1/characters/{character_id}/files/{file_id}", self._bytes, idempotent=True)

    def character_op(self, op: str, character_id: str | None, face: ImageInput | None, target: ImageInput | None,
                     fields: Mapping[str, Any], idempotency_key: str | None, queued: bool) -> _Call:
        """``POST /v1/character/{op}`` (waits) or ``/queue/character/{op}``: the character or a face photo, plus fields."""
        body = _with_image_refs(fields)
        if character_id is not None:
            body["character_id"] = character_id
        images = _character_images(face, target)
        if images:
            body["images"] = images
        headers = {"Idempotency-Key": idempotency_key or new_idempotency_key()}
        if queued:
            app = f"character/{op}"
            return _Call("POST", f"/queue/{app}", self._json(lambda d: _pick(QueueHandle, d, app=app)), json=body,
                         idempotent=True, headers=headers)
        return _Call("POST", f"/v1/character/{op}", self._json(Result.from_json), json=body, long=True, idempotent=True, headers=headers)

    def file(self, ref: str | OutputImage) -> _Call:
        """A generated image by file id, by its URL on this server, or by the :class:`OutputImage` naming it."""
        if isinstance(ref, OutputImage):
            ref = ref.url
        if ref.startswith(("http://", "https://")):
            url, base = urlsplit(ref), urlsplit(self.base_url + "/")
            if (url.scheme, url.netloc) != (base.scheme, base.netloc):
                # the key is sent to this server only
                raise ValueError(f"{ref} is not on this server ({self.base_url}); fetch it yourself")
            return _Call("GET", ref, self._bytes, idempotent=True)
        return _Call("GET", f"/files/{ref}", self._bytes, idempotent=True)

    def faces(self, image: ImageInput, method: str | None) -> _Call:
        body: dict[str, Any] = {"image": image_ref(image)}
        if method is not None:
            body["method"] = method
        return _Call("POST", "/v1/faces", self._json(dict), json=body, idempotent=True)

    def methods(self) -> _Call:
        def parse(d: Mapping[str, Any]) -> Methods:
            return Methods([_pick(MethodInfo, m) for m in d["methods"]], {k: list(v) for k, v in d["apps"].items()})

        return _Call("GET", "/v1/methods", self._json(parse), idempotent=True)

    def health(self) -> _Call:
        # 503 is how a loading server answers /health: a Health, not an error (and not retried)
        return _Call("GET", "/health", self._json(lambda d: _pick(Health, d)), idempotent=True, accept=frozenset({503}))


def new_idempotency_key() -> str:
    return f"fa-{uuid.uuid4().hex}"


class _SSEDecoder:
    """Server-sent events, line by line: ``feed(line)`` returns a finished ``(event, data)`` or None."""

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        line = line.rstrip("\r\n")
        if not line:
            if not self.data:
                self.event = ""
                return None
            out = (self.event or "message", "\n".join(self.data))
            self.event, self.data = "", []
            return out
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None

    @staticmethod
    def status(event: tuple[str, str] | None) -> JobStatus | None:
        if event is None or event[0] != "status":
            return None
        return JobStatus.from_json(json.loads(event[1]))


class _Follow:
    """subscribe()'s bookkeeping: which statuses are new (to report) and when to stop."""

    def __init__(self, on_queue_update: Callable[[JobStatus], Any] | None):
        self.on_queue_update = on_queue_update
        self.last: JobStatus | None = None

    def new(self, status: JobStatus) -> bool:
        """True when ``status`` differs from the last one reported (it is then the last)."""
        sig = (status.status, status.queue_position, status.progress, len(status.logs))
        if self.last is not None and sig == (self.last.status, self.last.queue_position, self.last.progress, len(self.last.logs)):
            return False
        self.last = status
        return True

    @property
    def finished(self) -> bool:
        return self.last is not None and self.last.finished


# =========================================================================== the sync client


class Client:
    """The synchronous client. ``key`` defaults to ``$FACEANCHOR_KEY``; ``timeout`` is per request
    (float seconds or ``httpx.Timeout``); ``long_timeout`` for calls that wait for a job."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", key: str | None = None, *, retry: RetryPolicy | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, long_timeout: float | httpx.Timeout = DEFAULT_LONG_TIMEOUT,
                 poll_interval: float = 0.5, transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep):
        self._core = _Core(base_url, key, retry, timeout, long_timeout)
        self._http = httpx.Client(transport=transport, **self._core.http_kwargs())
        self._sleep = sleep
        self.poll_interval = poll_interval

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response | httpx.TransportError:
        try:
            if call.stream:
                req = self._http.build_request(call.method, call.path, **self._core.request_kwargs(call))
                resp = self._http.send(req, stream=True)
                if not resp.is_success:
                    resp.read()
                    resp.close()
                return resp
            resp = self._http.request(call.method, call.path, **self._core.request_kwargs(call))
            return resp
        except httpx.TransportError as e:
            return e

    def _run(self, call: _Call) -> Any:
        gen = self._core.exchange(call)
        action = next(gen)
        while True:
            try:
                kind, arg = action
                if kind == _SEND:
                    action = gen.send(self._send(arg))
                else:
                    self._sleep(arg)
                    action = gen.send(None)
            except StopIteration as done:
                return done.value

    # ------------------------------------------------------------------ generation
    def generate(self, app: str = "instantid", *, idempotency_key: str | None = None, **fields: Any) -> GenerateResult:
        """``POST /v1/{app}`` and wait: the images as bytes. Image fields take paths, bytes, PIL images, URLs."""
        return self._run(self._core.generate(app, fields, idempotency_key))

    def submit(self, app: str, arguments: Mapping[str, Any], *, webhook: str | None = None, start_timeout: float | None = None,
               idempotency_key: str | None = None) -> QueueHandle:
        """``POST /queue/{app}`` (``app`` may be ``character/generate`` etc. too)."""
        return self._run(self._core.submit(app, arguments, idempotency_key, webhook, start_timeout))

    def status(self, app: str, request_id: str, *, with_logs: bool = False) -> JobStatus:
        return self._run(self._core.status(app, request_id, with_logs))

    def result(self, app: str, request_id: str) -> Result:
        """The result; :class:`NotFinishedError` while it runs, the job's typed error when it failed."""
        return self._run(self._core.result(app, request_id))

    def cancel(self, app: str, request_id: str) -> str:
        """``CANCELLATION_REQUESTED`` or ``ALREADY_COMPLETED``."""
        return self._run(self._core.cancel(app, request_id))

    def stream(self, app: str, request_id: str, *, with_logs: bool = False) -> Iterator[JobStatus]:
        """The status as the server streams it (SSE), up to and including the final status."""
        resp: httpx.Response = self._run(self._core.stream(app, request_id, with_logs))
        decoder = _SSEDecoder()
        try:
            for line in resp.iter_lines():
                status = decoder.status(decoder.feed(line))
                if status is not None:
                    yield status
                    if status.finished:
                        return
        except httpx.TransportError as e:
            raise FaceAnchorConnectionError(f"the status stream of {request_id} broke: {e}") from e
        finally:
            resp.close()

    def subscribe(self, app: str, arguments: Mapping[str, Any], *, on_queue_update: Callable[[JobStatus], Any] | None = None,
                  with_logs: bool = False, on_enqueue: Callable[[str], Any] | None = None, webhook: str | None = None,
                  start_timeout: float | None = None) -> Result:
        """fal's ``subscribe``: submit, report each status to ``on_queue_update``, return the result.

        The status comes from the SSE stream; where there is none (``character/*`` apps) or it
        breaks, the status is polled every ``poll_interval`` seconds.
        """
        handle = self.submit(app, arguments, webhook=webhook, start_timeout=start_timeout)
        if on_enqueue is not None:
            on_enqueue(handle.request_id)
        follow = _Follow(on_queue_update)
        try:
            for status in self.stream(app, handle.request_id, with_logs=with_logs):
                self._report(follow, status)
        except (NotFoundError, FaceAnchorConnectionError):
            pass  # no stream for this app, or it broke: poll
        while not follow.finished:
            self._report(follow, self.status(app, handle.request_id, with_logs=with_logs))
            if not follow.finished:
                self._sleep(self.poll_interval)
        return self.result(app, handle.request_id)

    @staticmethod
    def _report(follow: _Follow, status: JobStatus) -> None:
        if follow.new(status) and follow.on_queue_update is not None:
            follow.on_queue_update(status)

    # ------------------------------------------------------------------ characters
    def create_character(self, name: str, photos: ImageInput | Sequence[ImageInput], *, spaces: Sequence[str] | None = None,
                         face_index: int | None = None) -> Character:
        """A character from one face photo or several (paths, bytes, PIL images, URLs)."""
        return self._run(self._core.create_character(name, photos, spaces, face_index))

    def list_characters(self, *, limit: int = 100, offset: int = 0) -> list[Character]:
        return self._run(self._core.list_characters(limit, offset))

    def get_character(self, character_id: str) -> Character:
        return self._run(self._core.get_character(character_id))

    def delete_character(self, character_id: str) -> Deleted:
        return self._run(self._core.delete_character(character_id))

    def character_history(self, character_id: str, *, limit: int = 100, offset: int = 0) -> CharacterHistory:
        return self._run(self._core.character_history(character_id, limit, offset))

    def character_file(self, character_id: str, file_id: str) -> bytes:
        """A photo, the sheet, a view or an output of the character."""
        return self._run(self._core.character_file(character_id, file_id))

    def id_photo(self, character_id: str | None = None, *, face: ImageInput | None = None, idempotency_key: str | None = None,
                 **fields: Any) -> Result:
        """The 4-in-1 ID photo (images: sheet, then the views) of a character or of a face photo."""
        return self._run(self._core.character_op("id-photo", character_id, face, None, fields, idempotency_key, False))

    def character_generate(self, prompt: str, character_id: str | None = None, *, face: ImageInput | None = None,
                           idempotency_key: str | None = None, **fields: Any) -> Result:
        """Generate with a character's stored identity (recorded in its history) or a face photo."""
        return self._run(self._core.character_op("generate", character_id, face, None, dict(fields, prompt=prompt),
                                                 idempotency_key, False))

    def edit(self, prompt: str, target: ImageInput, character_id: str | None = None, *, face: ImageInput | None = None,
             mode: str = "background", idempotency_key: str | None = None, **fields: Any) -> Result:
        """Edit ``target`` keeping the character's face (``mode="background"``) or re-rendering it (``"face"``)."""
        return self._run(self._core.character_op("edit", character_id, face, target, dict(fields, prompt=prompt, mode=mode),
                                                 idempotency_key, False))

    def submit_character(self, op: str, character_id: str | None = None, *, face: ImageInput | None = None,
                         target: ImageInput | None = None, idempotency_key: str | None = None, **fields: Any) -> QueueHandle:
        """Queue a character operation (``id-photo``, ``generate``, ``edit``); follow it with ``status/result`` on ``handle.app``."""
        return self._run(self._core.character_op(op, character_id, face, target, fields, idempotency_key, True))

    # ------------------------------------------------------------------ files and system
    def file(self, ref: str | OutputImage) -> bytes:
        """A generated image's bytes, by file id, URL on this server or :class:`OutputImage`."""
        return self._run(self._core.file(ref))

    def faces(self, image: ImageInput, *, method: str | None = None) -> dict[str, Any]:
        """The faces of a photo (``POST /v1/faces``): boxes, keypoints, quality, largest first."""
        return self._run(self._core.faces(image, method))

    def methods(self) -> Methods:
        return self._run(self._core.methods())

    def health(self) -> Health:
        return self._run(self._core.health())


# =========================================================================== the async client


class AsyncClient:
    """The asynchronous client: the same calls as :class:`Client`, awaited."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", key: str | None = None, *, retry: RetryPolicy | None = None,
                 timeout: float | httpx.Timeout = DEFAULT_TIMEOUT, long_timeout: float | httpx.Timeout = DEFAULT_LONG_TIMEOUT,
                 poll_interval: float = 0.5, transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self._core = _Core(base_url, key, retry, timeout, long_timeout)
        self._http = httpx.AsyncClient(transport=transport, **self._core.http_kwargs())
        self._sleep = sleep
        self.poll_interval = poll_interval

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response | httpx.TransportError:
        try:
            if call.stream:
                req = self._http.build_request(call.method, call.path, **self._core.request_kwargs(call))
                resp = await self._http.send(req, stream=True)
                if not resp.is_success:
                    await resp.aread()
                    await resp.aclose()
                return resp
            return await self._http.request(call.method, call.path, **self._core.request_kwargs(call))
        except httpx.TransportError as e:
            return e

    async def _run(self, call: _Call) -> Any:
        gen = self._core.exchange(call)
        action = next(gen)
        while True:
            try:
                kind, arg = action
                if kind == _SEND:
                    action = gen.send(await self._send(arg))
                else:
                    await self._sleep(arg)
                    action = gen.send(None)
            except StopIteration as done:
                return done.value

    # ------------------------------------------------------------------ generation
    async def generate(self, app: str = "instantid", *, idempotency_key: str | None = None, **fields: Any) -> GenerateResult:
        return await self._run(self._core.generate(app, fields, idempotency_key))

    async def submit(self, app: str, arguments: Mapping[str, Any], *, webhook: str | None = None,
                     start_timeout: float | None = None, idempotency_key: str | None = None) -> QueueHandle:
        return await self._run(self._core.submit(app, arguments, idempotency_key, webhook, start_timeout))

    async def status(self, app: str, request_id: str, *, with_logs: bool = False) -> JobStatus:
        return await self._run(self._core.status(app, request_id, with_logs))

    async def result(self, app: str, request_id: str) -> Result:
        return await self._run(self._core.result(app, request_id))

    async def cancel(self, app: str, request_id: str) -> str:
        return await self._run(self._core.cancel(app, request_id))

    async def stream(self, app: str, request_id: str, *, with_logs: bool = False) -> AsyncIterator[JobStatus]:
        resp: httpx.Response = await self._run(self._core.stream(app, request_id, with_logs))
        decoder = _SSEDecoder()
        try:
            async for line in resp.aiter_lines():
                status = decoder.status(decoder.feed(line))
                if status is not None:
                    yield status
                    if status.finished:
                        return
        except httpx.TransportError as e:
            raise FaceAnchorConnectionError(f"the status stream of {request_id} broke: {e}") from e
        finally:
            await resp.aclose()

    async def subscribe(self, app: str, arguments: Mapping[str, Any], *,
                        on_queue_update: Callable[[JobStatus], Any] | None = None, with_logs: bool = False,
                        on_enqueue: Callable[[str], Any] | None = None, webhook: str | None = None,
                        start_timeout: float | None = None) -> Result:
        """As :meth:`Client.subscribe`; ``on_queue_update`` may be a plain function or a coroutine function."""
        handle = await self.submit(app, arguments, webhook=webhook, start_timeout=start_timeout)
        if on_enqueue is not None:
            await _maybe_await(on_enqueue(handle.request_id))
        follow = _Follow(on_queue_update)
        try:
            async for status in self.stream(app, handle.request_id, with_logs=with_logs):
                await self._report(follow, status)
        except (NotFoundError, FaceAnchorConnectionError):
            pass
        while not follow.finished:
            await self._report(follow, await self.status(app, handle.request_id, with_logs=with_logs))
            if not follow.finished:
                await self._sleep(self.poll_interval)
        return await self.result(app, handle.request_id)

    @staticmethod
    async def _report(follow: _Follow, status: JobStatus) -> None:
        if follow.new(status) and follow.on_queue_update is not None:
            await _maybe_await(follow.on_queue_update(status))

    # ------------------------------------------------------------------ characters
    async def create_character(self, name: str, photos: ImageInput | Sequence[ImageInput], *,
                               spaces: Sequence[str] | None = None, face_index: int | None = None) -> Character:
        return await self._run(self._core.create_character(name, photos, spaces, face_index))

    async def list_characters(self, *, limit: int = 100, offset: int = 0) -> list[Character]:
        return await self._run(self._core.list_characters(limit, offset))

    async def get_character(self, character_id: str) -> Character:
        return await self._run(self._core.get_character(character_id))

    async def delete_character(self, character_id: str) -> Deleted:
        return await self._run(self._core.delete_character(character_id))

    async def character_history(self, character_id: str, *, limit: int = 100, offset: int = 0) -> CharacterHistory:
        return await self._run(self._core.character_history(character_id, limit, offset))

    async def character_file(self, character_id: str, file_id: str) -> bytes:
        return await self._run(self._core.character_file(character_id, file_id))

    async def id_photo(self, character_id: str | None = None, *, face: ImageInput | None = None,
                       idempotency_key: str | None = None, **fields: Any) -> Result:
        return await self._run(self._core.character_op("id-photo", character_id, face, None, fields, idempotency_key, False))

    async def character_generate(self, prompt: str, character_id: str | None = None, *, face: ImageInput | None = None,
                                 idempotency_key: str | None = None, **fields: Any) -> Result:
        return await self._run(self._core.character_op("generate", character_id, face, None, dict(fields, prompt=prompt),
                                                       idempotency_key, False))

    async def edit(self, prompt: str, target: ImageInput, character_id: str | None = None, *, face: ImageInput | None = None,
                   mode: str = "background", idempotency_key: str | None = None, **fields: Any) -> Result:
        return await self._run(self._core.character_op("edit", character_id, face, target, dict(fields, prompt=prompt, mode=mode),
                                                       idempotency_key, False))

    async def submit_character(self, op: str, character_id: str | None = None, *, face: ImageInput | None = None,
                               target: ImageInput | None = None, idempotency_key: str | None = None, **fields: Any) -> QueueHandle:
        return await self._run(self._core.character_op(op, character_id, face, target, fields, idempotency_key, True))

    # ------------------------------------------------------------------ files and system
    async def file(self, ref: str | OutputImage) -> bytes:
        return await self._run(self._core.file(ref))

    async def faces(self, image: ImageInput, *, method: str | None = None) -> dict[str, Any]:
        """The faces of a photo (``POST /v1/faces``): boxes, keypoints, quality, largest first."""
        return await self._run(self._core.faces(image, method))

    async def methods(self) -> Methods:
        return await self._run(self._core.methods())

    async def health(self) -> Health:
        return await self._run(self._core.health())


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value
