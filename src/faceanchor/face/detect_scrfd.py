"""SCRFD face detection (InsightFace ONNX output layout) with onnxruntime.

Layout (as InsightFace's ``SCRFD``): outputs are ``score`` for every stride, then ``bbox``,
then ``kps``; 3 strides (8, 16, 32) with 2 anchors each, or 5 strides (8..128) with 1 anchor.
Boxes and keypoints are distances from anchor centres in units of the stride
(``distance2bbox`` / ``distance2kps``); boxes at or above the score threshold are put in
descending score order (stable) and go through NMS 0.4. Input: RGB, ``(x - 127.5) / 128``
(``cv2.dnn.blobFromImage``, as InsightFace), the image resized to fit the input keeping its
aspect (sizes computed as InsightFace computes them) and padded at the right/bottom with black.

Faces come back in InsightFace's order (highest score first) with InsightFace's values: boxes
are not clipped to the image (a face at the border may have ``x1 < 0``), ``det_score`` is the
float32 score. ``tests/face/test_insightface_oracle.py`` checks this against InsightFace itself.

A model with a fixed input (``1x3x640x640``) detects at a smaller "det size" by shrinking the
image into that part of the canvas (InsightFace ignores the det size there; the analyzer only
uses smaller sizes as retries when 640 finds nothing); a dynamic one gets an input of the det
size itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceanchor.types import Face


def distance2bbox(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    x1 = points[:, 0] - distance[:, 0]
    y1 = points[:, 1] - distance[:, 1]
    x2 = points[:, 0] + distance[:, 2]
    y2 = points[:, 1] + distance[:, 3]
    return np.stack([x1, y1, x2, y2], axis=-1)


def distance2kps(points: np.ndarray, distance: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, distance.shape[1], 2):
        out.append(points[:, 0] + distance[:, i])
        out.append(points[:, 1] + distance[:, i + 1])
    return np.stack(out, axis=-1)


def nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Greedy non-maximum suppression on ``(n, 5)`` rows of x1, y1, x2, y2, score.

    Kept indices come highest score first; equal scores keep their row order (a stable sort,
    as InsightFace's ``SCRFD.nms``).
    """
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def layout_of(num_outputs: int) -> tuple[tuple[int, ...], int, bool]:
    """(strides, anchors per location, has keypoints) for an SCRFD output count."""
    if num_outputs == 6:
        return (8, 16, 32), 2, False
    if num_outputs == 9:
        return (8, 16, 32), 2, True
    if num_outputs == 10:
        return (8, 16, 32, 64, 128), 1, False
    if num_outputs == 15:
        return (8, 16, 32, 64, 128), 1, True
    raise ValueError(f"not an SCRFD model: {num_outputs} outputs (expected 6, 9, 10 or 15)")


class ScrfdDetector:
    """``prepare()`` opens the ONNX session; ``detect(rgb, det_size)`` returns faces."""

    def __init__(
        self,
        model_path: Path,
        det_size: int = 640,
        det_thresh: float = 0.5,
        nms_thresh: float = 0.4,
        providers: list[str] | None = None,
        session: Any = None,
    ):
        self.model_path = Path(model_path)
        self.det_size = int(det_size)
        self.det_thresh = det_thresh
        self.nms_thresh = nms_thresh
        self.providers = providers or ["CPUExecutionProvider"]
        self._session = session
        self._anchor_cache: dict[tuple[int, int, int], np.ndarray] = {}
        if session is not None:
            self._read_layout()

    def prepare(self) -> "ScrfdDetector":
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.model_path), providers=self.providers)
            self._read_layout()
        return self

    def _read_layout(self) -> None:
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        shape = inp.shape
        self._batch, h, w = shape[0], shape[2], shape[3]
        self.fixed_input = (int(w), int(h)) if isinstance(h, int) and isinstance(w, int) else None
        self._output_names = [o.name for o in self._session.get_outputs()]
        self.strides, self.num_anchors, self.has_kps = layout_of(len(self._output_names))
        if not self.has_kps:
            raise ValueError(f"{self.model_path.name}: this SCRFD model has no keypoint outputs")

    @property
    def fixed_input_size(self) -> tuple[int, int] | None:
        self.prepare()
        return self.fixed_input

    def _anchors(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._anchor_cache:
            centres = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centres = (centres * stride).reshape(-1, 2)
            if self.num_anchors > 1:
                centres = np.stack([centres] * self.num_anchors, axis=1).reshape(-1, 2)
            self._anchor_cache[key] = centres
        return self._anchor_cache[key]

    @property
    def batchable(self) -> bool:
        """Whether the model takes several images in one call (its input's batch size is not fixed)."""
        self.prepare()
        return not isinstance(self._batch, int) or self._batch > 1

    def _canvas(self, rgb: np.ndarray, size: int) -> tuple[np.ndarray, float]:
        """``rgb`` resized into the model's input (black right/bottom padding) and its scale."""
        import cv2

        if self.fixed_input is not None:
            in_w, in_h = self.fixed_input
            fit_w, fit_h = min(size, in_w), min(size, in_h)
        else:
            in_w = in_h = fit_w = fit_h = size
        h, w = rgb.shape[:2]
        # InsightFace's arithmetic, so that the resized size is the same to the pixel
        im_ratio = float(h) / w
        if im_ratio > float(fit_h) / fit_w:
            new_h = fit_h
            new_w = max(1, int(new_h / im_ratio))
        else:
            new_w = fit_w
            new_h = max(1, int(new_w * im_ratio))
        scale = float(new_h) / h
        canvas = np.zeros((in_h, in_w, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(np.ascontiguousarray(rgb), (new_w, new_h))
        return canvas, scale

    def _blob(self, canvases: list[np.ndarray]) -> np.ndarray:
        import cv2

        in_h, in_w = canvases[0].shape[:2]
        return cv2.dnn.blobFromImages(canvases, 1.0 / 128.0, (in_w, in_h), (127.5, 127.5, 127.5), swapRB=False)

    def detect(self, rgb: np.ndarray, det_size: int | None = None, max_num: int = 0) -> list[Face]:
        """Faces in ``rgb`` (H×W×3 uint8, RGB), highest detection score first.

        ``max_num > 0`` keeps the first ``max_num`` of them (InsightFace instead ranks by a
        centre-weighted area there; the analyzer never passes it).
        """
        self.prepare()
        canvas, scale = self._canvas(rgb, int(det_size or self.det_size))
        outs = self._session.run(self._output_names, {self._input_name: self._blob([canvas])})
        faces = self._decode([o[0] if o.ndim == 3 else o for o in outs], canvas.shape[:2], scale)
        return faces[:max_num] if max_num > 0 else faces

    def detect_many(self, rgbs: list[np.ndarray], det_size: int | None = None) -> list[list[Face]]:
        """:meth:`detect` of every image, in one network call when the model takes a batch
        (``cv2.dnn.blobFromImages`` of the canvases), else one call per image; the faces are
        :meth:`detect`'s."""
        self.prepare()
        size = int(det_size or self.det_size)
        if len(rgbs) < 2 or not self.batchable:
            return [self.detect(r, det_size=size) for r in rgbs]
        prepared = [self._canvas(r, size) for r in rgbs]
        canvases = [c for c, _ in prepared]
        outs = self._session.run(self._output_names, {self._input_name: self._blob(canvases)})
        n = len(rgbs)
        per_image = [self._split(o, n) for o in outs]
        if any(p is None for p in per_image):  # a graph that folds the batch some other way: no batch
            return [self.detect(r, det_size=size) for r in rgbs]
        return [self._decode([p[i] for p in per_image], canvases[i].shape[:2], scale)  # type: ignore[index]
                for i, (_, scale) in enumerate(prepared)]

    @staticmethod
    def _split(out: np.ndarray, n: int) -> list[np.ndarray] | None:
        """One output of a batch call, per image: ``(n, rows, c)``, or ``(n * rows, c)`` from graphs
        that reshape the batch into the rows (InsightFace's unbatched exports)."""
        if out.ndim == 3 and out.shape[0] == n:
            return list(out)
        if out.ndim == 2 and out.shape[0] % n == 0:
            return list(out.reshape(n, out.shape[0] // n, out.shape[1]))
        return None

    def _decode(self, outs: list[np.ndarray], input_hw: tuple[int, int], scale: float) -> list[Face]:
        """Faces from one image's outputs (rows × channels each) on a canvas of ``input_hw``."""
        in_h, in_w = input_hw
        fmc = len(self.strides)
        boxes, scores_all, kpss = [], [], []
        for i, stride in enumerate(self.strides):
            scores = outs[i].reshape(-1)
            bbox_pred = outs[i + fmc] * stride
            kps_pred = outs[i + 2 * fmc] * stride
            centres = self._anchors(in_h // stride, in_w // stride, stride)
            if scores.shape[0] != centres.shape[0]:
                raise ValueError(f"{self.model_path.name}: {scores.shape[0]} scores at stride {stride}, expected {centres.shape[0]}")
            pos = np.where(scores >= self.det_thresh)[0]
            if pos.size == 0:
                continue
            boxes.append(distance2bbox(centres[pos], bbox_pred[pos]))
            scores_all.append(scores[pos])
            kpss.append(distance2kps(centres[pos], kps_pred[pos]).reshape(-1, 5, 2))
        if not boxes:
            return []
        scores = np.concatenate(scores_all)
        order = np.argsort(-scores, kind="stable")
        bboxes = (np.concatenate(boxes) / scale)[order]
        kps = (np.concatenate(kpss) / scale)[order]
        scores = scores[order]
        dets = np.hstack([bboxes, scores[:, None]]).astype(np.float32)
        keep = nms(dets, self.nms_thresh)
        return [Face(bbox=dets[k, :4], kps=kps[k], det_score=float(dets[k, 4])) for k in keep]
