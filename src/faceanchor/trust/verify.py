"""Read an image's marks back: the invisible watermark, the C2PA manifest and faceanchor's own
metadata (the PNG text / EXIF copy, which a re-save drops). Used by ``faceanchor verify`` and
``POST /v1/verify``."""

from __future__ import annotations

import io
from typing import Any

from pathlib import Path

from faceanchor.errors import FaceAnchorError, ImageInputError
from faceanchor.imageio import ImageLimits, load_image, read_metadata


def verify_image(data: bytes, limits: ImageLimits | None = None, name: str = "image", settings: Any = None) -> dict[str, Any]:
    """What ``data`` (an encoded image) carries; raises ImageInputError when it is no image.
    ``settings.c2pa_trust_anchors`` (PEM) are the CAs whose chains read as trusted."""
    from faceanchor.trust.credentials import read_manifest
    from faceanchor.trust.watermark import read

    if not data:
        raise ImageInputError(f"{name} is empty")
    img = load_image(data, limits or ImageLimits(), name=name)
    mark = read(img).to_dict()
    try:
        meta = read_metadata(data)
    except Exception:  # unreadable or foreign metadata is not ours
        meta = {}
    job_id = (meta.get("trust") or {}).get("job_id") if isinstance(meta, dict) else None
    out: dict[str, Any] = {
        "watermark": mark,
        "credentials": read_manifest(data, _mime(data), _anchors(settings)),
        "metadata_job_id": job_id,
    }
    if mark["found"] and job_id:
        out["watermark"]["matches_metadata"] = str(job_id).replace("-", "").startswith(mark["job_id_prefix"])
    return out


def _anchors(settings: Any) -> bytes | None:
    path = getattr(settings, "c2pa_trust_anchors", None)
    if path is None:
        return None
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise FaceAnchorError(f"c2pa_trust_anchors: cannot read {path} ({e.strerror or e})") from None


def _mime(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return Image.MIME.get(im.format or "", "image/png")
