"""The 4-in-1 ID photo: front, left 45°, right 45° and smiling, composed into one 2×2 sheet.

The reference is analysed once (or its stored embedding and keypoints are used). Each view is
one engine generation from that embedding with its own keypoint control image: the reference
keypoints are fitted with the 3D mean face (:mod:`faceanchor.face.pose3d`), set upright and
frontal, turned to the view's yaw and framed on the view's canvas, so IdentityNet is asked for
a turned face instead of the reference's pose. Prompts ask for a neutral background and even
light. ``left`` means the face turns toward the image's left (yaw -45°), ``right`` toward
its right (+45°).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from faceanchor.errors import InvalidInputError
from faceanchor.methods.sizing import cap_size
from faceanchor.types import CharacterEngine, GenerationRequest, ProgressEvent

#: (name, yaw in degrees, prompt words) in sheet order: row 1 front, left; row 2 right, smiling.
VIEWS: tuple[tuple[str, float, str], ...] = (
    ("front", 0.0, "front view, neutral expression"),
    ("left", -45.0, "head turned 45 degrees left"),
    ("right", 45.0, "head turned 45 degrees right"),
    ("smiling", 0.0, "front view, smiling"),
)
ID_PROMPT = "ID photo, {view}, plain light grey background, soft even lighting{extra}"
ID_NEGATIVE = "harsh shadows, dramatic light, busy background, text, watermark, sunglasses, hat, blurry, cropped head"
DEFAULT_VIEW_SIZE = (896, 1152)
SHEET_BACKGROUND = (236, 236, 236)


@dataclass
class IdPhotoView:
    name: str
    yaw: float
    image: Image.Image
    seed: int
    kps: list[list[float]]
    identity_score: float | None = None
    identity_reason: str | None = None
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # where the view sits on the sheet

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.name, "yaw": self.yaw, "seed": self.seed, "kps": self.kps, "box": list(self.box),
            "width": self.image.width, "height": self.image.height,
            "identity_score": self.identity_score, "identity_reason": self.identity_reason,
        }


@dataclass
class IdPhotoResult:
    sheet: Image.Image
    views: list[IdPhotoView]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "id-photo", "layout": "2x2", "order": [v.name for v in self.views], "seed": self.seed,
            "views": [v.to_dict() for v in self.views], "params": self.params,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def view_keypoints(kps: np.ndarray, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Each view's keypoints on a ``(width, height)`` canvas, from the reference keypoints."""
    from faceanchor.face.pose3d import posed_kps

    return {name: posed_kps(kps, yaw, size) for name, yaw, _ in VIEWS}


def compose_sheet(images: list[Image.Image], gutter: int = 8, background: tuple[int, int, int] = SHEET_BACKGROUND) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """Four equal images in a 2×2 grid (row-major) with a ``gutter`` around and between them."""
    if len(images) != 4:
        raise InvalidInputError(f"an ID-photo sheet takes 4 views, got {len(images)}")
    w, h = images[0].size
    if any(im.size != (w, h) for im in images):
        raise InvalidInputError("the views of a sheet must have the same size")
    sheet = Image.new("RGB", (2 * w + 3 * gutter, 2 * h + 3 * gutter), background)
    boxes = []
    for i, im in enumerate(images):
        r, c = divmod(i, 2)
        x, y = gutter + c * (w + gutter), gutter + r * (h + gutter)
        sheet.paste(im.convert("RGB"), (x, y))
        boxes.append((x, y, x + w, y + h))
    return sheet, boxes


def id_photo(
    engine: CharacterEngine,
    request: GenerationRequest,
    *,
    gutter: int = 8,
    on_progress: Any = None,
    cancel: Any = None,
) -> IdPhotoResult:
    """Generate the four views for the identity of ``request`` (photo or stored embedding) and the sheet.

    ``request.width``/``height`` size each view (default 896×1152); ``request.prompt`` is
    appended to the ID-photo prompt; ``seed`` (-1 random) is shared by the views.
    """
    import secrets

    if "pose_image" not in engine.method(request.method).honoured():
        raise InvalidInputError(f"the ID photo turns the face by keypoint control, which {request.method} has not; use instantid")
    notify = on_progress or (lambda e: None)
    t0 = time.perf_counter()
    with engine.lock:
        ident = engine.identity(request)  # the photo is analysed once, here (or not at all)
    t_face = time.perf_counter() - t0
    if ident.kps is None:
        raise InvalidInputError("the ID photo needs face keypoints: give a face photo or face_kps")
    size = (request.width or DEFAULT_VIEW_SIZE[0], request.height or DEFAULT_VIEW_SIZE[1])
    cap = getattr(engine, "work_pixels", None)
    size = cap_size(size[0], size[1], cap(request) if cap is not None else None, 64)  # within the working-size cap
    seed = request.seed if request.seed >= 0 else secrets.randbelow(2**32)
    emb = ident.embedding if ident.embedding.ndim == 1 else ident.reference
    kps_by_view = view_keypoints(ident.kps, size)
    views: list[IdPhotoView] = []
    timings: dict[str, float] = {"face": t_face}
    extra = f", {request.prompt.strip()}" if request.prompt.strip() else ""
    for i, (name, yaw, words) in enumerate(VIEWS):
        notify(ProgressEvent(stage="view", step=i + 1, total=len(VIEWS), message=f"view {name} ({i + 1}/{len(VIEWS)})"))
        negative = ", ".join(p for p in (ID_NEGATIVE, request.negative_prompt.strip()) if p)
        view_req = request.model_copy(update=dict(
            face_image=None, face_images=[], pose_image=None, face_embedding=[float(v) for v in emb],
            face_embedding_space=ident.space, face_kps=kps_by_view[name].tolist(), face_image_size=size, face_bbox=None,
            prompt=ID_PROMPT.format(view=words, extra=extra), negative_prompt=negative,
            width=size[0], height=size[1], seed=seed, samples=1, best_of=1, face_detail=False,
            controlnet_selection=[],
        ))
        res = engine.generate(view_req, on_progress, cancel)
        for k, v in res.timings.items():
            if k not in ("steps_per_second", "peak_gpu_mb"):
                timings[k] = timings.get(k, 0.0) + v
        out = res.images[0]
        views.append(IdPhotoView(name, yaw, out.image, out.seed, [[round(float(x), 2) for x in p] for p in kps_by_view[name]],
                                 out.identity_score, out.identity_reason))
    sheet, boxes = compose_sheet([v.image for v in views], gutter)
    for v, b in zip(views, boxes):
        v.box = b
    timings["total"] = time.perf_counter() - t0
    params = request.public_params()
    params.update(face_space=ident.space, view_width=size[0], view_height=size[1], gutter=gutter)
    return IdPhotoResult(sheet, views, seed, params, timings)
