"""Canny edge control image (OpenCV), thresholds 100/200 as the official InstantID demo."""

from __future__ import annotations

from typing import Any

import numpy as np

from faceanchor.errors import InvalidInputError


def to_rgb_array(image: Any) -> np.ndarray:
    """A PIL image or an ``HxWx3`` / ``HxW`` uint8 array → contiguous ``HxWx3`` uint8 RGB."""
    from PIL import Image

    if isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise InvalidInputError(f"a control image source must be HxWx3 RGB; got shape {arr.shape}")
        arr = arr[:, :, :3]
        if arr.dtype != np.uint8:
            raise InvalidInputError(f"a control image source must be uint8; got {arr.dtype}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise InvalidInputError(f"a control image source must be at least 2x2 pixels; got {arr.shape[1]}x{arr.shape[0]}")
    return np.ascontiguousarray(arr)


def canny_image(image: Any, low: int = 100, high: int = 200) -> "Image.Image":
    """Edges of ``image`` as a 3-channel black/white PIL image of the same size.

    Like the official demo, Canny runs on the colour image (OpenCV takes the strongest
    gradient over the channels), then the single edge map is repeated into RGB.
    """
    import cv2
    from PIL import Image

    if not (0 <= low <= high):
        raise InvalidInputError(f"canny thresholds must satisfy 0 <= low <= high; got {low}, {high}")
    rgb = to_rgb_array(image)
    edges = cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), low, high)
    return Image.fromarray(np.repeat(edges[:, :, None], 3, axis=2), "RGB")
