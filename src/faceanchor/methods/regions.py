"""Where each person of a several-people picture goes: boxes, their masks, keypoints fitted in.

Shared by the methods that hold several identities to regions (InstantID, the FaceID family).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from faceanchor.errors import InvalidInputError

FEATHER_PX = 3  # Gaussian radius of the inward feather of several people's regions
LAYOUTS = ("left-right",)


def layout_boxes(layout: str, n: int, width: int, height: int) -> list[list[float]]:
    """Face boxes for ``n`` people in a ``width`` x ``height`` output by ``layout``.

    ``left-right``: the output cut into ``n`` equal columns, person 1 leftmost; each face a
    square of 60% of its column's width (at most 60% of the height), centred in the column,
    its centre at 40% of the height (where a portrait's face sits)."""
    if layout not in LAYOUTS:
        raise InvalidInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if n < 1:
        raise InvalidInputError("a layout needs at least one person")
    col = width / n
    side = min(0.6 * col, 0.6 * height)
    cy = 0.4 * height
    y1 = max(0.0, cy - side / 2)
    return [[round(col * (i + 0.5) - side / 2, 2), round(y1, 2), round(col * (i + 0.5) + side / 2, 2), round(y1 + side, 2)]
            for i in range(n)]


def requested_size(request: Any, photo_size: tuple[int, int] | None, family: str, native: int | None) -> tuple[float, float]:
    """The size the request's boxes are in: its width x height as asked, else the size from the photo
    before the working-size cap."""
    from faceanchor.methods.sizing import output_size

    if request.width is not None and request.height is not None:
        return float(request.width), float(request.height)
    return tuple(float(v) for v in output_size(photo_size, request.width, request.height, family, native))  # type: ignore[return-value]


def fit_box(box: Sequence[float], asked: tuple[float, float], width: int, height: int) -> list[float]:
    """``box`` (in the pixels of the size asked for) in the pixels of the ``width`` x ``height``
    output, which grid rounding and the working-size cap may have made smaller."""
    sx, sy = width / asked[0], height / asked[1]
    if sx == 1 and sy == 1:
        return [float(v) for v in box]
    return [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]


def clip_box(box: Sequence[float], width: int, height: int, person: int) -> np.ndarray:
    """``box`` clipped to the output; refused when (almost) nothing of it is left."""
    out = np.clip(np.asarray(box, np.float64), 0, [width, height, width, height])
    if out[2] - out[0] < 8 or out[3] - out[1] < 8:
        raise InvalidInputError(f"person {person}'s box lies outside the {width}x{height} output")
    return out


def check_no_overlap(boxes: Sequence[Sequence[float]]) -> None:
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            A, B = boxes[a], boxes[b]
            if min(A[2], B[2]) > max(A[0], B[0]) and min(A[3], B[3]) > max(A[1], B[1]):
                raise InvalidInputError(f"the boxes of persons {a + 1} and {b + 1} overlap; give each person its own area")


def box_mask(box: Sequence[float], width: int, height: int, feather: bool) -> Any:
    """An ``L``-mode mask image of ``box`` (255 inside); ``feather`` softens it inwards only, so
    nothing outside the box is ever reached."""
    from PIL import Image, ImageFilter

    from faceanchor.pipelines.instantid_sdxl import face_box_mask

    hard = Image.fromarray(face_box_mask(box, width, height))
    if not feather:
        return hard
    soft = np.asarray(hard.filter(ImageFilter.GaussianBlur(FEATHER_PX)), dtype=np.float32) * (np.asarray(hard) > 0)
    return Image.fromarray(soft.astype(np.uint8))


def fit_into_box(kps: np.ndarray, face_bbox: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Keypoints moved and scaled so that their face box fills ``box`` (aspect kept, centred)."""
    fw, fh = max(face_bbox[2] - face_bbox[0], 1e-6), max(face_bbox[3] - face_bbox[1], 1e-6)
    s = min((box[2] - box[0]) / fw, (box[3] - box[1]) / fh)
    fc = np.array([(face_bbox[0] + face_bbox[2]) / 2, (face_bbox[1] + face_bbox[3]) / 2])
    bc = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    return (kps.reshape(-1, 2) - fc) * s + bc


def strengths(request: Any, placed: Any) -> tuple[float, float]:
    """A further person's (identity, adapter) strengths: its own, else the request's."""
    return (request.identity_strength if placed.identity_strength is None else placed.identity_strength,
            request.adapter_strength if placed.adapter_strength is None else placed.adapter_strength)
