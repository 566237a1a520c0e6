"""Turning an engine result into the stored job result, and a stored result into the public one.

Stored results name images by file id only (content-addressed outputs); the public form adds
the URL the API serves each image at, so the same job renders right behind any base URL.
"""

from __future__ import annotations

import hashlib
from typing import Any

from faceanchor.cancel import checkpoint
from faceanchor.imageio import MIME_TYPES, encode_image
from faceanchor.store.files import FileStore
from faceanchor.trust.finalise import Finisher
from faceanchor.types import GenerationResult


def store_result(result: GenerationResult, files: FileStore, output_format: str = "png", settings: Any = None) -> dict[str, Any]:
    """Encode every image (metadata embedded), store it, and return the JSON-able job result.

    Every image passes :class:`~faceanchor.trust.finalise.Finisher` (safety filter, watermark,
    content credentials as ``settings`` say); its ``trust`` record is in the metadata and entry.

    A cancel (:func:`faceanchor.cancel.checkpoint`) lands between two images; the files this call
    stored so far (and no one else's) are removed again."""
    meta = result.metadata()
    images = []
    created: list[str] = []
    finisher = Finisher.for_settings(settings)
    try:
        for i, im in enumerate(result.images):
            checkpoint("encoding")
            image, trust = finisher.prepare(im.image)
            per_image = dict(meta, seed=im.seed, identity_score=im.identity_score, index=i, trust=trust)
            data = finisher.seal(encode_image(image, output_format, per_image), output_format, trust, per_image)
            checkpoint("encoding")
            known = files.path(hashlib.sha256(data).hexdigest(), "outputs") is not None
            file_id = files.put(data, "outputs")
            if not known:
                created.append(file_id)
            images.append(dict(_image_entry(file_id, im, output_format), trust=trust))
    except BaseException:
        for fid in created:
            files.delete(fid, "outputs")
        raise
    return {
        "images": images,
        "seed": int(result.seed),
        "seeds": [img["seed"] for img in images],
        "identity_scores": [img["identity_score"] for img in images],
        "params": meta["params"],
        "models": meta["models"],
        "timings": dict(meta["timings"]),
        "warnings": list(result.warnings),
    }


def _image_entry(file_id: str, im: Any, output_format: str) -> dict[str, Any]:
    return {
        "file_id": file_id,
        "content_type": MIME_TYPES[output_format],
        "width": int(im.image.width),
        "height": int(im.image.height),
        "seed": int(im.seed),
        "identity_score": None if im.identity_score is None else float(im.identity_score),
        "identity_reason": im.identity_reason,
        **({"identity_scores": [None if v is None else float(v) for v in im.identity_scores]}
           if im.identity_scores is not None else {}),  # several people: one per person, the lowest is identity_score
    }


def file_url(base_url: str, file_id: str) -> str:
    return f"{base_url.rstrip('/')}/files/{file_id}"


def public_result(result: dict[str, Any], base_url: str, signer: Any = None) -> dict[str, Any]:
    """The stored result with an absolute ``url`` on every image (fetched with the API key) and,
    with a ``signer`` (:class:`~faceanchor.service.signing.UrlSigner`) that is on, a
    ``signed_url`` that works without the key until it expires."""
    out = dict(result)
    images = []
    for img in result.get("images", []):
        one = dict(img, url=file_url(base_url, img["file_id"]))
        if signer is not None and signer.enabled:
            one["signed_url"] = signer.sign(base_url, f"/files/{img['file_id']}")
        images.append(one)
    out["images"] = images
    return out
