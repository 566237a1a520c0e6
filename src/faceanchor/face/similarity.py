"""Embedding spaces, their metric and same/different threshold, and verdicts.

``dlib`` (128-D ResNet) is judged by Euclidean distance with dlib's threshold 0.6 (distance at
or below means the same person). ArcFace spaces (``antelopev2``, ``buffalo_l``, 512-D) are
judged by cosine similarity with the conventional threshold 0.3 (at or above means the same
person). Every verdict also reports the cosine similarity, which :func:`identity_score`
returns as the one comparable "how close" number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from faceanchor.errors import EmbeddingMismatchError


@dataclass(frozen=True)
class SpaceInfo:
    name: str
    dim: int
    metric: str  # "euclidean" (lower is closer) or "cosine" (higher is closer)
    threshold: float

    @property
    def higher_is_closer(self) -> bool:
        return self.metric == "cosine"


DLIB_THRESHOLD = 0.6
ARCFACE_THRESHOLD = 0.3

SPACES: dict[str, SpaceInfo] = {
    "dlib": SpaceInfo("dlib", 128, "euclidean", DLIB_THRESHOLD),
    "antelopev2": SpaceInfo("antelopev2", 512, "cosine", ARCFACE_THRESHOLD),
    "buffalo_l": SpaceInfo("buffalo_l", 512, "cosine", ARCFACE_THRESHOLD),
    "facexlib": SpaceInfo("facexlib", 512, "cosine", ARCFACE_THRESHOLD),  # facexlib's IR-SE50 ArcFace (InfiniteYou)
}


def space_info(space: str, dim: int | None = None) -> SpaceInfo:
    """The metric of a space; unknown (custom pack) spaces are ArcFace-like cosine spaces."""
    if space in SPACES:
        return SPACES[space]
    return SpaceInfo(space, int(dim or 512), "cosine", ARCFACE_THRESHOLD)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    _check_same_size(a, b)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def euclidean_distance(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    _check_same_size(a, b)
    return float(np.linalg.norm(a - b))


def _check_same_size(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise EmbeddingMismatchError(f"cannot compare embeddings of sizes {a.shape[0]} and {b.shape[0]}")


def identity_score(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two embeddings of one space: the identity score of an output."""
    return cosine_similarity(a, b)


@dataclass(frozen=True)
class Verdict:
    space: str
    metric: str
    score: float  # the metric's value (distance for euclidean, similarity for cosine)
    threshold: float
    same: bool
    cosine: float
    distance: float

    @property
    def higher_is_closer(self) -> bool:
        return self.metric == "cosine"

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "metric": self.metric,
            "score": round(self.score, 6),
            "threshold": self.threshold,
            "verdict": "same" if self.same else "different",
            "same": self.same,
            "cosine": round(self.cosine, 6),
            "euclidean": round(self.distance, 6),
        }


def compare_embeddings(a: np.ndarray, b: np.ndarray, space: str) -> Verdict:
    """Judge two embeddings of ``space`` with that space's metric and threshold."""
    info = space_info(space, np.asarray(a).size)
    cos = cosine_similarity(a, b)
    dist = euclidean_distance(a, b)
    if info.metric == "euclidean":
        score, same = dist, dist <= info.threshold
    else:
        score, same = cos, cos >= info.threshold
    return Verdict(space=info.name, metric=info.metric, score=score, threshold=info.threshold, same=bool(same), cosine=cos, distance=dist)


class InSpace:
    """``metric``, ``threshold`` and ``compare`` of an embedding space, for a class that has
    ``space`` (its name) and ``dim`` (analyzers and encoders)."""

    space: str
    dim: int

    @property
    def metric(self) -> str:
        return space_info(self.space, self.dim).metric

    @property
    def threshold(self) -> float:
        return space_info(self.space, self.dim).threshold

    def compare(self, a: np.ndarray, b: np.ndarray) -> Verdict:
        """Judge two embeddings of this space."""
        return compare_embeddings(a, b, self.space)
