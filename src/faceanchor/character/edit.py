"""Region edits on a loaded engine: re-render the face (mode ``face``), regenerate the rest
(mode ``background``), and the face-detail pass.

Every function takes the engine as an object (duck-typed :class:`faceanchor.engine.Engine`:
``identity``, ``analyzer``, ``score``, ``_base``, ``_set_scheduler``, ``_generators``,
``_lock``) so this package sits below the engine and the engine can call the face-detail pass.

Pixels outside the edited region are never touched: the model's output is composited back in
pixel space with an alpha that is exactly 0 outside the region (``face``: the crop around the
face; ``background``: everything but the person), so those pixels keep their exact values.

* ``face``: a square crop around the face (box × ``expand``), upscaled to the render size,
  InstantID image-to-image on it (keypoints mapped into the crop, identity confined to the
  face box), downscaled and pasted back with an alpha feathered to 0 at the crop's border.
* ``background``: the person (mediapipe selfie segmentation, bundled in the wheel; or a
  dilated face box) is kept; the rest is inpainted (latent blending) with the prompt and the
  character's identity, at the target's size rounded to the model grid and scaled down to the
  method's working-size cap, then scaled back up and composited onto the full-size target.
* face-detail pass: when the face of an output is small (its crop would be upscaled at
  least ``DETAIL_MIN_UPSCALE``×), re-render it as in ``face`` and report the identity score
  before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from faceanchor.cancel import checkpoint
from faceanchor.errors import InvalidInputError, NoFaceError
from faceanchor.methods.sizing import cap_side, cap_size
from faceanchor.types import CharacterEngine, GeneratedImage, GenerationRequest, Identity

#: Square side the face crop is re-rendered at (SDXL), and for the tiny test weights.
RENDER_SIZE = 1024  # tiny weights render at 128 (see faceanchor.pipelines.loading)
DETAIL_MIN_UPSCALE = 1.33
COMPOSITE_ROWS = 256  # rows blended per cancel check
FACE_EXPAND = 1.8  # crop side = face box side x this
DEFAULT_FACE_STRENGTH = 0.55
DEFAULT_BACKGROUND_STRENGTH = 1.0
EDIT_MODES = ("background", "face")
MASK_SOURCES = ("auto", "segmentation", "face-box")


@dataclass
class EditResult:
    """One edited image and what was edited."""

    image: Image.Image
    mode: str
    mask: Image.Image  # "L", 255 where pixels may have changed, 0 where they are exactly kept
    box: tuple[int, int, int, int] | None = None  # face crop (mode face)
    seed: int = 0
    identity_score: float | None = None
    identity_reason: str | None = None
    identity_score_before: float | None = None
    identity_reason_before: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- geometry


def render_size(engine: CharacterEngine) -> int:
    """The side a face crop is re-rendered at: the engine's (its weights loader's) render size."""
    return int(getattr(engine, "render_size", RENDER_SIZE))


def grid(engine: CharacterEngine) -> int:
    """Edited images are processed at their size rounded down to this (SDXL's 64 px grid)."""
    return 64


def work_pixels(engine: CharacterEngine, request: GenerationRequest) -> int | None:
    """The engine's working-size cap for ``request`` (pixels; None: the engine sets none)."""
    fn = getattr(engine, "work_pixels", None)
    return int(fn(request)) if fn is not None else None


def map_points(pts: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Points of a ``src``-sized photo on a ``dst`` canvas filled by a centre crop (the engine's fit)."""
    sw, sh = src
    dw, dh = dst
    s = max(dw / sw, dh / sh)
    dx, dy = (sw * s - dw) / 2.0, (sh * s - dh) / 2.0
    return np.asarray(pts, np.float64).reshape(-1, 2) * s - np.array([dx, dy])


def kps_box(kps: np.ndarray) -> np.ndarray:
    """A face box from five keypoints (as the engine's precomputed-keypoint path)."""
    k = np.asarray(kps, np.float64).reshape(5, 2)
    lo, hi = k.min(0), k.max(0)
    pad = (hi - lo) * 0.6
    return np.concatenate([lo - pad, hi + pad])


def crop_box(bbox: np.ndarray, size: tuple[int, int], expand: float = FACE_EXPAND) -> tuple[int, int, int, int]:
    """A square box around ``bbox`` (side = longer side × ``expand``), shifted to fit the image."""
    w, h = size
    x1, y1, x2, y2 = [float(v) for v in bbox]
    side = max(x2 - x1, y2 - y1) * expand
    side = int(round(min(side, w, h)))
    side = max(side, 8)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(round(min(max(cx - side / 2, 0), w - side)))
    top = int(round(min(max(cy - side / 2, 0), h - side)))
    return left, top, left + side, top + side


def feather_alpha(size: tuple[int, int], border: float = 0.12) -> np.ndarray:
    """(h, w) alpha: 1 in an inner ellipse, falling smoothly to exactly 0 at the crop's edge."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    nx = (xx + 0.5 - w / 2) / (w / 2)
    ny = (yy + 0.5 - h / 2) / (h / 2)
    r = np.sqrt(nx**2 + ny**2)  # 1 at the edge midpoints
    inner = 1.0 - 2 * border
    t = np.clip((0.94 - r) / max(0.94 - inner, 1e-6), 0.0, 1.0)
    return t * t * (3 - 2 * t)  # smoothstep


def composite(base: Image.Image, over: Image.Image, alpha: np.ndarray, offset: tuple[int, int] = (0, 0)) -> Image.Image:
    """``base`` with ``over`` blended in at ``offset`` by ``alpha``; where alpha is 0 base is exact."""
    out = np.asarray(base.convert("RGB"), dtype=np.uint8).copy()
    ox, oy = offset
    ov_all = np.asarray(over.convert("RGB"), dtype=np.uint8)
    h, w = ov_all.shape[:2]
    for top in range(0, h, COMPOSITE_ROWS):  # in bands of rows: a cancel lands between two
        checkpoint("compositing")
        rows = slice(top, min(h, top + COMPOSITE_ROWS))
        ov = ov_all[rows].astype(np.float64)
        region = out[oy + rows.start : oy + rows.stop, ox : ox + w].astype(np.float64)
        a = alpha[rows][..., None]
        blended = np.rint(region + (ov - region) * a)
        out[oy + rows.start : oy + rows.stop, ox : ox + w] = np.where(a > 0, blended, region).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def person_mask(image: Image.Image, threshold: float = 0.5) -> np.ndarray | None:
    """Boolean (h, w) person mask from mediapipe's selfie segmentation; ``None`` if it finds nobody."""
    import mediapipe as mp

    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as seg:
        res = seg.process(rgb)
    m = getattr(res, "segmentation_mask", None)
    if m is None:
        return None
    mask = np.asarray(m) >= threshold
    return mask if mask.mean() > 0.01 else None


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` grown by ``px`` pixels (a square max filter, as PIL's MaxFilter; OpenCV is ~100x faster)."""
    import cv2

    if px <= 0:
        return mask
    kernel = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE) > 0


# --------------------------------------------------------------------------- model calls


def rerender_face(
    engine: CharacterEngine,
    request: GenerationRequest,
    ident: Any,
    image: Image.Image,
    face_kps: np.ndarray,
    face_bbox: np.ndarray,
    *,
    strength: float = DEFAULT_FACE_STRENGTH,
    seed: int = 0,
    expand: float = FACE_EXPAND,
    size: int | None = None,
    on_step: Any = None,
    cancel: Any = None,
) -> tuple[Image.Image, tuple[int, int, int, int], np.ndarray]:
    """Crop around the face, upscale, image-to-image, paste back feathered.

    Returns the new image, the crop box and the full-size alpha (0 outside the crop).
    """
    size = cap_side(size or render_size(engine), work_pixels(engine, request), grid(engine))
    box = crop_box(face_bbox, image.size, expand)
    x1, y1, x2, y2 = box
    side = x2 - x1
    crop = image.crop(box).resize((size, size), Image.LANCZOS)
    scale = size / side
    kps_c = (np.asarray(face_kps, np.float64) - [x1, y1]) * scale
    bbox_c = (np.asarray(face_bbox, np.float64).reshape(2, 2) - [x1, y1]).reshape(4) * scale
    rendered = engine.render(request, ident, crop, kps_c, strength=strength, seed=seed, face_box=bbox_c,
                       on_step=on_step, cancel=cancel)
    back = rendered.resize((side, side), Image.LANCZOS)
    alpha = feather_alpha((side, side))
    out = composite(image, back, alpha, (x1, y1))
    full = np.zeros((image.height, image.width), np.float64)
    full[y1:y2, x1:x2] = alpha
    return out, box, full


def _largest_face(engine: CharacterEngine, ident: Any, image: Image.Image, what: str) -> Any:
    an = engine.analyzer(ident.space)
    faces = an.detect(image)
    if not faces:
        raise NoFaceError(f"no face found in {what} (also tried other scales)")
    return faces[0]


def edit_face(
    engine: CharacterEngine,
    request: GenerationRequest,
    target: Image.Image,
    *,
    strength: float = DEFAULT_FACE_STRENGTH,
    seed: int | None = None,
    on_step: Any = None,
    cancel: Any = None,
) -> EditResult:
    """Mode ``face``: the target's face re-rendered with the request's identity."""
    with engine.lock:
        ident = engine.identity(request)
        face = _largest_face(engine, ident, target, "the target image")
        seed = _seed(request, seed)
        before = engine.score([target], ident)[0]
        out, box, alpha = rerender_face(engine, request, ident, target, face.kps, face.bbox, strength=strength,
                                        seed=seed, on_step=on_step, cancel=cancel)
        after = engine.score([out], ident)[0]
    mask = Image.fromarray(((alpha > 0) * 255).astype(np.uint8), "L")
    return EditResult(out, "face", mask, box, seed, after[0], after[1], before[0], before[1],
                      {"strength": strength, "crop_box": list(box), "face_bbox": [round(float(v), 2) for v in face.bbox]})


def edit_background(
    engine: CharacterEngine,
    request: GenerationRequest,
    target: Image.Image,
    *,
    strength: float = DEFAULT_BACKGROUND_STRENGTH,
    mask_source: str = "auto",
    dilate_px: int = 4,
    seed: int | None = None,
    on_step: Any = None,
    cancel: Any = None,
) -> EditResult:
    """Mode ``background``: keep the person (segmentation or dilated face box), regenerate the rest."""
    if mask_source not in MASK_SOURCES:
        raise InvalidInputError(f"mask_source {mask_source!r} is unknown; use {', '.join(MASK_SOURCES)}")
    with engine.lock:
        ident = engine.identity(request)
        an = engine.analyzer(ident.space)
        faces = an.detect(target)
        face = faces[0] if faces else None
        keep = None
        used = mask_source
        if mask_source in ("auto", "segmentation"):
            keep = person_mask(target)
            used = "segmentation"
            if keep is None and mask_source == "segmentation":
                raise NoFaceError("the person segmentation found nobody in the target image")
        if keep is None:
            if face is None:
                raise NoFaceError("no face found in the target image to keep (also tried other scales)")
            box = np.asarray(crop_box(face.bbox, target.size, 2.2), np.float64)
            keep = np.zeros((target.height, target.width), bool)
            x1, y1, x2, y2 = box.astype(int)
            keep[y1:y2, x1:x2] = True
            # the body below the face box
            cx1 = max(0, int(x1 - (x2 - x1) * 0.3))
            cx2 = min(target.width, int(x2 + (x2 - x1) * 0.3))
            keep[y2:, cx1:cx2] = True
            used = "face-box"
        checkpoint("the edit mask")
        keep = dilate(keep, dilate_px)
        regen = ~keep
        if not regen.any():
            raise InvalidInputError("the person fills the whole image: there is no background to edit")
        g = grid(engine)
        # work at the target's size on the grid, scaled down to the working-size cap; the result is
        # scaled back up and composited onto the full-resolution target
        W, H = cap_size(target.width, target.height, work_pixels(engine, request), g)
        work = target.resize((W, H), Image.LANCZOS)
        sx, sy = W / target.width, H / target.height
        if face is not None:
            kps = np.asarray(face.kps, np.float64) * [sx, sy]
            fbox = np.asarray(face.bbox, np.float64) * [sx, sy, sx, sy]
        elif ident.kps is not None and ident.image_size is not None:
            kps = map_points(ident.kps, ident.image_size, (W, H))
            fbox = kps_box(kps)
        else:
            raise NoFaceError("no face found in the target image for the keypoint control")
        work_mask = np.asarray(Image.fromarray(regen.astype(np.uint8) * 255).resize((W, H), Image.NEAREST)) > 127
        seed = _seed(request, seed)
        before = engine.score([target], ident)[0]
        rendered = engine.render(request, ident, work, kps, strength=strength, seed=seed, mask=work_mask,
                           face_box=fbox, on_step=on_step, cancel=cancel)
        checkpoint("the edit's compositing")
        back = rendered.resize(target.size, Image.LANCZOS)
        # soft only inside the edited region: blur the regen mask, then zero it on the kept pixels
        soft = np.asarray(Image.fromarray(regen.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(2)), np.float64) / 255
        alpha = np.where(regen, np.maximum(soft, 0.5), 0.0)
        out = composite(target, back, alpha)
        after = engine.score([out], ident)[0]
    mask = Image.fromarray((regen * 255).astype(np.uint8), "L")
    return EditResult(out, "background", mask, None, seed, after[0], after[1], before[0], before[1],
                      {"strength": strength, "mask_source": used, "edited_fraction": round(float(regen.mean()), 4)})


def _seed(request: GenerationRequest, seed: int | None) -> int:
    import secrets

    if seed is not None and seed >= 0:
        return int(seed)
    return request.seed if request.seed >= 0 else secrets.randbelow(2**32)


# --------------------------------------------------------------------------- face-detail pass


def face_detail_pass(
    engine: CharacterEngine,
    request: GenerationRequest,
    ident: Any,
    outputs: list[GeneratedImage],
    *,
    strength: float = DEFAULT_FACE_STRENGTH,
    cancel: Any = None,
) -> tuple[list[GeneratedImage], list[dict[str, Any]]]:
    """Re-render small faces of ``outputs`` (call with the engine's lock held, after scoring).

    The face is the one found in the output, or, when none is found (a weak model), where the
    keypoint control put it. Each output gets a report: applied or why not, the crop box and
    the identity score before and after.
    """
    why = engine.can_render(request.method)
    if why:
        why = f"the face-detail pass re-renders the face: {why}"
        return list(outputs), [{"applied": False, "reason": why} for _ in outputs]
    size = cap_side(render_size(engine), work_pixels(engine, request), grid(engine))
    an = engine.analyzer(ident.space)
    new: list[GeneratedImage] = []
    report: list[dict[str, Any]] = []
    for out in outputs:
        img = out.image
        faces = an.detect(img)
        if faces:
            kps, bbox, found = faces[0].kps, faces[0].bbox, "detected"
        elif ident.kps is not None:
            kps = map_points(ident.kps, ident.image_size or img.size, img.size)
            bbox = (np.asarray(ident.bbox, np.float64).reshape(2, 2) if ident.bbox is not None else None)
            bbox = map_points(bbox, ident.image_size or img.size, img.size).reshape(4) if bbox is not None else kps_box(kps)
            found = "control keypoints"
        else:
            new.append(out)
            report.append({"applied": False, "reason": "no face found in the output and no reference keypoints"})
            continue
        box = crop_box(bbox, img.size)
        side = box[2] - box[0]
        entry: dict[str, Any] = {"face_from": found, "crop_box": list(box), "score_before": out.identity_score,
                                 "reason_before": out.identity_reason}
        if side * DETAIL_MIN_UPSCALE > size:
            entry.update(applied=False, reason=f"the face crop is {side} px, not small against the {size} px render size")
            new.append(out)
            report.append(entry)
            continue
        image, _, _ = rerender_face(engine, request, ident, img, kps, bbox, strength=strength, seed=out.seed,
                                    size=size, cancel=cancel)
        score, why = engine.score([image], ident)[0]
        entry.update(applied=True, score_after=score, reason_after=why, render_size=size)
        new.append(GeneratedImage(image, out.seed, score, why))
        report.append(entry)
    return new, report
