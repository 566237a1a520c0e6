"""Shared by the synchronous and queue routes: checking a request, rendering a job."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse

from faceanchor.api.errors import ApiError
from faceanchor.api.inputs import resolve_images
from faceanchor.api.schemas import CancelOut, GenerateBody, JobStatusBody
from faceanchor.config import Settings
from faceanchor.errors import InvalidInputError
from faceanchor.service.results import public_result
from faceanchor.store.jobs import JobView
from faceanchor.types import JobStatus

#: A request's run time limit (query ``timeout``), at most the server's ``job_timeout_seconds``.
JobTimeout = Annotated[float | None, Query(gt=0, le=86400, description="Seconds the job may run (at most the server's job_timeout_seconds); past it the job is stopped and fails with error type timeout.")]

def app_methods() -> dict[str, tuple[str, ...]]:
    """The HTTP apps and the methods each serves (the first is the default), from the method registry."""
    from faceanchor.methods.registry import apps

    return apps()


def validation_error(message: str) -> ApiError:
    return ApiError(422, message, "validation_error")


def check_style(style: str | None) -> None:
    """An unknown style preset is a 422 at submit (naming the close ones), not a failed job later."""
    from faceanchor.styles.presets import get_style, style_names

    if style is None:
        return
    try:
        get_style(style)
    except InvalidInputError as e:
        raise validation_error(f"style: {e}; styles: {', '.join(style_names())}") from None


def check_spaces(spaces: list[str] | None) -> None:
    """Embedding spaces must be face packs this project knows (422 naming them, never a server path)."""
    from faceanchor.face.packs import PACK_NAMES

    unknown = [s for s in spaces or [] if s not in PACK_NAMES]
    if unknown:
        raise validation_error(f"spaces: unknown embedding space {unknown[0]!r}; valid spaces: {', '.join(PACK_NAMES)}")


def prepare_request(app: str, body: GenerateBody, settings: Settings) -> dict[str, Any]:
    """Check the request against this server's limits and resolve its images to bytes."""
    from faceanchor.methods.registry import get

    methods = app_methods()[app]
    method = body.method or methods[0]
    if method not in methods:
        raise validation_error(f"method: {method!r} is not served by /{app}; use one of {', '.join(methods)}")
    try:  # fields the method would ignore, a base it has no weights for: refused at submit, not after a queue wait
        m = get(method)
        m.check_fields(body.model_copy(update={"method": method}))
        m.family_for(body)
    except InvalidInputError as e:
        raise validation_error(str(e)) from None
    if len(body.prompt) > settings.max_prompt_chars or len(body.negative_prompt) > settings.max_prompt_chars:
        raise validation_error(f"prompt: at most {settings.max_prompt_chars} characters")
    if body.num_inference_steps is not None and body.num_inference_steps > settings.max_steps:
        raise validation_error(f"num_inference_steps: at most {settings.max_steps} on this server")
    check_style(body.style)
    if body.model_name is not None and body.model_name not in settings.api_model_names:
        raise InvalidInputError(f"model_name {body.model_name!r} is not offered by this server")
    if body.face_image is None and not body.face_images and body.face_embedding is None:
        raise validation_error("face_image: a face photo (or face_images / face_embedding) is required")
    # an unset identity_strength stays unset: its default is the method's (InstantID 0.8, InfiniteYou 1.0)
    data = body.model_dump(mode="json", exclude={"base64"} | ({"identity_strength"} - body.model_fields_set))
    data["method"] = method
    return resolve_images(data, settings)


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def job_urls(base: str, app: str, job_id: str) -> dict[str, str]:
    root = f"{base}/queue/{app}/requests/{job_id}"
    return {"status_url": f"{root}/status", "response_url": root, "cancel_url": f"{root}/cancel"}


def status_body(job: JobView, base: str, with_logs: bool = False) -> JobStatusBody:
    error = None
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) and job.error:
        error = {"type": job.error.get("type", "error"), "message": job.error.get("message", "")}
    progress = job.progress if job.status == JobStatus.IN_PROGRESS else None
    return JobStatusBody(
        request_id=job.id, status=job.status,
        queue_position=job.queue_position if job.status == JobStatus.IN_QUEUE else None,
        progress=progress, logs=job.logs if with_logs else None, error=error,
        response_url=job_urls(base, job.app, job.id)["response_url"], created_at=job.created_at,
        started_at=job.started_at, finished_at=job.finished_at, attempts=job.attempts,
    )


def raise_job_error(job: JobView) -> None:
    err = job.error or {}
    status = int(err.get("status", 500))
    raise ApiError(status, err.get("message", "the job failed"), err.get("type", "error"))


def result_body(job: JobView, base: str, signer: Any = None) -> dict[str, Any]:
    return dict(public_result(job.result or {}, base, signer), request_id=job.id, status=job.status.value)


def result_response(job: JobView, base: str, signer: Any = None) -> Any:
    """A queued job's result: 202 with its status while it runs, its error once failed."""
    if not job.status.finished:
        return JSONResponse(status_body(job, base).model_dump(mode="json", exclude_none=True), status_code=202)
    if job.status != JobStatus.COMPLETED:
        raise_job_error(job)
    return result_body(job, base, signer)


def visible_job(job: JobView | None, key: Any, app: str | None = None) -> JobView | None:
    """``job`` if ``key`` may see it (its owner's, or an admin key) and it is of ``app``; else ``None``."""
    if job is None or (app is not None and job.app != app):
        return None
    return job if key.can_see(job.owner, job.key_id) else None


def cancel_job(service: Any, request_id: str, where: str) -> CancelOut:
    """Ask the service to cancel; 404 when the job is unknown."""
    outcome = service.cancel(request_id)
    if outcome is None:
        raise ApiError(404, f"no request {request_id} in {where}")
    return CancelOut(status=outcome)
