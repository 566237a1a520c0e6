"""Output sizes: explicit sizes rounded to the model grid, or from the face photo's aspect."""

from __future__ import annotations

from faceanchor.errors import InvalidInputError

#: Official InstantID demo sizing: from the face photo, min side 1024, max side 1280, multiple of 64.
SDXL_SIZING = (1024, 1280, 64)
SD15_SIZING = (512, 768, 8)


def output_size(photo_size: tuple[int, int] | None, width: int | None, height: int | None, family: str,
                native: int | None = None) -> tuple[int, int]:
    """Output (width, height): explicit values rounded down to the grid; else from the photo's aspect,
    min side 1024 (SDXL) / 512 (SD1.5), or ``native`` (the weights loader's ``default_size``) when given."""
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
