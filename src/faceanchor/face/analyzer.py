"""``FaceAnalyzer``: one pack's detector + encoder, composed like InsightFace's FaceAnalysis.

``FaceAnalyzer(settings, pack=...)`` only records what to load; ``prepare()`` finds the pack
and loads its models; ``get(image)`` returns every face, largest first, each with its
embedding (raw) and quality report. When a detector finds nothing it tries again at other
scales before giving up: SCRFD at det sizes 640 → 320 → 160, then on a padded image, then
(dynamic-input models) at twice the det size; dlib on a padded, downscaled image (faces filling
the frame), then with one more level of upsampling (small faces, images up to 1.5 MP).

With an InsightFace pack (``antelopev2``, ``buffalo_l``) and the default det size 640, the
faces are InsightFace's own: ``get(rgb, order="score")`` equals
``FaceAnalysis(name=pack).get(bgr)`` after ``prepare(det_size=(640, 640))`` face for face, in
the same order, to the bit (boxes, keypoints, scores, ``embedding``, ``normed_embedding``;
``tests/face/test_insightface_oracle.py``). The documented differences: the default order is
largest box first (``get(rgb)[0]`` is the face official InstantID code picks with
``sorted(faces, key=area)[-1]``; ``order="score"`` gives InsightFace's list, whose ``[0]`` is
the face official IP-Adapter-FaceID code takes); the retries above run only when the first
pass finds no face (InsightFace then returns ``[]``); ``max_num`` keeps the first faces in the
chosen order (InsightFace ranks by a centre-weighted area); the image is RGB, not BGR.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from faceanchor.cancel import checkpoint
from faceanchor.errors import InvalidInputError, NoFaceError
from faceanchor.face.choose import choose_face, sort_faces
from faceanchor.face.quality import assess_quality
from faceanchor.face.similarity import InSpace, space_info
from faceanchor.imageio import ImageLimits, load_image
from faceanchor.types import Face

PAD_FRACTION = 0.3  # border added on every side for faces that fill the frame
DLIB_MAX_SIDE = 1280  # dlib's first pass runs on a copy no longer than this


def _pad(rgb: np.ndarray, frac: float) -> tuple[np.ndarray, int, int]:
    h, w = rgb.shape[:2]
    py, px = int(round(h * frac)), int(round(w * frac))
    out = np.zeros((h + 2 * py, w + 2 * px, 3), dtype=np.uint8)
    out[py : py + h, px : px + w] = rgb
    return out, px, py


def _shift(faces: list[Face], dx: float, dy: float, scale: float, w: int, h: int) -> list[Face]:
    """Map faces found on a padded/resized copy back to the original image.

    Boxes are not clipped (as the detector's own; a face at the border may reach past it);
    a face whose box shows less than 2 px of the original image is dropped.
    """
    out = []
    for f in faces:
        bbox = (f.bbox / scale - np.array([dx, dy, dx, dy], dtype=np.float32)).astype(np.float32)
        kps = f.kps / scale - np.array([dx, dy], dtype=np.float32)
        seen = np.clip(bbox, 0, [w, h, w, h])
        if seen[2] - seen[0] < 2 or seen[3] - seen[1] < 2:
            continue
        out.append(f.with_(bbox=bbox, kps=kps))
    return out


ORDERS = ("size", "score")


def _each(fn: Any, items: list[Any], where: str = "face detection") -> list[Any]:
    """``fn`` of every item, a cancel checkpoint between two of them."""
    out = []
    for i, item in enumerate(items):
        if i:
            checkpoint(where)
        out.append(fn(item))
    return out


def _ordered(faces: list[Face], order: str) -> list[Face]:
    """``size``: largest box first (:func:`sort_faces`); ``score``: highest detection score
    first, equal scores in the detector's order (InsightFace's ``FaceAnalysis.get`` order)."""
    if order == "size":
        return sort_faces(faces)
    if order == "score":
        return sorted(faces, key=lambda f: -f.det_score)
    raise InvalidInputError(f"face order {order!r} is unknown; use {' or '.join(ORDERS)}")


class FaceAnalyzer(InSpace):
    """Detect, embed and assess faces with one face pack.

    ``pack``: ``dlib`` (default from ``settings.face_pack``), ``antelopev2``, ``buffalo_l`` or
    the name of any directory holding an SCRFD + ArcFace pair. ``detector``: ``auto`` (HOG
    for dlib, SCRFD for ONNX packs), ``hog`` or ``cnn`` (dlib's MMOD).
    """

    def __init__(
        self,
        settings: Any,
        pack: str | None = None,
        *,
        detector: str = "auto",
        det_size: int | None = None,
        det_thresh: float = 0.5,
        providers: list[str] | None = None,
        retry_scales: bool = True,
    ):
        self.settings = settings
        self.pack = pack or getattr(settings, "face_pack", "dlib") or "dlib"
        if detector not in ("auto", "hog", "cnn", "scrfd"):
            raise InvalidInputError(f"detector {detector!r} is unknown; use auto, hog, cnn or scrfd")
        if self.pack == "dlib" and detector == "scrfd":
            raise InvalidInputError("the dlib pack has no SCRFD detector; use --detector hog or cnn")
        if self.pack != "dlib" and detector in ("hog", "cnn"):
            raise InvalidInputError(f"the {self.pack} pack detects with SCRFD; --detector {detector} is for the dlib pack")
        self.detector_kind = ("hog" if self.pack == "dlib" else "scrfd") if detector == "auto" else detector
        self.det_size = int(det_size or getattr(settings, "det_size", 640))
        self.det_thresh = det_thresh
        if providers is None:
            from faceanchor.face.providers import onnx_providers

            providers = onnx_providers(getattr(settings, "face_device", "auto"))
        self.providers = providers
        self.retry_scales = retry_scales
        self.limits = ImageLimits.from_settings(settings) if hasattr(settings, "max_image_bytes") else ImageLimits()
        self.detector: Any = None
        self.encoder: Any = None
        self.model_files: dict[str, str] = {}

    # ------------------------------------------------------------------ loading

    @property
    def prepared(self) -> bool:
        return self.encoder is not None

    def prepare(self) -> "FaceAnalyzer":
        """Find the pack and load its models (idempotent). Raises ModelNotFoundError."""
        if self.prepared:
            return self
        if self.pack == "dlib":
            from faceanchor.face.detect_dlib import DlibDetector
            from faceanchor.face.encode_dlib import DlibEncoder
            from faceanchor.face.packs import find_dlib_pack

            p = find_dlib_pack(self.settings, need_cnn=self.detector_kind == "cnn")
            self.detector = DlibDetector(p.landmarks, mode=self.detector_kind, cnn_path=p.cnn).prepare()
            self.encoder = DlibEncoder(p.landmarks, p.recognition).prepare()
            self.model_files = {"detector": self.detector_kind, "landmarks": str(p.landmarks), "recognizer": str(p.recognition)}
        elif self.pack == "facexlib":
            from faceanchor.face.detect_scrfd import ScrfdDetector
            from faceanchor.face.encode_facexlib import FacexlibArcFaceEncoder
            from faceanchor.face.packs import find_facexlib_pack

            det_path, det_sess, rec_path = find_facexlib_pack(self.settings)
            self.detector = ScrfdDetector(det_path, det_size=self.det_size, det_thresh=self.det_thresh, providers=self.providers, session=det_sess)
            self.encoder = FacexlibArcFaceEncoder(rec_path).prepare()
            self.model_files = {"detector": str(det_path), "recognizer": str(rec_path)}
        else:
            from faceanchor.face.detect_scrfd import ScrfdDetector
            from faceanchor.face.encode_arcface import ArcFaceEncoder
            from faceanchor.face.packs import find_insightface_pack, open_onnx_pack

            files = find_insightface_pack(self.settings, self.pack)
            det_path, det_sess, rec_path, rec_sess = open_onnx_pack(files, self.providers)
            self.detector = ScrfdDetector(det_path, det_size=self.det_size, det_thresh=self.det_thresh, providers=self.providers, session=det_sess)
            self.encoder = ArcFaceEncoder(rec_path, space=self.pack, providers=self.providers, session=rec_sess)
            from faceanchor.face.encode_arcface import graph_normalises_itself

            if graph_normalises_itself(rec_path):
                self.encoder.input_mean, self.encoder.input_std = 0.0, 1.0
            self.encoder.prepare()
            self.model_files = {"detector": str(det_path), "recognizer": str(rec_path)}
        return self

    # ------------------------------------------------------------------ facts

    @property
    def space(self) -> str:
        return "dlib" if self.pack == "dlib" else self.pack

    @property
    def dim(self) -> int:
        if self.encoder is not None:
            return int(self.encoder.dim)
        return space_info(self.space).dim

    # ------------------------------------------------------------------ work

    def load(self, source: Any, name: str | None = None) -> Image.Image:
        """Decode an untrusted image with the settings' limits."""
        return load_image(source, self.limits, name=name)

    def _rgb(self, image: Any, name: str | None = None) -> np.ndarray:
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8 and image.shape[2] == 3:
            return np.ascontiguousarray(image)
        return np.asarray(self.load(image, name=name), dtype=np.uint8)

    def _attempts(self, rgb: np.ndarray) -> list[tuple[str, Any]]:
        h, w = rgb.shape[:2]
        if self.detector_kind == "scrfd":
            sizes = [self.det_size] + [s for s in (320, 160) if s < self.det_size]
            tries: list[tuple[str, Any]] = [("size", s) for s in sizes]
            tries.append(("pad", self.det_size))
            if self.detector.fixed_input_size is None and max(h, w) > self.det_size:
                tries.append(("size", min(2 * self.det_size, 1280 if max(h, w) <= 2560 else 1920)))
            return tries
        up = 0 if self.detector_kind == "cnn" and h * w > 1_000_000 else 1
        tries = [("up", up), ("pad", 640)]
        if h * w <= 1_500_000:
            tries.append(("up", up + 1))
        return tries

    def detect(self, image: Any, name: str | None = None, order: str = "size", max_attempts: int | None = None) -> list[Face]:
        """Faces (box, keypoints, score; no embedding), largest first (``order="score"``:
        highest score first, InsightFace's order); [] if none at any scale.

        ``max_attempts`` bounds the retry ladder (scoring outputs uses 2: a generated image
        without a face should not cost every scale)."""
        if order not in ORDERS:
            raise InvalidInputError(f"face order {order!r} is unknown; use {' or '.join(ORDERS)}")
        self.prepare()
        return self.detect_many([self._rgb(image, name)], order=order, max_attempts=max_attempts)[0]

    def detect_many(self, images: list[Any], order: str = "size", max_attempts: int | None = None) -> list[list[Face]]:
        """:meth:`detect` of every image. Each retry scale runs over all the images still without
        a face at once: SCRFD models that take a batch see them in one network call
        (:meth:`ScrfdDetector.detect_many`); dlib goes image by image."""
        if order not in ORDERS:
            raise InvalidInputError(f"face order {order!r} is unknown; use {' or '.join(ORDERS)}")
        self.prepare()
        rgbs = [self._rgb(im) for im in images]
        plans = []
        for rgb in rgbs:
            attempts = self._attempts(rgb)
            if not self.retry_scales:
                attempts = attempts[:1]
            if max_attempts is not None:
                attempts = attempts[: max(1, max_attempts)]
            plans.append(attempts)
        found: list[list[Face]] = [[] for _ in rgbs]
        pending = list(range(len(rgbs)))
        for step in range(max((len(p) for p in plans), default=0)):
            groups: dict[tuple[str, Any], list[int]] = {}
            for i in pending:
                if step < len(plans[i]):
                    groups.setdefault(plans[i][step], []).append(i)
            for (kind, arg), idx in groups.items():
                checkpoint("face detection")  # a cancel lands between two scales
                for i, faces in zip(idx, self._attempt(kind, arg, [rgbs[i] for i in idx])):
                    found[i] = faces
            pending = [i for i in pending if not found[i]]
            if not pending:
                break
        return [_ordered(f, order) if f else [] for f in found]

    def _attempt(self, kind: str, arg: Any, rgbs: list[np.ndarray]) -> list[list[Face]]:
        """One rung of the retry ladder (see :meth:`_attempts`) on each image: in one call where
        the detector takes a batch, else image by image (a cancel lands between two images)."""
        scrfd = self.detector_kind == "scrfd"
        batch = scrfd and self.detector.batchable
        if kind == "size":
            if batch:
                return self.detector.detect_many(rgbs, det_size=arg)
            return _each(lambda rgb: self.detector.detect(rgb, det_size=arg), rgbs)
        if kind == "up":
            return _each(lambda rgb: self._detect_dlib_fast(rgb, arg), rgbs)
        # pad, then shrink so the longer side is at most `arg`
        import cv2

        shifts, copies = [], []
        for rgb in rgbs:
            padded, px, py = _pad(rgb, PAD_FRACTION)
            scale = min(1.0, arg / max(padded.shape[:2]))
            if scale < 1.0:
                padded = cv2.resize(padded, (max(1, int(padded.shape[1] * scale)), max(1, int(padded.shape[0] * scale))), interpolation=cv2.INTER_AREA)
            copies.append(padded)
            shifts.append((px, py, scale, rgb.shape[1], rgb.shape[0]))
        if batch:
            found = self.detector.detect_many(copies, det_size=arg)
        elif scrfd:
            found = _each(lambda c: self.detector.detect(c, det_size=arg), copies)
        else:
            found = _each(lambda c: self.detector.detect(c, upsample=1), copies)
        return [_shift(f, px, py, scale, w, h) for f, (px, py, scale, w, h) in zip(found, shifts)]

    def _detect_dlib_fast(self, rgb: np.ndarray, upsample: int) -> list[Face]:
        """dlib on a copy at most DLIB_MAX_SIDE px long (HOG cost grows with pixels), then
        the 68 landmarks again on the full-resolution image for precise keypoints."""
        import cv2

        from faceanchor.face.detect_dlib import kps_from_landmarks

        h, w = rgb.shape[:2]
        scale = min(1.0, DLIB_MAX_SIDE / max(h, w))
        if scale >= 1.0:
            return self.detector.detect(rgb, upsample=upsample)
        small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        out = []
        for f in _shift(self.detector.detect(small, upsample=upsample), 0, 0, scale, w, h):
            out.append(f.with_(kps=kps_from_landmarks(self.detector.landmarks(rgb, f.bbox))))
        return out

    def embed(self, image: Any, face: Face, with_quality: bool = True) -> Face:
        """``face`` with its embedding (raw), space and quality filled in."""
        self.prepare()
        rgb = self._rgb(image)
        emb = self.encoder.encode(rgb, face)
        quality = assess_quality(rgb, face) if with_quality else face.quality
        return face.with_(embedding=emb, space=self.space, quality=quality)

    def embed_many(self, items: list[tuple[Any, Face]], with_quality: bool = True) -> list[Face]:
        """:meth:`embed` of each (image, face); encoders that embed aligned crops (the ONNX and
        facexlib ArcFaces) get all the crops in one call, dlib goes face by face."""
        self.prepare()
        rgbs = [self._rgb(im) for im, _ in items]
        faces = [f for _, f in items]
        enc = self.encoder
        if len(items) > 1 and hasattr(enc, "encode_crops") and hasattr(enc, "align"):
            embs = list(enc.encode_crops(np.stack([enc.align(rgb, f) for rgb, f in zip(rgbs, faces)])))
        else:
            embs = _each(lambda pair: enc.encode(*pair), list(zip(rgbs, faces)), "face embedding")
        return [f.with_(embedding=e, space=self.space, quality=assess_quality(rgb, f) if with_quality else f.quality)
                for rgb, f, e in zip(rgbs, faces, embs)]

    def get(self, image: Any, max_num: int = 0, name: str | None = None, order: str = "size") -> list[Face]:
        """Every face, largest first, with embedding and quality ([] when none is found).

        ``order="score"``: InsightFace's ``FaceAnalysis.get`` order (highest detection score
        first), so ``get(rgb, order="score")[0]`` is official FaceID code's ``faces[0]``.
        ``max_num > 0`` keeps the first ``max_num`` faces in that order.
        """
        rgb = self._rgb(image, name)
        faces = self.detect(rgb, order=order)
        if max_num > 0:
            faces = faces[:max_num]
        return [self.embed(rgb, f) for f in faces]

    def get_face(
        self, image: Any, index: int | None = None, min_score: float | None = None, name: str | None = None
    ) -> Face:
        """One face (largest, or ``index`` in largest-first order) with its embedding.

        Raises NoFaceError naming the image when no scale finds a face, FaceSelectionError
        when the index or minimum score excludes every face.
        """
        label = name or (image if isinstance(image, str) and len(image) < 260 else "the image")
        rgb = self._rgb(image, name)
        faces = self.detect(rgb)
        if not faces:
            raise NoFaceError(f"no face found in {label} (also tried other scales)")
        face = choose_face(faces, index=index, min_score=min_score, image_name=label)
        from dataclasses import replace

        return replace(self.embed(rgb, face), faces_in_image=len(faces))

