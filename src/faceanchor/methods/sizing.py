"""Output sizes: explicit sizes rounded to the model grid, or from the face photo's aspect; and the
working-size cap every stage that scales with its input works within (:func:`cap_size`)."""

from __future__ import annotations

import math

from faceanchor.errors import InvalidInputError

#: Official InstantID demo sizing: from the face photo, min side 1024, max side 1280, multiple of 64.
SDXL_SIZING = (1024, 1280, 64)
SD15_SIZING = (512, 768, 8)

#: Working-size cap per base family, in megapixels of a full-size model: SDXL-class 1.31 MP
#: (1280 x 1024, the largest size the official demo sizing gives), SD1.5 0.4 MP (512 x 768).
#: Tiny test weights scale it by their loader's ``work_scale``.
WORK_MEGAPIXELS = {"sdxl": 1.31, "sd15": 0.4, "flux": 1.31}


def grid_step(family: str) -> int:
    """The pixel grid sizes of ``family`` are rounded to (64 SDXL, 8 SD1.5)."""
    return (SDXL_SIZING if family != "sd15" else SD15_SIZING)[2]


def cap_size(width: int, height: int, max_pixels: int | None, step: int = 64) -> tuple[int, int]:
    """``(width, height)`` on the ``step`` grid (rounded down), scaled down first (aspect kept) when
    it has more than ``max_pixels`` pixels; never below one grid cell."""
    s = 1.0
    if max_pixels is not None and width * height > max_pixels:
        s = math.sqrt(max_pixels / (width * height))
    w = max(step, int(width * s) // step * step)
    h = max(step, int(height * s) // step * step)
    return w, h


def cap_side(side: int, max_pixels: int | None, step: int = 64) -> int:
    """A square side within ``max_pixels`` (for square crops re-rendered at ``side``)."""
    return cap_size(side, side, max_pixels, step)[0]


def output_size(photo_size: tuple[int, int] | None, width: int | None, height: int | None, family: str,
                native: int | None = None, max_pixels: int | None = None) -> tuple[int, int]:
    """Output (width, height): explicit values rounded down to the grid; else from the photo's aspect,
    min side 1024 (SDXL) / 512 (SD1.5), or ``native`` (the weights loader's ``default_size``) when given.
    Either way scaled down to at most ``max_pixels`` (the method's working-size cap) when given."""
    w, h = _output_size(photo_size, width, height, family, native)
    step = grid_step(family)
    return cap_size(w, h, max_pixels, step) if max_pixels is not None and w * h > max_pixels else (w, h)


def _output_size(photo_size: tuple[int, int] | None, width: int | None, height: int | None, family: str,
                 native: int | None) -> tuple[int, int]:
    lo, hi, step = SDXL_SIZING if family == "sdxl" else SD15_SIZING
    if native is not None:
        lo, hi = native, native * 3 // 2
    if width is not None or height is not None:
        if width is None or height is None:
            pw, ph = photo_size or (1, 1)
            if width is None:
                width = int(round(height * pw / ph))
            else:
                height = int(round(width * ph / pw))
        w, h = (int(width) // step) * step, (int(height) // step) * step
        if w < step or h < step:
            raise InvalidInputError(f"width and height must be at least {step} pixels")
        return w, h
    if photo_size is None:
        return lo, lo
    pw, ph = photo_size
    r = lo / min(pw, ph)
    w, h = pw * r, ph * r
    if max(w, h) > hi:
        r = hi / max(w, h)
        w, h = w * r, h * r
    return max(step, round(w) // step * step), max(step, round(h) // step * step)
