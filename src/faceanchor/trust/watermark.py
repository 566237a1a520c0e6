"""The invisible watermark on every output: the job id's first 48 bits and a CRC-16, in the
DWT-DCT-SVD domain of the U (chroma) channel, written and read with ``invisible-watermark``
(``imwatermark``, imported only when used).

Measured on the test photos (``benchmarks/trust.py``): plain ``dwtDct`` (SDXL's) did not even
survive a lossless round trip at 64 bits, so the library's ``dwtDctSvd`` at scale 60 is used;
it survives JPEG re-encoding, not resizing or cropping (its 8-pixel block grid moves). The
CRC means a read never reports a payload that was not written: an image without a watermark
(or with a destroyed one) reads as "none found", not as a random id. :func:`read` also tries
the image scaled back by 2, 1.5 and 4/3 (outputs shrunk by a re-poster). Embedding reads its own result and writes again (up to
:data:`EMBED_PASSES` times) where clipping at 0/255 flipped bits: small, saturated outputs.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

#: Bytes of the job id (hex) carried; the rest of the payload is a CRC-16 of them.
ID_BYTES = 6
PAYLOAD_BITS = (ID_BYTES + 2) * 8
SCALE = 60
#: Each payload bit is written into at least this many 4x4 blocks of the half-size DWT band
#: (one: 64x64 pixels hold it; real outputs, 512 px and up, repeat each bit 64 times and more).
MIN_REPEATS = 1
RESCALES = (1.0, 2.0, 1.5, 4 / 3)
#: Embedding passes at most (each checks its own result; most images need one).
EMBED_PASSES = 3


@dataclass(frozen=True)
class WatermarkRead:
    found: bool
    job_id_prefix: str | None = None
    scale: float | None = None  # the rescale the payload was found at

    def to_dict(self) -> dict[str, Any]:
        return {"found": self.found, "job_id_prefix": self.job_id_prefix, "scale": self.scale}


def _codec(bits: list[int] | None = None) -> Any:
    try:
        from imwatermark.dwtDctSvd import EmbedDwtDctSvd
    except ImportError as e:
        if e.name and e.name.split(".")[0] not in ("imwatermark", "pywt"):
            raise  # something it imports (torch, cv2) is missing: the CLI names that module's extra
        from faceanchor.errors import FaceAnchorError

        raise FaceAnchorError(
            "the output watermark needs invisible-watermark: pip install 'faceanchor[trust]' && "
            "pip install --no-deps invisible-watermark==0.2.0 (or turn it off: FACEANCHOR_WATERMARK=false)"
        ) from None

    return EmbedDwtDctSvd(bits or [], wmLen=PAYLOAD_BITS, scales=[0, SCALE, 0], block=4)


def require() -> None:
    """Raise the codec's clear error if the watermark package is missing."""
    _codec()


def payload_bits(job_id: str) -> list[int]:
    """The 64 payload bits of ``job_id`` (hex, e.g. a uuid4 hex): its first 6 bytes + CRC-16."""
    text = job_id.replace("-", "").lower()
    try:
        head = bytes.fromhex(text[: ID_BYTES * 2])
    except ValueError:
        head = b""
    if len(head) != ID_BYTES:
        raise ValueError(f"a watermark payload needs a hex job id of at least {ID_BYTES * 2} digits, got {job_id!r}")
    data = head + binascii.crc_hqx(head, 0xFFFF).to_bytes(2, "big")
    return [int(b) for b in np.unpackbits(np.frombuffer(data, np.uint8))]


def capacity_ok(size: tuple[int, int]) -> bool:
    """Whether an image of ``size`` holds every payload bit :data:`MIN_REPEATS` times."""
    w, h = size
    return (w // 8) * (h // 8) >= PAYLOAD_BITS * MIN_REPEATS


def embed(img: Image.Image, job_id: str) -> Image.Image:
    """``img`` with the watermark of ``job_id`` (RGB). Raises ValueError when the image is too
    small to hold it (see :func:`capacity_ok`)."""
    import cv2

    rgb = img.convert("RGB")
    if not capacity_ok(rgb.size):
        raise ValueError(f"{rgb.width}x{rgb.height} is too small for a {PAYLOAD_BITS}-bit watermark")
    bits = payload_bits(job_id)
    want = job_id.replace("-", "").lower()[: ID_BYTES * 2]
    arr = np.asarray(rgb)
    for _ in range(EMBED_PASSES):  # closed loop: clipping to 0..255 can flip bits; write again over them
        bgr = _codec(bits).encode(cv2.cvtColor(arr, cv2.COLOR_RGB2BGR))
        arr = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if _decode(arr) == want:
            break
    return Image.fromarray(arr)


def _decode(rgb: np.ndarray) -> str | None:
    import cv2

    if not capacity_ok((rgb.shape[1], rgb.shape[0])):
        return None
    bits = _codec().decode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    data = np.packbits(np.asarray(bits, np.uint8)).tobytes()
    head, crc = data[:ID_BYTES], int.from_bytes(data[ID_BYTES:ID_BYTES + 2], "big")
    if binascii.crc_hqx(head, 0xFFFF) != crc:
        return None
    return head.hex()


def read(img: Image.Image, rescales: tuple[float, ...] = RESCALES) -> WatermarkRead:
    """The watermark of ``img``: the job id prefix it carries, or ``found=False``."""
    rgb = img.convert("RGB")
    for s in rescales:
        im = rgb if s == 1.0 else rgb.resize((round(rgb.width * s), round(rgb.height * s)), Image.LANCZOS)
        prefix = _decode(np.asarray(im))
        if prefix is not None:
            return WatermarkRead(True, prefix, s)
    return WatermarkRead(False)
