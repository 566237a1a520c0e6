"""The Segmind shape of ``POST /v1/instantid``: Segmind's defaults, ranges and error codes.

Segmind's InstantID page (``../shared/seeds/004_…``) documents: ``num_inference_steps`` 10
(4-100), ``guidance_scale`` 5 (1-25), ``identity_strength`` and ``adapter_strength`` 0.8 (0-1),
``seed`` -1 (-1 to 999999999999999), ``samples`` 1 (1-4), ``base64`` false, and the answers 400
(invalid parameters or request format), 401, 403, 404, 406 (insufficient credits), 429, 500,
502 (temporarily unavailable) and 504. The ranges stay this server's (a superset of Segmind's: 1-100
steps, guidance 0-30, strengths 0-2), so every body Segmind accepts is accepted here; the route
keeps every other field of the common request, answers with the image bytes (or JSON with ``base64: true``) and maps this server's
codes onto Segmind's: 409/415/422 → 400, an exhausted image quota (429 ``quota_exceeded``) →
406, 503 (loading, queue full) → 502 with ``Retry-After``. A body over the server's byte limit
is refused with 413 before any route runs.
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from faceanchor.api.errors import _describe_validation, error_response
from faceanchor.api.schemas import GenerateBody
from faceanchor.errors import FaceAnchorError

#: Segmind's documented defaults (asserted one by one in tests/api/test_hosted_shapes.py).
SEGMIND_DEFAULTS: dict[str, Any] = {
    "num_inference_steps": 10, "guidance_scale": 5.0, "identity_strength": 0.8, "adapter_strength": 0.8,
    "seed": -1, "samples": 1, "base64": False, "enhance_face_region": True,
}
SEGMIND_STATUS = {409: 400, 413: 413, 415: 400, 422: 400, 503: 502}
SEGMIND_CODES = (400, 401, 403, 404, 406, 429, 500, 502, 504)


class SegmindBody(GenerateBody):
    """The common request with Segmind's defaults (identity/adapter 0.8, seed -1, samples 1 and
    base64 false are the common request's defaults already)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "prompt": "photo of a man", "face_image": "https://example.com/face.jpg", "style": "Vibrant Color",
        "num_inference_steps": 10, "guidance_scale": 5, "identity_strength": 0.8, "adapter_strength": 0.8}]})

    num_inference_steps: int | None = Field(10, ge=1, le=100, description="Denoising steps, 1-100 (Segmind: 4-100). Default 10 (Segmind).")
    guidance_scale: float | None = Field(5.0, ge=0.0, le=30.0, description="Classifier-free guidance, 0-30 (Segmind: 1-25). Default 5.")


def segmind_status(status: int, type_: str) -> int:
    if status == 429 and type_ == "quota_exceeded":
        return 406
    return SEGMIND_STATUS.get(status, status)


class SegmindRoute(APIRoute):
    """Answers every error of its route with Segmind's status codes (the ``{"error"}`` body kept)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                return error_response(400, "validation_error", _describe_validation(e))
            except FaceAnchorError as e:
                headers = {"Retry-After": str(int(e.retry_after))} if getattr(e, "retry_after", None) is not None else {}
                headers.update(getattr(e, "headers", None) or {})
                return error_response(segmind_status(e.http_status, e.type), e.type, str(e), headers or None)
            except StarletteHTTPException as e:
                if e.status_code < 400 or e.status_code == 404:  # 404 of the route itself stays
                    raise
                type_ = getattr(e, "type", None) or "error"
                return error_response(segmind_status(e.status_code, type_), type_, str(e.detail),
                                      dict(e.headers) if e.headers else None)

        return route
