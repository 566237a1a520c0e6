"""Keys and usage over HTTP.

* ``GET /v1/usage``: the calling key's image usage this UTC day and month, its limits and the
  reset times (every key).
* ``GET /v1/keys``, ``POST /v1/keys``, ``DELETE /v1/keys/{id}``, ``GET /v1/keys/{id}/usage``:
  key management, for admin keys only (others: 403). Admin keys themselves are made on the
  command line only (``faceanchor keys create --admin``); the API cannot create one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from faceanchor.api.deps import AdminKey, CurrentKey, ServiceDep
from faceanchor.api.errors import ApiError, error_responses
from faceanchor.service import quotas

router = APIRouter(tags=["keys"])


class NewKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200)
    tenant: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Keys of one tenant share their resources.")
    rate_limit_per_minute: int | None = Field(None, ge=0)
    images_per_day: int | None = Field(None, ge=0)
    images_per_month: int | None = Field(None, ge=0)


@router.get("/v1/usage", responses=error_responses(401, 403), summary="This key's image usage and limits")
def my_usage(service: ServiceDep, key: CurrentKey) -> dict[str, Any]:
    return quotas.usage(service.jobs, key, service.settings)


@router.get("/v1/keys", responses=error_responses(401, 403), summary="Every key (admin)")
def list_keys(service: ServiceDep, _admin: AdminKey) -> dict[str, Any]:
    return {"keys": [k.to_dict() for k in service.keys.list()]}


@router.post("/v1/keys", status_code=201, responses=error_responses(401, 403, 422), summary="Create a key (admin); shown once")
def create_key(body: NewKeyBody, service: ServiceDep, _admin: AdminKey) -> dict[str, Any]:
    key, info = service.keys.create(body.name, body.rate_limit_per_minute, tenant=body.tenant,
                                    images_per_day=body.images_per_day, images_per_month=body.images_per_month)
    return dict(info.to_dict(), key=key)


@router.delete("/v1/keys/{key_id}", responses=error_responses(401, 403, 404), summary="Revoke a key (admin)")
def revoke_key(key_id: Annotated[str, Path(max_length=12)], service: ServiceDep, _admin: AdminKey) -> dict[str, Any]:
    if not service.keys.revoke(key_id):
        raise ApiError(404, f"no key with id {key_id}")
    return {"id": key_id, "revoked": True}


@router.get("/v1/keys/{key_id}/usage", responses=error_responses(401, 403, 404), summary="A key's usage (admin)")
def key_usage(key_id: Annotated[str, Path(max_length=12)], service: ServiceDep, _admin: AdminKey) -> dict[str, Any]:
    info = service.keys.get(key_id)
    if info is None:
        raise ApiError(404, f"no key with id {key_id}")
    return quotas.usage(service.jobs, info, service.settings)
