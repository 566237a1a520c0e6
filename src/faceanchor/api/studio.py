"""What the web studio needs beside the generation API.

* ``POST /v1/faces``: the faces found in a photo (box, 5 keypoints, detection score, quality
  report), largest first: the order ``face_index`` counts in, so a page can draw them and let
  the user pick one in a group photo.
* ``GET /v1/jobs``: the caller's jobs, newest first, with their parameters (images left out)
  and, once done, their images: the history a page shows after a reload.
* ``GET /v1/styles``: the style presets (name, prompt template, negative prompt).
* ``GET /docs``: Swagger UI from the files of the ``fastapi-offline`` package, served by this
  app (no CDN), so the docs work offline.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from importlib import resources
from typing import Annotated, Any, AsyncIterator, Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from faceanchor.api.deps import CurrentKey, ServiceDep, SettingsDep
from faceanchor.api.errors import ApiError, error_responses
from faceanchor.api.inputs import decode_image_ref
from faceanchor.api.jobs import base_url
from faceanchor.api.schemas import ImageOut, ImageRef
from faceanchor.imageio import ImageLimits, load_image
from faceanchor.service.results import public_result
from faceanchor.store.job_history import jobs_of_key
from faceanchor.types import METHOD_PATTERN, JobStatus

router = APIRouter(tags=["studio"])

#: Request fields holding images or vectors: never echoed back in a job listing.
_BULKY = {"face_image", "face_images", "pose_image", "face_crop", "face_embedding", "face_embeddings",
          "face_kps", "face_bbox", "face", "target", "images"}


# --------------------------------------------------------------------------- faces


class FacesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: ImageRef
    method: str | None = Field(None, pattern=METHOD_PATTERN, description="Analyse with the face pack this method uses (default instantid's).")


class FaceOut(BaseModel):
    index: int = Field(description="The face_index that selects this face.")
    bbox: list[float] = Field(description="x1, y1, x2, y2 in pixels of the photo.")
    kps: list[list[float]] = Field(description="5 keypoints (x, y): left eye, right eye, nose, mouth left, mouth right.")
    det_score: float
    quality: dict[str, Any] | None = None


class FacesOut(BaseModel):
    width: int
    height: int
    pack: str
    faces: list[FaceOut]


class _Analyzers:
    """One analyzer per pack, one analysis at a time per pack (dlib's detector keeps state)."""

    def __init__(self, settings: Any):
        self.settings = settings
        self._by_pack: dict[str, tuple[Any, threading.Lock]] = {}
        self._lock = threading.Lock()

    def detect(self, pack: str, image: Any) -> list[Any]:
        from faceanchor.face.analyzer import FaceAnalyzer

        with self._lock:
            if pack not in self._by_pack:
                self._by_pack[pack] = (FaceAnalyzer(self.settings, pack).prepare(), threading.Lock())
            analyzer, lock = self._by_pack[pack]
        import numpy as np

        with lock:
            return analyzer.get(np.asarray(image))


def _pack(service: Any, method: str | None) -> str:
    engine = service.engine
    if engine is not None and hasattr(engine, "pack_for"):
        return engine.pack_for(method or "instantid")
    return getattr(service.settings, "face_pack", "dlib") or "dlib"


@router.post("/v1/faces", response_model=FacesOut, responses=error_responses(400, 401, 403, 413, 415, 422),
             summary="The faces in a photo (boxes, keypoints, quality), largest first")
def detect_faces(body: FacesBody, request: Request, service: ServiceDep, settings: SettingsDep, _key: CurrentKey) -> FacesOut:
    if body.method is not None:
        from faceanchor.methods.registry import names

        if body.method not in names():
            raise ApiError(422, f"method: no method named {body.method!r}", "validation_error")
    data = decode_image_ref(body.image, "image", settings)
    image = load_image(data, ImageLimits.from_settings(settings), name="image").convert("RGB")
    state = request.app.state
    if getattr(state, "face_analyzers", None) is None:
        state.face_analyzers = _Analyzers(settings)
    pack = _pack(service, body.method)
    faces = state.face_analyzers.detect(pack, image)
    return FacesOut(width=image.width, height=image.height, pack=pack, faces=[
        FaceOut(index=i, bbox=[round(float(v), 2) for v in f.bbox], kps=[[round(float(x), 2), round(float(y), 2)] for x, y in f.kps],
                det_score=round(float(f.det_score), 4), quality=f.quality.to_dict() if f.quality is not None else None)
        for i, f in enumerate(faces)])


# --------------------------------------------------------------------------- jobs


class JobError(BaseModel):
    type: str
    message: str


class JobSummary(BaseModel):
    request_id: str
    app: str
    status: JobStatus
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    params: dict[str, Any] = Field(description="The request's fields, images and vectors left out.")
    images: list[ImageOut] = Field(default_factory=list)
    seed: int | None = None
    warnings: list[str] = Field(default_factory=list)
    error: JobError | None = None
    status_url: str
    response_url: str


class JobsOut(BaseModel):
    jobs: list[JobSummary]
    total: int


def _params(request: dict[str, Any]) -> dict[str, Any]:
    """The scalar fields of a stored job request (a character job keeps its generation fields under ``fields``)."""
    fields = dict(request.get("fields") or {}) if isinstance(request.get("fields"), dict) else dict(request)
    for k in ("character_id", "mode", "strength", "mask_source", "references"):
        if k in request and request[k] is not None:
            fields.setdefault(k, request[k])
    out = {}
    for k, v in fields.items():
        if k in _BULKY or k == "fields":
            continue
        if v is None or isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 10_000):
            out[k] = v
        elif isinstance(v, list) and all(isinstance(x, (str, int, float)) for x in v) and len(v) <= 16:
            out[k] = v
    return out


@router.get("/v1/jobs", response_model=JobsOut, responses=error_responses(401, 403, 422), summary="The caller's jobs, newest first")
def list_jobs(request: Request, service: ServiceDep, key: CurrentKey,
              limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
              app: Annotated[str | None, Query(max_length=64, description="Only this app (instantid, character/generate, ...).")] = None) -> JobsOut:
    from faceanchor.api.jobs import job_urls

    base = base_url(request)
    views, total = jobs_of_key(service.db, key.id, owner=key.owner, limit=limit, offset=offset, app=app)
    out = []
    for job in views:
        result = public_result(job.result, base) if job.status == JobStatus.COMPLETED and job.result else {}
        error = None
        if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) and job.error:
            error = JobError(type=job.error.get("type", "error"), message=job.error.get("message", ""))
        urls = job_urls(base, job.app, job.id)
        out.append(JobSummary(
            request_id=job.id, app=job.app, status=job.status, created_at=job.created_at, started_at=job.started_at,
            finished_at=job.finished_at, params=_params(job.request), images=[ImageOut(**i) for i in result.get("images", [])],
            seed=result.get("seed"), warnings=result.get("warnings", []), error=error,
            status_url=urls["status_url"], response_url=urls["response_url"]))
    return JobsOut(jobs=out, total=total)


# --------------------------------------------------------------------------- styles


class StyleOut(BaseModel):
    name: str
    prompt: str = Field(description="The template; {prompt} is replaced by the request's prompt.")
    negative: str


class StylesOut(BaseModel):
    styles: list[StyleOut]


@router.get("/v1/styles", response_model=StylesOut, summary="The style presets (no key needed)")
def list_styles() -> StylesOut:
    from faceanchor.styles.presets import load_styles

    return StylesOut(styles=[StyleOut(**s.to_dict()) for s in load_styles().values()])


# --------------------------------------------------------------------------- /docs offline


def install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` with their scripts and styles served from ``/docs/assets`` (package files)."""
    try:
        assets = resources.files("fastapi_offline") / "static"
    except ModuleNotFoundError:  # not installed: FastAPI's own page (CDN), better than none
        assets = None

    if assets is not None:
        app.mount("/docs/assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        if assets is None:
            return get_swagger_ui_html(openapi_url="openapi.json", title=f"{app.title} - API docs")
        # relative URLs: right behind any path prefix
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{app.title} - API docs",
                                   swagger_js_url="docs/assets/swagger-ui-bundle.js", swagger_css_url="docs/assets/swagger-ui.css",
                                   swagger_favicon_url="docs/assets/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    async def _redoc() -> HTMLResponse:
        if assets is None:
            return get_redoc_html(openapi_url="openapi.json", title=f"{app.title} - ReDoc")
        return get_redoc_html(openapi_url="openapi.json", title=f"{app.title} - ReDoc", redoc_js_url="docs/assets/redoc.standalone.js",
                              redoc_favicon_url="docs/assets/favicon.png", with_google_fonts=False)


# --------------------------------------------------------------------------- character jobs as server-sent events


@router.get("/queue/character/{op}/requests/{request_id}/status/stream", responses={
    200: {"description": "Server-sent events: `status` events with the status body, `: keep-alive` comments.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **error_responses(401, 403, 404, 422)}, response_class=StreamingResponse, summary="Status of a character request as server-sent events")
async def character_status_stream(op: Literal["id-photo", "generate", "edit"], request_id: Annotated[str, Path(max_length=64)],
                                  request: Request, service: ServiceDep, settings: SettingsDep, key: CurrentKey,
                                  logs: Annotated[bool, Query()] = False) -> StreamingResponse:
    def own() -> Any:
        from faceanchor.api.jobs import visible_job

        job = visible_job(service.get(request_id, with_logs=logs), key, f"character/{op}")
        if job is None:
            raise ApiError(404, f"no request {request_id} in character/{op}")
        return job

    first = await run_in_threadpool(own)
    return StreamingResponse(_events(first, request, service, settings.sse_keepalive_seconds, logs), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(job: Any, request: Request, service: Any, keepalive: float, logs: bool) -> AsyncIterator[str]:
    """The same events as the queue's stream (``faceanchor.api.queue``): a status event on every change."""
    from faceanchor.api.queue import _event

    base = base_url(request)
    last = None
    last_sent = time.monotonic()
    while True:
        sig = (job.status, json.dumps(job.progress, sort_keys=True), job.queue_position, len(job.logs))
        if sig != last:
            last = sig
            last_sent = time.monotonic()
            yield _event(job, base, logs)
        if job.status.finished:
            return
        if time.monotonic() - last_sent >= keepalive:
            last_sent = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(min(0.1, keepalive))
        if await request.is_disconnected():
            return
        job = await run_in_threadpool(service.get, job.id, with_logs=logs) or job
