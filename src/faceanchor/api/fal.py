"""The fal shape: ``fal-ai/instantid/lcm`` and ``fal-ai/instantid`` with fal's input body,
defaults and output.

Input (fal's API page, ``../shared/seeds/002_…``): ``face_image_url`` and ``prompt`` required;
``style`` "Headshot", ``negative_prompt`` "", ``num_inference_steps`` 5, ``guidance_scale`` 1.5,
``controlnet_selection`` one of pose/canny/depth (one string, default "canny"),
``controlnet_conditioning_scale`` 0.4, ``ip_adapter_scale`` 0.7,
``identity_controlnet_conditioning_scale`` 0.7, ``enhance_face_region`` true, ``seed``,
``model_name``. Output: ``{"image": {"url", "width", "height", "content_type"}, "seed"}``; the
URL is a signed link (``?expires=&sig=``) so a browser can load it without the key.

The fields map onto the common request: ``face_image_url`` → ``face_image``,
``ip_adapter_scale`` → ``adapter_strength``, ``identity_controlnet_conditioning_scale`` →
``identity_strength``, ``controlnet_selection`` → a one-element list, no seed → -1 (random).
``/lcm`` runs the LCM-LoRA scheduler. fal's page for plain ``fal-ai/instantid`` is not in the
seeds; that route takes the same body with the official demo's 30 steps / guidance 5 when
they are not given (the other defaults as above).

Routes: ``POST /fal-ai/instantid[/lcm]`` waits and answers the output (like ``fal.run``);
``POST /queue/fal-ai/instantid[/lcm]`` queues (like ``queue.fal.run``) and answers the request
id with ``status_url`` / ``response_url`` / ``cancel_url`` under
``/queue/fal-ai/instantid/requests/{id}``, whose result is the same output.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from faceanchor.api.deps import CurrentKey, ServiceDep, SettingsDep, SubmittingKey
from faceanchor.api.errors import ApiError, error_responses
from faceanchor.api.jobs import base_url, cancel_job, prepare_request, raise_job_error, result_body, status_body, visible_job
from faceanchor.api.schemas import CancelOut, GenerateBody, ImageRef, JobStatusBody
from faceanchor.types import JobStatus

router = APIRouter(tags=["fal"])

#: fal's documented defaults of ``fal-ai/instantid/lcm`` (asserted one by one in tests/api/test_hosted_shapes.py).
FAL_LCM_DEFAULTS: dict[str, Any] = {
    "style": "Headshot", "negative_prompt": "", "num_inference_steps": 5, "guidance_scale": 1.5,
    "controlnet_selection": "canny", "controlnet_conditioning_scale": 0.4, "ip_adapter_scale": 0.7,
    "identity_controlnet_conditioning_scale": 0.7, "enhance_face_region": True,
}
#: The plain route's steps and guidance when not given (the official demo's; fal's page is not a seed).
FAL_PLAIN_STEPS, FAL_PLAIN_GUIDANCE = 30, 5.0
APP = "instantid"
VARIANTS = ("instantid", "instantid/lcm")


class FalInstantIdInput(BaseModel):
    """fal's input body, field for field."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "face_image_url": "https://example.com/face.jpg", "prompt": "man", "style": "Headshot", "seed": 42}]})

    face_image_url: ImageRef = Field(description="The image of the person (URL or data: URI).")
    prompt: str = Field(max_length=10_000)
    style: str = Field("Headshot")
    negative_prompt: str = Field("", max_length=10_000)
    num_inference_steps: int | None = Field(None, ge=1, le=100, description="Default 5 (lcm; plain: 30).")
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0, description="Default 1.5 (lcm; plain: 5).")
    controlnet_selection: Literal["pose", "canny", "depth"] | None = Field("canny", description="One extra ControlNet.")
    controlnet_conditioning_scale: float = Field(0.4, ge=0.0, le=2.0)
    ip_adapter_scale: float = Field(0.7, ge=0.0, le=2.0)
    identity_controlnet_conditioning_scale: float = Field(0.7, ge=0.0, le=2.0)
    enhance_face_region: bool = True
    seed: int | None = Field(None, ge=-1, le=2**63 - 1)
    model_name: str | None = None


class FalImage(BaseModel):
    url: str
    width: int
    height: int
    content_type: str


class FalOutput(BaseModel):
    image: FalImage
    seed: int


class FalQueued(BaseModel):
    request_id: str
    status: JobStatus
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None


def to_common(body: FalInstantIdInput, lcm: bool) -> GenerateBody:
    """The common request of a fal body."""
    steps = body.num_inference_steps if body.num_inference_steps is not None else (
        FAL_LCM_DEFAULTS["num_inference_steps"] if lcm else FAL_PLAIN_STEPS)
    guidance = body.guidance_scale if body.guidance_scale is not None else (
        FAL_LCM_DEFAULTS["guidance_scale"] if lcm else FAL_PLAIN_GUIDANCE)
    return GenerateBody(
        method="instantid", face_image=body.face_image_url, prompt=body.prompt, negative_prompt=body.negative_prompt,
        style=body.style, num_inference_steps=steps, guidance_scale=guidance,
        controlnet_selection=[body.controlnet_selection] if body.controlnet_selection else [],
        controlnet_conditioning_scale=body.controlnet_conditioning_scale, adapter_strength=body.ip_adapter_scale,
        identity_strength=body.identity_controlnet_conditioning_scale, enhance_face_region=body.enhance_face_region,
        seed=body.seed if body.seed is not None else -1, model_name=body.model_name,
        scheduler="lcm" if lcm else "euler",
    )


def fal_output(result: dict[str, Any]) -> dict[str, Any]:
    img = result["images"][0]
    return FalOutput(image=FalImage(url=img.get("signed_url") or img["url"], width=img["width"], height=img["height"],
                                    content_type=img["content_type"]), seed=int(img["seed"])).model_dump()


def _urls(base: str, request_id: str) -> dict[str, str]:
    root = f"{base}/queue/fal-ai/instantid/requests/{request_id}"
    return {"status_url": f"{root}/status", "response_url": root, "cancel_url": f"{root}/cancel"}


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
#: fal's per-request run time limit (seconds); past it the job is stopped and fails with error type timeout.
RequestTimeout = Annotated[float | None, Header(alias="X-Fal-Request-Timeout", gt=0, le=86400)]


def _variant(lcm: bool):  # noqa: ANN202
    async def run(body: FalInstantIdInput, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
                  idempotency_key: IdempotencyKey = None, request_timeout: RequestTimeout = None) -> JSONResponse:
        from faceanchor.api.generate import CLIENT_GONE, wait_or_cancel

        service.check_available(need_ready=True)
        prepared = await run_in_threadpool(prepare_request, APP, to_common(body, lcm), settings)
        base = base_url(request)
        job, created = await run_in_threadpool(lambda: service.submit(APP, prepared, key=key, idempotency_key=idempotency_key,
                                                                      start_timeout=settings.sync_timeout_seconds, base_url=base,
                                                                      timeout=request_timeout))
        job = await wait_or_cancel(service, job.id, created, request)
        if job is None:  # the client disconnected: its job was cancelled
            return JSONResponse({}, status_code=CLIENT_GONE)
        if job.status != JobStatus.COMPLETED:
            raise_job_error(job)
        return JSONResponse(fal_output(result_body(job, base, service.signer)), headers={"X-Request-Id": job.id})

    def submit(body: FalInstantIdInput, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
               idempotency_key: IdempotencyKey = None, request_timeout: RequestTimeout = None) -> FalQueued:
        prepared = prepare_request(APP, to_common(body, lcm), settings)
        base = base_url(request)
        job, _ = service.submit(APP, prepared, key=key, idempotency_key=idempotency_key, base_url=base, timeout=request_timeout)
        now = service.get(job.id) or job
        return FalQueued(request_id=job.id, status=now.status, queue_position=now.queue_position, **_urls(base, job.id))

    return run, submit


_ERRORS = error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503, 504)
for _name in VARIANTS:
    _run, _submit = _variant(_name.endswith("/lcm"))
    router.add_api_route(f"/fal-ai/{_name}", _run, methods=["POST"], response_model=FalOutput, responses=_ERRORS,
                         summary=f"fal-ai/{_name}: generate and wait (fal's input and output)")
    router.add_api_route(f"/queue/fal-ai/{_name}", _submit, methods=["POST"], response_model=FalQueued, responses=_ERRORS,
                         summary=f"fal-ai/{_name}: queue (fal's queue protocol)")

RequestId = Annotated[str, Path(max_length=64)]


def _job(service, request_id: str, key):  # noqa: ANN001, ANN202
    job = visible_job(service.get(request_id), key, APP)
    if job is None:
        raise ApiError(404, f"no request {request_id} in fal-ai/instantid")
    return job


@router.get("/queue/fal-ai/instantid/requests/{request_id}/status", response_model=JobStatusBody, response_model_exclude_none=True,
            responses=error_responses(401, 403, 404), summary="fal-ai/instantid: status")
def fal_status(request_id: RequestId, request: Request, service: ServiceDep, key: CurrentKey) -> JobStatusBody:
    job = _job(service, request_id, key)
    body = status_body(job, base_url(request))
    return body.model_copy(update={"response_url": _urls(base_url(request), job.id)["response_url"]})


@router.get("/queue/fal-ai/instantid/requests/{request_id}", response_model=FalOutput,
            responses={202: {"model": JobStatusBody}, **error_responses(401, 403, 404, 422, 500, 504)}, summary="fal-ai/instantid: result")
def fal_result(request_id: RequestId, request: Request, service: ServiceDep, key: CurrentKey):  # noqa: ANN201
    job = _job(service, request_id, key)
    if not job.status.finished:
        return JSONResponse(fal_status(request_id, request, service, key).model_dump(mode="json", exclude_none=True), status_code=202)
    if job.status != JobStatus.COMPLETED:
        raise_job_error(job)
    return fal_output(result_body(job, base_url(request), service.signer))


@router.put("/queue/fal-ai/instantid/requests/{request_id}/cancel", status_code=202, response_model=CancelOut,
            responses=error_responses(401, 403, 404), summary="fal-ai/instantid: cancel")
def fal_cancel(request_id: RequestId, service: ServiceDep, key: CurrentKey) -> CancelOut:
    _job(service, request_id, key)
    return cancel_job(service, request_id, "fal-ai/instantid")
