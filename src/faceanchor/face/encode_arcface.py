"""InsightFace ArcFace ONNX recognition (512-D; spaces ``antelopev2``, ``buffalo_l``).

As InsightFace's ``ArcFaceONNX``: the face is aligned to the ArcFace five-point template at the
model's input size (112), fed as RGB ``(x - mean) × (1 / std)`` (``cv2.dnn.blobFromImages``,
as InsightFace, so the input is the same to the bit) with mean = std = 127.5, unless the graph
normalises by itself (its first nodes are ``Sub`` and ``Mul``), in which case raw pixels
(mean 0, std 1) go in. The raw embedding is kept on the face (InsightFace's ``face.embedding``);
``Face.normed_embedding`` is the unit vector (InsightFace's ``face.normed_embedding``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceanchor.face.align import norm_crop
from faceanchor.face.similarity import InSpace
from faceanchor.types import Face


def graph_normalises_itself(model_path: Path) -> bool:
    """InsightFace's test: a ``Sub`` and a ``Mul`` node among the graph's first 8 nodes."""
    try:
        import onnx
    except ImportError:  # onnx is the `insightface` extra; without it assume the common case
        return False
    model = onnx.load(str(model_path), load_external_data=False)
    find_sub = find_mul = False
    for node in model.graph.node[:8]:
        if node.name.startswith("Sub") or node.name.startswith("_minus"):
            find_sub = True
        if node.name.startswith("Mul") or node.name.startswith("_mul"):
            find_mul = True
    return find_sub and find_mul


class ArcFaceEncoder(InSpace):
    """``prepare()`` opens the session; ``encode(rgb, face)`` returns the raw embedding."""

    def __init__(self, model_path: Path, space: str, providers: list[str] | None = None, session: Any = None):
        self.model_path = Path(model_path)
        self.space = space
        self.providers = providers or ["CPUExecutionProvider"]
        self._session = session
        self.input_mean = 127.5
        self.input_std = 127.5
        self.input_size = 112
        self.dim = 512

    def prepare(self) -> "ArcFaceEncoder":
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.model_path), providers=self.providers)
            if graph_normalises_itself(self.model_path):
                self.input_mean, self.input_std = 0.0, 1.0
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        self._batchable = not isinstance(inp.shape[0], int) or inp.shape[0] > 1  # a batch dimension that is not fixed at 1
        if isinstance(inp.shape[2], int):
            self.input_size = int(inp.shape[2])
        out_dim = self._session.get_outputs()[0].shape[-1]
        if isinstance(out_dim, int):
            self.dim = out_dim
        self._output_name = self._session.get_outputs()[0].name
        return self

    def align(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The RGB crop the model sees (input size², ArcFace template)."""
        return norm_crop(rgb, face.kps, self.input_size)

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """(n, s, s, 3) RGB uint8 crops → (n, 3, s, s) float32 network input."""
        import cv2

        x = np.asarray(crops)
        if x.ndim == 3:
            x = x[None]
        images = [np.ascontiguousarray(c) for c in x]
        size = (images[0].shape[1], images[0].shape[0])
        mean = (self.input_mean,) * 3
        return np.ascontiguousarray(cv2.dnn.blobFromImages(images, 1.0 / self.input_std, size, mean, swapRB=False), dtype=np.float32)

    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of (n, s, s, 3) aligned crops: one network call when the model's batch size
        is not fixed (``blobFromImages`` of them all), else one call per crop."""
        self.prepare()
        blob = self.preprocess(crops)
        if self._batchable and blob.shape[0] > 1:  # every crop in one call
            out = [self._session.run([self._output_name], {self._input_name: blob})[0]]
        else:
            out = [self._session.run([self._output_name], {self._input_name: blob[i : i + 1]})[0] for i in range(blob.shape[0])]
        return np.concatenate(out).reshape(blob.shape[0], -1).astype(np.float32)

    def encode(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        self.prepare()
        return self.encode_crops(self.align(rgb, face)[None])[0]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> float:
        """Cosine similarity (higher is closer; same person at or above :attr:`threshold`)."""
        return self.compare(a, b).score

