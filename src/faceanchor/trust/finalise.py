"""The one place every output passes before it is written: the CLI, the job worker and the
character service all call :meth:`Finisher.prepare` on each image (safety filter, then the
invisible watermark with the job id) and :meth:`Finisher.seal` on its encoded bytes (the C2PA
manifest, when a signing key is configured). What was done is returned as a ``trust`` dict
that goes into the image's metadata and the job result.

The job id comes from :func:`job_scope` (the worker sets it around a job); outside a job (the
CLI, library use) each call of :func:`current_job_id` without a scope makes a fresh id.
"""

from __future__ import annotations

import contextvars
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

from PIL import Image

_JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar("faceanchor_job_id", default=None)


@contextmanager
def job_scope(job_id: str) -> Iterator[str]:
    """Outputs finished inside carry ``job_id``."""
    token = _JOB.set(job_id)
    try:
        yield job_id
    finally:
        _JOB.reset(token)


def current_job_id() -> str | None:
    return _JOB.get()


def new_job_id() -> str:
    return uuid.uuid4().hex


class Finisher:
    """Safety filter, watermark and content credentials as ``settings`` configure them."""

    def __init__(self, settings: Any = None):
        from faceanchor.trust.credentials import CredentialSigner
        from faceanchor.trust.safety import SafetyFilter

        self.settings = settings
        self.safety = SafetyFilter.from_settings(settings)
        self.watermark = bool(getattr(settings, "watermark", True))
        if self.watermark:  # a missing package is a clear error now, not after a whole generation
            from faceanchor.trust.watermark import require

            require()
        self.signer = CredentialSigner.from_settings(settings)

    @classmethod
    def for_settings(cls, settings: Any = None) -> "Finisher":
        cache = _CACHE.get(id(settings))
        if cache is None or cache.settings is not settings:
            cache = cls(settings)
            _CACHE[id(settings)] = cache
        return cache

    def prepare(self, img: Image.Image, job_id: str | None = None) -> tuple[Image.Image, dict[str, Any]]:
        """``img`` as it is written (watermarked) and the ``trust`` record of what was done."""
        job_id = job_id or current_job_id() or new_job_id()
        info: dict[str, Any] = {"job_id": job_id}
        if self.safety is not None:  # first: a blurred output is what gets marked
            img, info["safety"] = self.safety.apply(img)
        else:
            info["safety"] = {"checked": False}
        info["watermark"] = self._watermark_info(img, job_id) if self.watermark else {"applied": False, "reason": "off (settings watermark)"}
        info["credentials"] = {"c2pa": self.signer is not None}
        if info["watermark"]["applied"]:
            from faceanchor.trust.watermark import embed

            img = embed(img, job_id)
        return img, info

    @staticmethod
    def _watermark_info(img: Image.Image, job_id: str) -> dict[str, Any]:
        from faceanchor.trust.watermark import ID_BYTES, capacity_ok

        if not capacity_ok(img.size):
            return {"applied": False, "reason": f"{img.width}x{img.height} is too small to hold the watermark"}
        return {"applied": True, "method": "dwtDctSvd", "payload": job_id.replace("-", "")[: ID_BYTES * 2]}

    def seal(self, data: bytes, fmt: str, info: dict[str, Any], metadata: dict[str, Any] | None = None) -> bytes:
        """The encoded output, with content credentials when configured (unchanged otherwise)."""
        if self.signer is None:
            return data
        from faceanchor.trust.credentials import assertion_for

        return self.signer.sign(data, fmt, assertion_for(info, metadata))


_CACHE: dict[int, Finisher] = {}
