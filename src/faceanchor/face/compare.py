"""Compare the faces of two images: similarity, threshold and a same/different verdict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faceanchor.face.similarity import Verdict
from faceanchor.types import Face


@dataclass(frozen=True)
class Comparison:
    name_a: str
    name_b: str
    face_a: Face
    face_b: Face
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"image": self.name_a, **self.face_a.to_dict()},
            "b": {"image": self.name_b, **self.face_b.to_dict()},
            **self.verdict.to_dict(),
        }


def compare_images(
    analyzer: Any,
    a: Any,
    b: Any,
    *,
    name_a: str | None = None,
    name_b: str | None = None,
    index_a: int | None = None,
    index_b: int | None = None,
) -> Comparison:
    """Embed the chosen (default: largest) face of each image with ``analyzer`` and judge them."""
    analyzer.prepare()
    na = name_a or (a if isinstance(a, str) and len(a) < 260 else "image A")
    nb = name_b or (b if isinstance(b, str) and len(b) < 260 else "image B")
    fa = analyzer.get_face(a, index=index_a, name=na)
    fb = analyzer.get_face(b, index=index_b, name=nb)
    return Comparison(name_a=na, name_b=nb, face_a=fa, face_b=fb, verdict=analyzer.compare(fa.embedding, fb.embedding))
