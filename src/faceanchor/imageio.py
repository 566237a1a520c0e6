"""Untrusted image input and output encoding.

Input: a path, raw bytes, base64 text or a ``data:`` URI. Formats: JPEG, PNG, WEBP. Limits are
checked before any pixel is decoded (byte size first, then the header's dimensions), so a
decompression bomb is refused without allocating its pixels. EXIF orientation is applied and
every mode becomes 8-bit RGB.

Output: PNG/JPEG/WEBP bytes with the generation metadata embedded (PNG text chunks, or the
EXIF UserComment for JPEG/WEBP).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin

from faceanchor.errors import ImageInputError, ImageTooLargeError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
_ALLOWED_TEXT = "JPEG, PNG or WEBP"
_DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000

ImageSource = str | bytes | bytearray | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_settings(cls, settings: Any) -> "ImageLimits":
        return cls(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)


def _describe(source: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, Path):
        return str(source)
    if isinstance(source, str) and len(source) < 260 and not source.startswith("data:"):
        return source
    return "the image"


def read_source_bytes(source: str | bytes | bytearray | Path, limits: ImageLimits, name: str | None = None) -> bytes:
    """Turn a path / bytes / base64 / data URI into raw bytes, enforcing the byte limit."""
    label = _describe(source, name)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, Path) or (isinstance(source, str) and _looks_like_path(source)):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ImageInputError(f"{label}: no such file")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageTooLargeError(f"{label}: file is {size} bytes, over the limit of {limits.max_bytes} bytes")
        data = path.read_bytes()
    elif isinstance(source, str):
        text = source.strip()
        m = _DATA_URI.match(text)
        if m:
            payload = text[m.end():]
            if not m.group("b64"):
                raise ImageInputError(f"{label}: data URI must be base64-encoded")
            text = payload
        if len(text) * 3 // 4 > limits.max_bytes + 3:
            raise ImageTooLargeError(f"{label}: encoded image is over the limit of {limits.max_bytes} bytes")
        try:
            data = base64.b64decode(re.sub(r"\s+", "", text), validate=True)
        except (binascii.Error, ValueError):
            raise ImageInputError(f"{label}: not a file path, base64 text or data: URI") from None
    else:
        raise ImageInputError(f"{label}: unsupported input type {type(source).__name__}")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"{label}: {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    if not data:
        raise ImageInputError(f"{label}: empty input")
    return data


_BASE64_TEXT = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")


def _looks_like_path(s: str) -> bool:
    if s.startswith("data:"):
        return False
    if len(s) > 1024 or "\n" in s:
        return False
    if len(s) >= 32 and _BASE64_TEXT.match(s) and not Path(s).expanduser().exists():
        return False  # base64 text may contain "/" but never "." (file names usually do)
    return "/" in s or "\\" in s or "." in s[-6:] or Path(s).expanduser().exists()


def load_image(source: ImageSource, limits: ImageLimits | None = None, name: str | None = None) -> Image.Image:
    """Decode an untrusted image into 8-bit RGB with EXIF orientation applied.

    Raises :class:`ImageTooLargeError` (bytes or pixels over the limit) or
    :class:`ImageInputError` (unknown format, corrupt or truncated) with one clear sentence.
    """
    limits = limits or ImageLimits()
    label = _describe(source, name)
    if isinstance(source, Image.Image):
        _check_pixels(source.size, limits, label)
        return _to_rgb(source)
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3) or source.dtype != np.uint8:
            raise ImageInputError(f"{label}: arrays must be uint8 HxW or HxWx3 (RGB)")
        _check_pixels((source.shape[1], source.shape[0]), limits, label)
        return _to_rgb(Image.fromarray(source))
    data = read_source_bytes(source, limits, name)
    fmt, _size = _header(data, limits, label)
    try:
        img = Image.open(io.BytesIO(data), formats=[fmt])
        img.load()
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"{label}: image is over the limit of {limits.max_pixels} pixels") from None
    except Exception:
        raise ImageInputError(f"{label}: the {fmt} file is truncated or corrupt") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:
        pass  # a broken EXIF block is no reason to refuse the pixels
    return _to_rgb(img)


def _header(data: bytes, limits: ImageLimits, label: str) -> tuple[str, tuple[int, int]]:
    """Format and size from the header alone (no pixel decoded), both checked against the limits."""
    try:
        with Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS)) as probe:
            fmt = probe.format
            size = probe.size
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"{label}: image is over the limit of {limits.max_pixels} pixels") from None
    except Exception:
        kind = _sniff(data)
        if kind and kind not in ALLOWED_FORMATS:
            raise ImageInputError(f"{label}: {kind} images are not supported; use {_ALLOWED_TEXT}") from None
        raise ImageInputError(f"{label}: not a readable image; use {_ALLOWED_TEXT}") from None
    _check_pixels(size, limits, label)
    return fmt, size


def probe_image(source: str | bytes | bytearray | Path, limits: ImageLimits | None = None,
                name: str | None = None) -> tuple[str, tuple[int, int]]:
    """The cheap check of an untrusted image, for intake: ``(format, (width, height))``.

    Reads the bytes and the header (format, dimensions: the byte and pixel limits hold as in
    :func:`load_image`) and checks that the file is whole — PNG: every chunk's CRC through
    ``IEND``; JPEG: an end-of-image marker after the first scan; WEBP: the RIFF length — without
    decoding a pixel. A file that passes can still be corrupt inside its compressed data; the
    full decode (:func:`load_image`, in the worker) finds that."""
    limits = limits or ImageLimits()
    label = _describe(source, name)
    data = read_source_bytes(source, limits, name)
    fmt, size = _header(data, limits, label)
    whole = True
    if fmt == "PNG":
        whole = _png_reaches_iend(data)
    elif fmt == "JPEG":
        scan = data.find(b"\xff\xda")
        whole = scan >= 0 and data.rfind(b"\xff\xd9") > scan
    elif fmt == "WEBP":
        whole = len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 <= len(data)
    if not whole:
        raise ImageInputError(f"{label}: the {fmt} file is truncated or corrupt")
    return fmt, size


def _png_reaches_iend(data: bytes) -> bool:
    """Whether the chunk lengths of a PNG lead, inside ``data``, to its ``IEND`` chunk."""
    pos = 8  # the signature
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        if data[pos + 4:pos + 8] == b"IEND":
            return True
        pos += 12 + length  # length, type, data, CRC
    return False


def _check_pixels(size: tuple[int, int], limits: ImageLimits, label: str) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageInputError(f"{label}: image has no pixels")
    if w * h > limits.max_pixels:
        raise ImageTooLargeError(f"{label}: {w}x{h} is {w * h} pixels, over the limit of {limits.max_pixels} pixels")


def _sniff(data: bytes) -> str | None:
    heads = {b"GIF8": "GIF", b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "PDF"}
    for magic, kind in heads.items():
        if data.startswith(magic):
            return kind
    if data[4:12] in (b"ftypheic", b"ftypavif", b"ftypmif1"):
        return "HEIC/AVIF"
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode (L, LA, P, RGBA, CMYK, I;16, I, F) → 8-bit RGB; alpha composited on white."""
    if img.mode == "RGB":
        return img.copy() if img.readonly else img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def to_array(img: Image.Image) -> np.ndarray:
    """RGB uint8 HxWx3 array of a PIL image."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


# --------------------------------------------------------------------------- output

_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp"}


def encode_image(img: Image.Image, fmt: str = "png", metadata: dict[str, Any] | None = None, quality: int = 95) -> bytes:
    """Encode an output image, embedding ``metadata`` as JSON.

    PNG: one ``tEXt`` chunk per top-level key plus ``faceanchor`` with the whole JSON.
    JPEG/WEBP: the JSON in EXIF UserComment (tag 0x9286).
    """
    key = fmt.lower()
    if key not in _PIL_FORMAT:
        raise ImageInputError(f"output format {fmt!r} is not supported; use png, jpeg or webp")
    buf = io.BytesIO()
    text = json.dumps(metadata or {}, default=str, sort_keys=True)
    if _PIL_FORMAT[key] == "PNG":
        info = PngImagePlugin.PngInfo()
        if metadata:
            info.add_text("faceanchor", text)
            for k, v in metadata.items():
                info.add_text(str(k), v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True))
        img.save(buf, format="PNG", pnginfo=info)
    else:
        exif = Image.Exif()
        if metadata:
            exif[0x9286] = _fit_exif_text(metadata, text)
        img.convert("RGB").save(buf, format=_PIL_FORMAT[key], quality=quality, exif=exif.tobytes())
    return buf.getvalue()


#: EXIF lives in one 64 KiB JPEG segment; keep the UserComment well inside it.
EXIF_TEXT_LIMIT = 60_000


def _fit_exif_text(metadata: dict[str, Any], text: str) -> str:
    """``text``, or when too long for EXIF the metadata with its longest strings shortened
    (marked with "…[truncated]"); the full metadata stays in the result and in PNG outputs."""
    if len(text.encode()) <= EXIF_TEXT_LIMIT:
        return text
    for keep in (4000, 1000, 250, 60, 0):
        short = json.dumps(_shorten(metadata, keep), default=str, sort_keys=True)
        if len(short.encode()) <= EXIF_TEXT_LIMIT:
            return short
    return json.dumps({"truncated": True}, sort_keys=True)


def _shorten(value: Any, keep: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= keep else value[:keep] + "…[truncated]"
    if isinstance(value, dict):
        return {k: _shorten(v, keep) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shorten(v, keep) for v in value]
    return value


def read_metadata(data: bytes) -> dict[str, Any]:
    """The faceanchor metadata embedded by :func:`encode_image`, or ``{}``."""
    with Image.open(io.BytesIO(data)) as img:
        text = img.info.get("faceanchor")
        if text is None:
            raw = img.getexif().get(0x9286)
            text = raw.decode() if isinstance(raw, bytes) else raw
    return json.loads(text) if text else {}
