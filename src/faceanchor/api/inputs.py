"""Turn the image fields of an HTTP request into validated bytes.

An image field is an http(s) URL (fetched under the SSRF rules of
:mod:`faceanchor.service.fetch`), a ``data:`` URI, or base64 text. Never a server path: a
string is never opened as a file. Each image is decoded once under the byte and pixel limits
(413 / 415 on failure) before the job is accepted.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from faceanchor.config import Settings
from faceanchor.errors import ImageInputError, ImageTooLargeError, InvalidInputError
from faceanchor.imageio import ImageLimits, probe_image
from faceanchor.service.fetch import UrlRefusedError, fetch_url

_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w-]+=[\w.+-]+)*(?P<b64>;base64)?,", re.I)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]{1,20}://")

IMAGE_FIELDS = ("face_image", "face_images", "pose_image", "face_crop")


def decode_image_ref(value: str, field: str, settings: Settings) -> bytes:
    """Bytes of one image reference (not yet decoded as an image)."""
    text = value.strip()
    lowered = text[:10].lower()
    if lowered.startswith(("http://", "https://")):
        return fetch_url(text, max_bytes=settings.max_image_bytes, timeout=settings.url_fetch_timeout,
                         allow_private=settings.allow_private_urls)
    if _SCHEME.match(text) or lowered.startswith("file:"):
        raise UrlRefusedError(f"{field}: only http and https URLs are accepted")
    m = _DATA_URI.match(text)
    if m:
        if not m.group("b64"):
            raise ImageInputError(f"{field}: data URI must be base64-encoded")
        text = text[m.end():]
    if len(text) * 3 // 4 > settings.max_image_bytes + 3:
        raise ImageTooLargeError(f"{field}: the encoded image is over the limit of {settings.max_image_bytes} bytes")
    try:  # the usual case: one line, no whitespace; the ASCII text itself, not an encoded copy
        data = binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        try:  # wrapped base64 (MIME's 76-column lines): strip the whitespace, only then
            data = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInputError(f"{field}: not an http(s) URL, data: URI or base64 text") from None
    if not data:
        raise InvalidInputError(f"{field}: the image is empty")
    return data


def resolve_images(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Replace every image field of ``body`` by validated bytes."""
    limits = ImageLimits.from_settings(settings)
    out = dict(body)
    for field in IMAGE_FIELDS:
        value = out.get(field)
        if value is None:
            continue
        if isinstance(value, list):
            out[field] = [_one(v, f"{field}[{i}]", settings, limits) for i, v in enumerate(value)]
        else:
            out[field] = _one(value, field, settings, limits)
    people = out.get("more_identities")
    if people:  # each more person's photo too: never a server path
        out["more_identities"] = [
            dict(p, face_image=_one(p["face_image"], f"more_identities[{i}].face_image", settings, limits))
            if isinstance(p, dict) and p.get("face_image") is not None else p
            for i, p in enumerate(people)
        ]
    return out


def _one(value: str, field: str, settings: Settings, limits: ImageLimits) -> bytes:
    data = decode_image_ref(value, field, settings)
    # 413 / 415 now rather than a failed job later, from the header and the file's structure
    # only: the pixels are decoded once, in the worker (issue: fast, bounded intake).
    probe_image(data, limits, name=field)
    return data
