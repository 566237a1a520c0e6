"""dlib's 128-D ResNet face descriptor (space ``dlib``; Euclidean distance, threshold 0.6).

The descriptor is computed on dlib's own 150 px face chip, placed from the 68 landmarks that
the shape predictor finds inside the face box, so it works on boxes from any detector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceanchor.face.similarity import SPACES, Verdict, compare_embeddings
from faceanchor.types import Face


class DlibEncoder:
    space = "dlib"
    dim = 128
    metric = SPACES["dlib"].metric
    threshold = SPACES["dlib"].threshold

    def __init__(self, landmarks_path: Path, recognition_path: Path, num_jitters: int = 1):
        self.landmarks_path = Path(landmarks_path)
        self.recognition_path = Path(recognition_path)
        self.num_jitters = int(num_jitters)
        self._predictor = None
        self._net = None

    def prepare(self) -> "DlibEncoder":
        import dlib

        if self._net is None:
            self._predictor = dlib.shape_predictor(str(self.landmarks_path))
            self._net = dlib.face_recognition_model_v1(str(self.recognition_path))
        return self

    def encode(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The 128-D descriptor of ``face`` in the RGB array ``rgb``."""
        import dlib

        self.prepare()
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        x1, y1, x2, y2 = (int(round(float(v))) for v in face.bbox)
        shape = self._predictor(rgb, dlib.rectangle(x1, y1, x2, y2))
        desc = self._net.compute_face_descriptor(rgb, shape, self.num_jitters)
        return np.asarray(desc, dtype=np.float32)

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Euclidean distance (lower is closer; same person at or below :attr:`threshold`)."""
        return self.compare(a, b).score

    def compare(self, a: np.ndarray, b: np.ndarray) -> Verdict:
        return compare_embeddings(a, b, self.space)
