"""The FACEANCHOR_IDENTITY value passed between nodes: whose face a generation keeps.

Either reference photos (PNG bytes, losslessly taken from the IMAGE the Face analysis node got,
with the face index) or a stored character (its id). The engine analyses photos itself, so a
node's request is exactly the library request with ``face_image`` set to those bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The ComfyUI socket types of this pack.
ENGINE_TYPE = "FACEANCHOR_ENGINE"
IDENTITY_TYPE = "FACEANCHOR_IDENTITY"


@dataclass(frozen=True)
class FaceReference:
    photos: tuple[bytes, ...] = ()
    face_index: int = 0
    character_id: str | None = None
    name: str | None = None
    report: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.photos and self.character_id is None:
            raise ValueError("an identity needs reference photos or a character")

    def face_fields(self) -> dict[str, Any]:
        """The request's face fields (photos only; a character supplies its own)."""
        if not self.photos:
            return {}
        return {"face_image": self.photos[0], "face_images": list(self.photos[1:]), "face_index": self.face_index}

    def __repr__(self) -> str:  # ComfyUI may print inputs: never dump the photo bytes
        what = f"character {self.character_id}" if self.character_id else f"{len(self.photos)} photo(s), face {self.face_index}"
        return f"FaceReference({what})"
