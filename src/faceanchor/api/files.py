"""``GET /files/{id}``: generated images by their sha256, with the right type and ``nosniff``.

A file is served to a key whose owner (the key or its tenant) made it, to admin keys, or to
anyone holding a valid signed link (``?expires=&sig=``, see :mod:`faceanchor.service.signing`).
Every other caller gets 404, as for a file that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import FileResponse

from faceanchor.api.deps import OptionalKey, ServiceDep
from faceanchor.api.errors import ApiError, error_responses

router = APIRouter(tags=["files"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get("/files/{file_id}", response_class=FileResponse, summary="A generated image",
            responses={200: {"description": "The image.", "content": {"image/png": _BINARY, "image/jpeg": _BINARY, "image/webp": _BINARY}},
                       **error_responses(401, 403, 404, 422)})
def get_file(file_id: Annotated[str, Path(max_length=128)], request: Request, service: ServiceDep, key: OptionalKey,
             expires: Annotated[str | None, Query(max_length=20, description="Signed link: its expiry (unix time).")] = None,
             sig: Annotated[str | None, Query(max_length=128, description="Signed link: its HMAC.")] = None) -> FileResponse:
    check_access(service, key, request.url.path, expires, sig, lambda k: service.can_read_file(k, file_id, "outputs"))
    path = service.files.path(file_id, "outputs")
    if path is None:
        raise ApiError(404, "no such file")
    content_type = service.files.content_type(file_id, "outputs") or "application/octet-stream"
    return FileResponse(path, media_type=content_type, headers={
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=31536000, immutable" if key is not None else "private, no-store",
        "ETag": f'"{file_id}"',
        "Content-Disposition": "inline",
    })


def check_access(service, key, path: str, expires: str | None, sig: str | None, owns) -> None:  # noqa: ANN001
    """A signed link opens ``path`` without a key; otherwise the key must ``owns(key)`` (404 if not)."""
    if expires is not None or sig is not None:
        problem = service.signer.check(path, expires, sig)
        if problem is None:
            return
        if key is None:
            raise ApiError(403, f"the signed link is not valid: {problem}", "forbidden")
    if key is None:
        raise ApiError(401, "an API key or a signed link (?expires=&sig=) is required", "unauthorized",
                       headers={"WWW-Authenticate": "Key"})
    if not owns(key):
        raise ApiError(404, "no such file")
