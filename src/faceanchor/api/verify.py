"""``POST /v1/verify``: what an image carries: faceanchor's invisible watermark (the job id it
was made by) and its C2PA content credentials. It reads only the image sent: no job or file of
any tenant is looked up, so it tells a caller nothing they do not hold already."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from faceanchor.api.deps import CurrentKey, SettingsDep
from faceanchor.api.errors import error_responses
from faceanchor.api.inputs import decode_image_ref
from faceanchor.api.schemas import ImageRef
from faceanchor.imageio import ImageLimits

router = APIRouter(tags=["trust"])


class VerifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    image: ImageRef


class VerifyOut(BaseModel):
    watermark: dict[str, Any] = Field(description="found, job_id_prefix (the first 12 hex digits of the job id), scale it was read at.")
    credentials: dict[str, Any] = Field(description="The C2PA manifest: found, valid, claim_generator, assertions, signature.")
    metadata_job_id: str | None = Field(None, description="The job id in faceanchor's PNG/EXIF metadata, when that survived.")


@router.post("/v1/verify", response_model=VerifyOut, responses=error_responses(400, 401, 403, 413, 415, 422),
             summary="Read an image's watermark and content credentials")
async def verify(body: VerifyBody, settings: SettingsDep, _key: CurrentKey) -> VerifyOut:
    from faceanchor.trust.verify import verify_image

    data = await run_in_threadpool(decode_image_ref, body.image, "image", settings)
    out = await run_in_threadpool(verify_image, data, ImageLimits.from_settings(settings), "image", settings)
    return VerifyOut(**out)
