"""Face order and choice: largest first; by index in that order; with a minimum score."""

from __future__ import annotations

from typing import Sequence

from faceanchor.errors import FaceSelectionError, NoFaceError
from faceanchor.types import Face


def sort_faces(faces: Sequence[Face]) -> list[Face]:
    """The documented order: largest box area first; equal areas by detection score."""
    return sorted(faces, key=lambda f: (-f.area, -f.det_score))


def choose_face(
    faces: Sequence[Face],
    index: int | None = None,
    min_score: float | None = None,
    image_name: str = "the image",
) -> Face:
    """Pick one face.

    ``index`` counts in :func:`sort_faces` order (0 is the largest). Without an index, the
    largest face whose score reaches ``min_score``. With both, the indexed face must reach it.
    """
    if not faces:
        raise NoFaceError(f"no face found in {image_name}")
    ordered = sort_faces(faces)
    if index is not None:
        if index < 0 or index >= len(ordered):
            raise FaceSelectionError(
                f"face index {index} is out of range: {image_name} has {len(ordered)} face(s), numbered 0 (largest) to {len(ordered) - 1}"
            )
        face = ordered[index]
        if min_score is not None and face.det_score < min_score:
            raise FaceSelectionError(
                f"face {index} in {image_name} has score {face.det_score:.3f}, below the minimum {min_score}"
            )
        return face
    if min_score is not None:
        passing = [f for f in ordered if f.det_score >= min_score]
        if not passing:
            best = max(f.det_score for f in ordered)
            raise FaceSelectionError(
                f"no face in {image_name} reaches the minimum score {min_score} (best is {best:.3f})"
            )
        return passing[0]
    return ordered[0]
