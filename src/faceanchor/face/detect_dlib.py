"""dlib face detection (HOG by default, CNN/MMOD optional) with five InsightFace keypoints.

The five keypoints come from dlib's 68 landmarks: eye centres (mean of 36-41 and 42-47), the
nose tip (30) and the mouth corners (48, 54). In the 68-point scheme 36-41 and 48 are the
points on the image's left of an upright face, which is InsightFace's order: left eye, right
eye, nose, left mouth corner, right mouth corner as they appear in the image.

Detection scores are dlib's SVM / MMOD margins (0 is dlib's own threshold) squashed with a
logistic, so 0.5 is dlib's default decision and scores compare with SCRFD's 0..1 scale.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from faceanchor.types import Face

DLIB_MODES = ("hog", "cnn")


def kps_from_landmarks(points: np.ndarray) -> np.ndarray:
    """(68, 2) dlib landmarks → (5, 2) keypoints in InsightFace order."""
    p = np.asarray(points, dtype=np.float32).reshape(68, 2)
    return np.stack([p[36:42].mean(axis=0), p[42:48].mean(axis=0), p[30], p[48], p[54]])


def _squash(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(-float(margin)))


class DlibDetector:
    """``prepare()`` loads the models; ``detect(rgb, upsample)`` returns faces (no embedding)."""

    def __init__(self, landmarks_path: Path, mode: str = "hog", cnn_path: Path | None = None, adjust_threshold: float = 0.0):
        if mode not in DLIB_MODES:
            raise ValueError(f"dlib detector mode must be hog or cnn, not {mode!r}")
        self.landmarks_path = Path(landmarks_path)
        self.cnn_path = Path(cnn_path) if cnn_path is not None else None
        self.mode = mode
        self.adjust_threshold = adjust_threshold
        self._detector = None
        self._predictor = None

    @property
    def prepared(self) -> bool:
        return self._predictor is not None

    def prepare(self) -> "DlibDetector":
        import dlib

        if self.mode == "cnn":
            if self.cnn_path is None:
                raise ValueError("the dlib CNN detector needs mmod_human_face_detector.dat")
            self._detector = dlib.cnn_face_detection_model_v1(str(self.cnn_path))
        else:
            self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(self.landmarks_path))
        return self

    def landmarks(self, rgb: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        """The 68 landmarks inside ``bbox`` (x1, y1, x2, y2)."""
        import dlib

        if self._predictor is None:
            self.prepare()
        x1, y1, x2, y2 = (int(round(float(v))) for v in bbox)
        shape = self._predictor(rgb, dlib.rectangle(x1, y1, x2, y2))
        return np.array([(pt.x, pt.y) for pt in shape.parts()], dtype=np.float32)

    def detect(self, rgb: np.ndarray, upsample: int = 1) -> list[Face]:
        if self._predictor is None:
            self.prepare()
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        h, w = rgb.shape[:2]
        found: list[tuple[object, float]] = []
        if self.mode == "cnn":
            for det in self._detector(rgb, upsample):
                found.append((det.rect, float(det.confidence)))
        else:
            rects, scores, _ = self._detector.run(rgb, upsample, self.adjust_threshold)
            found = list(zip(rects, (float(s) for s in scores)))
        faces = []
        for rect, margin in found:
            bbox = np.array([max(0, rect.left()), max(0, rect.top()), min(w, rect.right() + 1), min(h, rect.bottom() + 1)], dtype=np.float32)
            if bbox[2] <= bbox[0] or bbox[3] <= bbox[1]:
                continue
            shape = self._predictor(rgb, rect)
            pts = np.array([(pt.x, pt.y) for pt in shape.parts()], dtype=np.float32)
            faces.append(Face(bbox=bbox, kps=kps_from_landmarks(pts), det_score=_squash(margin)))
        return faces
