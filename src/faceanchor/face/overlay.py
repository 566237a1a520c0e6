"""A human-readable overlay for ``faceanchor faces --draw``: boxes, indices and keypoints."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from faceanchor.face.kps import KPS_COLORS
from faceanchor.types import Face


def draw_overlay(image: Image.Image, faces: Sequence[Face]) -> Image.Image:
    """A copy of ``image`` with every face's box, its index (largest first) and five keypoints."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    lw = max(2, round(min(out.size) / 300))
    r = max(2, round(min(out.size) / 200))
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = (float(v) for v in f.bbox)
        d.rectangle([x1, y1, x2, y2], outline=(0, 255, 0), width=lw)
        d.text((x1 + lw + 1, max(0.0, y1 - 12 - lw)), f"{i} ({f.det_score:.2f})", fill=(0, 255, 0))
        for (x, y), c in zip(np.asarray(f.kps), KPS_COLORS):
            d.ellipse([x - r, y - r, x + r, y + r], fill=c)
    return out
