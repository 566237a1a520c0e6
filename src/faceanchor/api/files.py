"""``GET /files/{id}``: generated images by their sha256, with the right type and ``nosniff``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from faceanchor.api.deps import CurrentKey, ServiceDep
from faceanchor.api.errors import ApiError, error_responses

router = APIRouter(tags=["files"])

_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get("/files/{file_id}", response_class=FileResponse, summary="A generated image",
            responses={200: {"description": "The image.", "content": {"image/png": _BINARY, "image/jpeg": _BINARY, "image/webp": _BINARY}},
                       **error_responses(401, 403, 404, 422)})
def get_file(file_id: Annotated[str, Path(max_length=128)], service: ServiceDep, _key: CurrentKey) -> FileResponse:
    path = service.files.path(file_id, "outputs")
    if path is None:
        raise ApiError(404, "no such file")
    content_type = service.files.content_type(file_id, "outputs") or "application/octet-stream"
    return FileResponse(path, media_type=content_type, headers={
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=31536000, immutable",
        "ETag": f'"{file_id}"',
        "Content-Disposition": "inline",
    })
