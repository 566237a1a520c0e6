"""ComfyUI's image types and PIL: IMAGE is a float32 torch tensor B×H×W×C in 0–1 (RGB), MASK B×H×W.

A PIL image becomes ``uint8 / 255``; a tensor becomes PIL by ``round(x * 255)`` after clipping,
so a PIL → IMAGE → PIL round trip gives the same pixels back (ComfyUI's own savers truncate,
which loses one level on values like 0.99999994).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from faceanchor.errors import InvalidInputError


def to_images(images: Sequence[Any]) -> Any:
    """PIL images of one size → one IMAGE batch."""
    import torch

    if not images:
        raise InvalidInputError("no images to batch")
    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    sizes = {a.shape for a in arrays}
    if len(sizes) != 1:
        raise InvalidInputError(f"images of different sizes cannot share one IMAGE batch: {sorted(sizes)}")
    return torch.from_numpy(np.stack(arrays))


def _array(image: Any) -> np.ndarray:
    arr = image.detach().cpu().float().numpy() if hasattr(image, "detach") else np.asarray(image, dtype=np.float32)
    return arr


def from_images(image: Any, what: str = "image") -> list[Any]:
    """One IMAGE (B×H×W×C, or H×W×C) → a PIL RGB image per batch entry."""
    from PIL import Image

    arr = _array(image)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[0] < 1 or arr.shape[-1] not in (1, 3, 4):
        raise InvalidInputError(f"{what}: expected an IMAGE tensor B×H×W×C (C = 3), got shape {tuple(arr.shape)}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    u8 = np.round(np.clip(np.nan_to_num(arr[..., :3]), 0.0, 1.0) * 255.0).astype(np.uint8)
    return [Image.fromarray(a, "RGB") for a in u8]


def to_mask(masks: Sequence[np.ndarray]) -> Any:
    """Arrays H×W (bool or 0–1 / 0–255) → one MASK batch B×H×W in 0–1."""
    import torch

    out = []
    for m in masks:
        a = np.asarray(m, dtype=np.float32)
        if a.max(initial=0.0) > 1.0:
            a = a / 255.0
        out.append(a)
    return torch.from_numpy(np.stack(out).astype(np.float32))


def png_bytes(image: Any) -> bytes:
    """A PIL image as lossless PNG bytes (what the engine and the server are handed)."""
    from faceanchor.imageio import encode_image

    return encode_image(image, "png")
