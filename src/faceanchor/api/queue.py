"""The queue: submit, status (and its SSE stream), result, cancel.

``POST /queue/{app}`` → ``request_id`` and the status / response / cancel URLs.
``GET /queue/{app}/requests/{id}/status`` → IN_QUEUE (``queue_position``), IN_PROGRESS
(``progress``; ``logs`` with ``?logs=1``), COMPLETED, FAILED or CANCELLED (``error``).
``GET …/status/stream`` → the same as server-sent events, with keep-alive comments.
``GET /queue/{app}/requests/{id}`` → the result (200), the job's error status (e.g. 422, 504),
or 202 with the status while it runs. ``PUT …/cancel`` → 202 CANCELLATION_REQUESTED or
ALREADY_COMPLETED. A job is visible only to the key that submitted it.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, AsyncIterator

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from faceanchor.api.deps import CurrentKey, MetricsDep, ServiceDep, SettingsDep, SubmittingKey
from faceanchor.api.errors import ApiError, ErrorBody, error_responses
from faceanchor.api.intake import json_body_openapi, parse_body, read_body
from faceanchor.api.jobs import JobTimeout, base_url, cancel_job, job_urls, prepare_request, result_response, status_body
from faceanchor.api.schemas import CancelOut, GenerateBody, GenerationOut, JobStatusBody, QueueSubmitted
from faceanchor.service.fetch import validate_url
from faceanchor.service.runtime import Service
from faceanchor.store.jobs import JobView

router = APIRouter(prefix="/queue", tags=["queue"])

AppName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="An app of GET /v1/methods (instantid, faceid, ...)")]
RequestId = Annotated[str, Path(max_length=64)]


def _check_app(service: Service, app: str) -> None:
    from faceanchor.api.jobs import app_methods

    served = app_methods()
    if app not in served or app not in service.runners:
        raise ApiError(404, f"no app named {app!r}; apps: {', '.join(sorted(served))}")


def _own_job(service: Service, app: str, request_id: str, key, with_logs: bool = False) -> JobView:  # noqa: ANN001
    from faceanchor.api.jobs import visible_job

    _check_app(service, app)
    job = visible_job(service.get(request_id, with_logs=with_logs), key, app)
    if job is None:
        raise ApiError(404, f"no request {request_id} in {app}")
    return job


@router.post("/{app}", response_model=QueueSubmitted, responses=error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503),
             summary="Queue a generation", openapi_extra=json_body_openapi(GenerateBody))
async def submit(
    app: AppName,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    key: SubmittingKey,
    webhook: Annotated[str | None, Query(max_length=2048, description="URL called (POST, signed) when the job finishes.")] = None,
    start_timeout: Annotated[float | None, Query(gt=0, le=86400, description="Seconds the job may wait to start; past it the job fails with 504.")] = None,
    timeout: JobTimeout = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> QueueSubmitted:
    base = base_url(request)
    held = [await read_body(request)]  # the raw body, held once while the submit waits for its place

    def intake() -> QueueSubmitted:  # in a thread, at most settings.intake_concurrency at once
        body = parse_body(GenerateBody, held.pop())  # JSON and schema in one pass, off the event loop
        _check_app(service, app)
        if webhook is not None:
            validate_url(webhook, allow_private=settings.allow_private_urls)
        prepared = prepare_request(app, body, settings)
        job, created = service.submit(app, prepared, key=key, idempotency_key=idempotency_key,
                                      webhook_url=webhook, start_timeout=start_timeout, base_url=base, timeout=timeout)
        if created:
            metrics.submitted.labels(app).inc()
        position = job if created else service.get(job.id)  # a new job carries its position already
        return QueueSubmitted(request_id=job.id, status=position.status if position else job.status,
                              queue_position=position.queue_position if position else None, **job_urls(base, app, job.id))

    return await request.app.state.lanes.run("intake", intake)


@router.get("/{app}/requests/{request_id}/status", response_model=JobStatusBody, response_model_exclude_none=True,
            responses=error_responses(401, 403, 404, 422), summary="Status of a queued request")
def status(app: AppName, request_id: RequestId, request: Request, service: ServiceDep, key: CurrentKey,
           logs: Annotated[bool, Query(description="Include log lines.")] = False) -> JobStatusBody:
    job = _own_job(service, app, request_id, key, with_logs=logs)
    return status_body(job, base_url(request), with_logs=logs)


def _event(job: JobView, base: str, logs: bool) -> str:
    data = status_body(job, base, with_logs=logs).model_dump(mode="json", exclude_none=True)
    return f"event: status\ndata: {json.dumps(data)}\n\n"


@router.get("/{app}/requests/{request_id}/status/stream", responses={
    200: {"description": "Server-sent events: `status` events with the status body, `: keep-alive` comments.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **error_responses(401, 403, 404, 422)}, response_class=StreamingResponse, summary="Status as server-sent events")
async def status_stream(app: AppName, request_id: RequestId, request: Request, service: ServiceDep, settings: SettingsDep,
                        key: CurrentKey, logs: Annotated[bool, Query()] = False) -> StreamingResponse:
    first = await run_in_threadpool(_own_job, service, app, request_id, key, logs)
    base = base_url(request)
    keepalive = settings.sse_keepalive_seconds

    async def events() -> AsyncIterator[str]:
        job = first
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
            job = await run_in_threadpool(service.get, request_id, with_logs=logs) or job

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{app}/requests/{request_id}", response_model=GenerationOut,
            responses={202: {"model": JobStatusBody, "description": "Not finished yet: the status."},
                       **error_responses(401, 403, 404, 409, 413, 415, 422, 503, 504),
                       500: {"model": ErrorBody, "description": "the engine failed (never for bad input)"}},
            summary="Result of a queued request")
def result(app: AppName, request_id: RequestId, request: Request, service: ServiceDep, key: CurrentKey):  # noqa: ANN201
    return result_response(_own_job(service, app, request_id, key), base_url(request), service.signer)


@router.put("/{app}/requests/{request_id}/cancel", status_code=202, response_model=CancelOut,
            responses=error_responses(401, 403, 404, 422), summary="Cancel a queued or running request")
def cancel(app: AppName, request_id: RequestId, service: ServiceDep, key: CurrentKey) -> CancelOut:
    _own_job(service, app, request_id, key)
    return cancel_job(service, request_id, app)
