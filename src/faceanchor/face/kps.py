"""The InstantID keypoint control image (``draw_kps``).

Geometry of InstantID's ``draw_kps``: on black, four limbs from points 0, 1, 3, 4 to the nose
(2), each a filled ``cv2.ellipse2Poly`` polygon along the segment with half-width 4 px,
coloured like the limb's first point; the limb layer is multiplied by 0.6 (and truncated to
uint8); then five filled circles of radius 10 px in the point colours.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

#: Point colours in InsightFace keypoint order (RGB): red, green, blue, yellow, magenta.
KPS_COLORS: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
#: Limbs as (from, to) keypoint indices; every limb ends at the nose.
LIMBS: tuple[tuple[int, int], ...] = ((0, 2), (1, 2), (3, 2), (4, 2))
STICK_HALF_WIDTH = 4
POINT_RADIUS = 10
LIMB_DIM = 0.6


def draw_kps(
    image_size: tuple[int, int] | Image.Image,
    kps: np.ndarray | Sequence[Sequence[float]],
    colors: Sequence[tuple[int, int, int]] = KPS_COLORS,
) -> Image.Image:
    """Draw the keypoint control image of size ``(width, height)`` (or that of an image)."""
    import cv2

    if isinstance(image_size, Image.Image):
        image_size = image_size.size
    w, h = int(image_size[0]), int(image_size[1])
    pts = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] != 5:
        raise ValueError(f"draw_kps needs 5 keypoints, got {pts.shape[0]}")
    canvas = np.zeros((h, w, 3), dtype=np.float64)
    for a, b in LIMBS:
        xs = pts[[a, b], 0]
        ys = pts[[a, b], 1]
        length = math.hypot(xs[0] - xs[1], ys[0] - ys[1])
        angle = math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1]))
        centre = (int(np.mean(xs)), int(np.mean(ys)))
        polygon = cv2.ellipse2Poly(centre, (int(length / 2), STICK_HALF_WIDTH), int(angle), 0, 360, 1)
        canvas = cv2.fillConvexPoly(canvas, polygon, tuple(float(c) for c in colors[a]))
    out = (canvas * LIMB_DIM).astype(np.uint8)
    for i, (x, y) in enumerate(pts):
        out = cv2.circle(out, (int(x), int(y)), POINT_RADIUS, tuple(int(c) for c in colors[i]), -1)
    return Image.fromarray(out, "RGB")
