"""Typed dependencies: the service, settings, the caller's key, rate limits.

Keys come in ``x-api-key: KEY``, ``Authorization: Key KEY`` or ``Authorization: Bearer KEY``.
Missing or unknown → 401, revoked → 403. Submissions also take a token from the key's bucket
(429 with ``Retry-After`` when empty).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from faceanchor.api.errors import ApiError
from faceanchor.api.limits import TokenBucket, retry_after_header
from faceanchor.api.metrics import Metrics
from faceanchor.config import Settings
from faceanchor.service.runtime import Service
from faceanchor.store.keys import KeyCheck, KeyInfo

_x_api_key = APIKeyHeader(name="x-api-key", auto_error=False, scheme_name="ApiKey",
                          description="The API key.")
_authorization = APIKeyHeader(name="Authorization", auto_error=False, scheme_name="AuthorizationKey",
                              description="`Key <api key>` or `Bearer <api key>`.")


async def get_service(request: Request) -> Service:
    return request.app.state.service


async def get_settings(request: Request) -> Settings:
    return request.app.state.service.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_rate_limiter(request: Request) -> TokenBucket:
    return request.app.state.rate_limiter


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def _presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    if x_api_key:
        return x_api_key.strip()
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() in ("key", "bearer") and value.strip():
            return value.strip()
        raise ApiError(401, "the Authorization header must be 'Key <api key>' or 'Bearer <api key>'", "unauthorized",
                       headers={"WWW-Authenticate": "Key"})
    return None


def current_key(
    service: ServiceDep,
    x_api_key: Annotated[str | None, Security(_x_api_key)] = None,
    authorization: Annotated[str | None, Security(_authorization)] = None,
) -> KeyInfo:
    key = _presented_key(x_api_key, authorization)
    if not key:
        raise ApiError(401, "an API key is required (x-api-key header or Authorization: Key …)", "unauthorized",
                       headers={"WWW-Authenticate": "Key"})
    outcome, info = service.keys.verify(key)
    if outcome == KeyCheck.REVOKED:
        raise ApiError(403, "this API key has been revoked", "forbidden")
    if outcome != KeyCheck.OK or info is None:
        raise ApiError(401, "the API key is not valid", "unauthorized", headers={"WWW-Authenticate": "Key"})
    return info


CurrentKey = Annotated[KeyInfo, Depends(current_key)]


def optional_key(
    service: ServiceDep,
    x_api_key: Annotated[str | None, Security(_x_api_key)] = None,
    authorization: Annotated[str | None, Security(_authorization)] = None,
) -> KeyInfo | None:
    """The key when one is presented (checked like :func:`current_key`), else ``None`` (routes
    that also take a signed URL)."""
    if not x_api_key and not authorization:
        return None
    return current_key(service, x_api_key, authorization)


OptionalKey = Annotated[KeyInfo | None, Depends(optional_key)]


async def admin_key(key: CurrentKey) -> KeyInfo:
    if not key.admin:
        raise ApiError(403, "this needs an admin key (faceanchor keys create --admin)", "forbidden")
    return key


AdminKey = Annotated[KeyInfo, Depends(admin_key)]


async def rate_limited_key(key: CurrentKey, settings: SettingsDep, limiter: Annotated[TokenBucket, Depends(get_rate_limiter)]) -> KeyInfo:
    per_minute = key.rate_limit_per_minute if key.rate_limit_per_minute is not None else settings.rate_limit_per_minute
    wait = limiter.take(key.id, per_minute)
    if wait is not None:
        raise ApiError(429, f"rate limit of {per_minute} requests per minute reached for this key", "rate_limited",
                       headers=retry_after_header(wait))
    return key


SubmittingKey = Annotated[KeyInfo, Depends(rate_limited_key)]
