"""Synchronous generation: ``POST /v1/{app}`` for every app of the method registry
(``/v1/instantid``, ``/v1/faceid``, and any method plug-in's app).

The request runs through the same durable queue as queued jobs (one worker per device keeps
the GPU to one job at a time); the connection waits for it. ``base64: false`` answers with the
image bytes (several samples: a JSON list of image links), ``true`` with JSON carrying base64
images, seeds and identity scores.

**Client gone = job cancelled.** While it waits, a sync request watches its connection; if the
client disconnects before the result, the job it submitted is cancelled (queued: at once;
running: between denoising steps, as ``POST …/cancel`` would) and nothing is sent. A sync
request that reused another request's job (same ``Idempotency-Key``) leaves that job alone, and
queued jobs (``/queue/…``) run to the end whether or not anyone is connected.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from faceanchor.api.deps import ServiceDep, SettingsDep, SubmittingKey
from faceanchor.api.errors import ErrorBody, error_responses
from faceanchor.api.jobs import JobTimeout, base_url, prepare_request, raise_job_error, result_body
from faceanchor.api.schemas import Base64Out, GenerateBody, ImageOut
from faceanchor.service.runtime import Service
from faceanchor.store.jobs import JobView
from faceanchor.types import JobStatus

_IMAGE_CONTENT = {"schema": {"type": "string", "format": "binary"}}
SYNC_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The image bytes (one sample, base64=false), a JSON list of image links (several samples), or JSON with base64 images (base64=true).",
        "content": {
            "image/png": _IMAGE_CONTENT, "image/jpeg": _IMAGE_CONTENT, "image/webp": _IMAGE_CONTENT,
            "application/json": {"schema": {"anyOf": [
                Base64Out.model_json_schema(),
                {"type": "array", "items": ImageOut.model_json_schema()},
            ]}},
        },
    },
    **error_responses(400, 401, 403, 409, 413, 415, 422, 429, 503, 504),
    500: {"model": ErrorBody, "description": "the engine failed (never for bad input)"},
}


class ClientGone(Exception):
    """The client of a sync request disconnected before its job finished."""


async def wait_finished(service: Service, job_id: str, request: Request | None = None) -> JobView:
    """The job once finished. With ``request``: :class:`ClientGone` as soon as its client disconnects."""
    delay = 0.01
    while True:
        job = await run_in_threadpool(service.get, job_id)
        if job is None:  # cannot happen for a job we just submitted; be explicit anyway
            raise RuntimeError(f"job {job_id} vanished")
        if job.status.finished:
            return job
        if request is not None and await request.is_disconnected():
            raise ClientGone(job_id)
        await asyncio.sleep(delay)
        delay = min(0.2, delay * 1.5)


async def wait_or_cancel(service: Service, job_id: str, created: bool, request: Request) -> JobView | None:
    """A sync request's wait: the finished job, or ``None`` when the client disconnected first
    (then the job is cancelled if this request created it)."""
    try:
        return await wait_finished(service, job_id, request)
    except ClientGone:
        if created:  # our own job, run for nobody now (another request's job keeps running)
            await run_in_threadpool(service.cancel, job_id)
        return None


#: What a sync request answers a client that has gone (nginx's "client closed request"; nobody reads it).
CLIENT_GONE = 499


async def _run_sync(app: str, body: GenerateBody, request: Request, service: Service, settings, key, idem: str | None,  # noqa: ANN001
                    timeout: float | None = None) -> Response:
    service.check_available(need_ready=True)
    prepared = await run_in_threadpool(prepare_request, app, body, settings)
    base = base_url(request)
    job, _created = await run_in_threadpool(
        lambda: service.submit(app, prepared, key=key, idempotency_key=idem,
                               start_timeout=settings.sync_timeout_seconds, base_url=base, timeout=timeout)
    )
    finished = await wait_or_cancel(service, job.id, _created, request)
    if finished is None:
        return Response(status_code=CLIENT_GONE)
    job = finished
    if job.status != JobStatus.COMPLETED:
        raise_job_error(job)
    result = result_body(job, base, service.signer)
    images = result["images"]
    headers = {"X-Request-Id": job.id, "X-Seed": str(result["seed"])}
    if body.base64:
        blobs = await run_in_threadpool(lambda: [service.files.get(img["file_id"]) or b"" for img in images])
        encoded = [base64.b64encode(b).decode() for b in blobs]
        out = Base64Out(
            request_id=job.id, image=encoded[0] if encoded else "", images=encoded,
            content_type=images[0]["content_type"] if images else "image/png", seed=result["seed"],
            seeds=result["seeds"], identity_scores=result["identity_scores"], timings=result["timings"],
            warnings=result.get("warnings", []),
        )
        return JSONResponse(out.model_dump(), headers=headers)
    if len(images) == 1:
        img = images[0]
        data = await run_in_threadpool(service.files.get, img["file_id"])
        if img["identity_score"] is not None:
            headers["X-Identity-Score"] = f"{img['identity_score']:.4f}"
        headers["X-Content-Type-Options"] = "nosniff"
        return Response(data, media_type=img["content_type"], headers=headers)
    return JSONResponse([ImageOut(**img).model_dump() for img in images], headers=headers)


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def sync_router() -> APIRouter:
    """One ``POST /v1/{app}`` route per app of the method registry (built with the app, not at import)."""
    from faceanchor.methods.registry import apps, get

    from faceanchor.api.segmind import SEGMIND_CODES, SegmindBody, SegmindRoute

    router = APIRouter(tags=["synchronous"])
    for app, names in apps().items():
        labels = ", ".join(get(n).label or n for n in names)
        segmind = app == "instantid"  # /v1/instantid is Segmind-shaped: its defaults, ranges and codes

        def route(app: str = app, body_type: type = SegmindBody if segmind else GenerateBody):  # noqa: ANN202 - binds app per route
            async def generate_sync(body: GenerateBody, request: Request, service: ServiceDep, settings: SettingsDep,
                                    key: SubmittingKey, idempotency_key: IdempotencyKey = None,
                                    timeout: JobTimeout = None) -> Response:
                return await _run_sync(app, body, request, service, settings, key, idempotency_key, timeout)

            generate_sync.__annotations__["body"] = body_type  # the Segmind shape on /v1/instantid
            generate_sync.__name__ = f"generate_{app.replace('-', '_')}"
            return generate_sync

        responses = SYNC_RESPONSES
        description = f"Methods: {', '.join(names)} (default {names[0]})."
        if segmind:
            responses = {200: SYNC_RESPONSES[200], **error_responses(*SEGMIND_CODES, 413),
                         500: {"model": ErrorBody, "description": "the engine failed (never for bad input)"},
                         406: {"model": ErrorBody, "description": "the key's image quota is exhausted (Segmind: insufficient credits)"}}
            description += " Segmind's request shape, defaults (10 steps, CFG 5, 0.8/0.8, seed -1) and error codes."
        router.add_api_route(f"/v1/{app}", route(), methods=["POST"], responses=responses, response_class=Response,
                             summary=f"Generate with {labels} and wait", description=description,
                             route_class_override=SegmindRoute if segmind else None)
    return router
