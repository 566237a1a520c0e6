"""Characters in the service database: reference photos, identities per embedding space,
ID-photo views and the history of generations. Image bytes live in the content-addressed
file store under the ``characters`` namespace; rows name them by sha256.

Tables (created on first use, next to jobs and keys on the same :class:`~faceanchor.store.db.Base`):

* ``characters``: id, name, created/updated time, reference photo ids (JSON list), ID-photo
  sheet id and views (JSON).
* ``character_identities``: one row per (character, embedding space, photo): the raw
  embedding (float32 bytes), keypoints, face box, photo size, quality report.
* ``character_generations``: the history: kind (generate, id-photo, edit), request, output
  file ids with seeds and identity scores, time.

Deleting a character deletes its rows and every file no other character refers to.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Float, ForeignKey, Integer, LargeBinary, String, Text, delete, func, select
from sqlalchemy.orm import Mapped, mapped_column

from faceanchor.errors import FaceAnchorError
from faceanchor.store.db import Base, Database
from faceanchor.store.files import FileStore

NAMESPACE = "characters"


class CharacterNotFoundError(FaceAnchorError):
    """No character has this id."""

    http_status = 404
    type = "not_found"


class CharacterRow(Base):
    __tablename__ = "characters"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    photos_json: Mapped[str] = mapped_column(Text, default="[]")
    sheet_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    views_json: Mapped[str] = mapped_column(Text, default="[]")
    owner: Mapped[str | None] = mapped_column(String(80), nullable=True, index=True)  # issue 11: the key/tenant


class IdentityRow(Base):
    __tablename__ = "character_identities"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    character_id: Mapped[str] = mapped_column(String(32), ForeignKey("characters.id", ondelete="CASCADE"), index=True)
    space: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))  # "photo:<i>" or "view:<name>"
    photo_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, raw
    dim: Mapped[int] = mapped_column(Integer)
    kps_json: Mapped[str] = mapped_column(Text)
    bbox_json: Mapped[str] = mapped_column(Text)
    image_width: Mapped[int] = mapped_column(Integer)
    image_height: Mapped[int] = mapped_column(Integer)
    det_score: Mapped[float] = mapped_column(Float)
    quality_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class GenerationRow(Base):
    __tablename__ = "character_generations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    character_id: Mapped[str] = mapped_column(String(32), ForeignKey("characters.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    request_json: Mapped[str] = mapped_column(Text)
    outputs_json: Mapped[str] = mapped_column(Text)
    info_json: Mapped[str] = mapped_column(Text, default="{}")


@dataclass(frozen=True)
class StoredIdentity:
    space: str
    source: str
    photo_file: str | None
    embedding: np.ndarray
    kps: np.ndarray
    bbox: np.ndarray
    image_size: tuple[int, int]
    det_score: float
    quality: dict[str, Any] | None

    def to_dict(self, include_embedding: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "space": self.space, "source": self.source, "photo_file": self.photo_file, "dim": int(self.embedding.size),
            "kps": [[round(float(x), 2), round(float(y), 2)] for x, y in self.kps],
            "bbox": [round(float(v), 2) for v in self.bbox], "image_size": list(self.image_size),
            "det_score": round(float(self.det_score), 4), "quality": self.quality,
        }
        if include_embedding:
            d["embedding"] = [float(v) for v in self.embedding]
        return d


@dataclass(frozen=True)
class CharacterView:
    """A read-only snapshot of one character."""

    id: str
    name: str
    created_at: float
    updated_at: float
    photos: list[str]
    sheet_file: str | None
    views: list[dict[str, Any]]
    identities: list[StoredIdentity] = field(default_factory=list)
    generations: int = 0
    owner: str | None = None

    @property
    def spaces(self) -> list[str]:
        return sorted({i.space for i in self.identities})

    def identities_for(self, space: str, sources: str = "photos") -> list[StoredIdentity]:
        """Identities of ``space``: reference ``photos`` (default), ID-photo ``views``, or ``all``."""
        out = [i for i in self.identities if i.space == space]
        if sources == "photos":
            out = [i for i in out if i.source.startswith("photo:")]
        elif sources == "views":
            out = [i for i in out if i.source.startswith("view:")]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "created_at": self.created_at, "updated_at": self.updated_at,
            "photos": list(self.photos), "spaces": self.spaces, "sheet_file": self.sheet_file,
            "views": list(self.views), "identities": [i.to_dict() for i in self.identities],
            "generations": self.generations,
        }


@dataclass(frozen=True)
class HistoryEntry:
    id: str
    character_id: str
    kind: str
    created_at: float
    request: dict[str, Any]
    outputs: list[dict[str, Any]]
    info: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "character_id": self.character_id, "kind": self.kind, "created_at": self.created_at,
                "request": self.request, "outputs": self.outputs, "info": self.info}


def _identity(row: IdentityRow) -> StoredIdentity:
    return StoredIdentity(
        space=row.space, source=row.source, photo_file=row.photo_file,
        embedding=np.frombuffer(row.embedding, dtype=np.float32).copy(),
        kps=np.asarray(json.loads(row.kps_json), np.float32).reshape(5, 2),
        bbox=np.asarray(json.loads(row.bbox_json), np.float32).reshape(4),
        image_size=(row.image_width, row.image_height), det_score=row.det_score,
        quality=json.loads(row.quality_json) if row.quality_json else None,
    )


class CharacterStore:
    """Every read and write of characters; files go to ``files`` under :data:`NAMESPACE`."""

    def __init__(self, db: Database, files: FileStore, clock=time.time):  # noqa: ANN001
        self.db = db
        self.files = files
        self.clock = clock
        db.migrate([CharacterRow.__table__, IdentityRow.__table__, GenerationRow.__table__])

    # ------------------------------------------------------------------ files
    def put_file(self, data: bytes) -> str:
        return self.files.put(data, NAMESPACE)

    def get_file(self, file_id: str) -> bytes | None:
        return self.files.get(file_id, NAMESPACE)

    def file_path(self, file_id: str):  # noqa: ANN201
        return self.files.path(file_id, NAMESPACE)

    # ------------------------------------------------------------------ characters
    def create(self, name: str, photos: list[str], identities: list[dict[str, Any]], owner: str | None = None) -> CharacterView:
        """Insert a character with its stored photo ids and identities (dicts of StoredIdentity fields)."""
        now = self.clock()
        cid = uuid.uuid4().hex
        with self.db.write() as s:
            s.add(CharacterRow(id=cid, name=name, created_at=now, updated_at=now, photos_json=json.dumps(photos), views_json="[]",
                               owner=owner))
            s.flush()
            for ident in identities:
                s.add(self._identity_row(cid, ident))
        return self.get(cid)

    @staticmethod
    def _identity_row(cid: str, ident: dict[str, Any]) -> IdentityRow:
        emb = np.asarray(ident["embedding"], np.float32).reshape(-1)
        w, h = ident["image_size"]
        return IdentityRow(
            character_id=cid, space=ident["space"], source=ident["source"], photo_file=ident.get("photo_file"),
            embedding=emb.tobytes(), dim=int(emb.size),
            kps_json=json.dumps(np.asarray(ident["kps"], np.float64).reshape(5, 2).tolist()),
            bbox_json=json.dumps(np.asarray(ident["bbox"], np.float64).reshape(4).tolist()),
            image_width=int(w), image_height=int(h), det_score=float(ident.get("det_score", 0.0)),
            quality_json=json.dumps(ident["quality"]) if ident.get("quality") is not None else None,
        )

    def get(self, character_id: str) -> CharacterView:
        with self.db.read() as s:
            row = s.get(CharacterRow, character_id) if isinstance(character_id, str) and len(character_id) <= 32 else None
            if row is None:
                raise CharacterNotFoundError(f"no character with id {character_id!r}")
            idents = s.scalars(select(IdentityRow).where(IdentityRow.character_id == row.id).order_by(IdentityRow.id)).all()
            n = s.scalar(select(func.count()).select_from(GenerationRow).where(GenerationRow.character_id == row.id))
            return CharacterView(
                id=row.id, name=row.name, created_at=row.created_at, updated_at=row.updated_at,
                photos=json.loads(row.photos_json), sheet_file=row.sheet_file, views=json.loads(row.views_json),
                identities=[_identity(r) for r in idents], generations=int(n or 0), owner=row.owner,
            )

    def get_owned(self, character_id: str, can_see) -> CharacterView:  # noqa: ANN001
        """The character if ``can_see(owner)`` allows it; otherwise the same not-found error as an unknown id."""
        ch = self.get(character_id)
        if not can_see(ch.owner):
            raise CharacterNotFoundError(f"no character with id {character_id!r}")
        return ch

    def list(self, limit: int = 100, offset: int = 0, owner: str | None = None) -> list[CharacterView]:
        """Characters, newest first; only ``owner``'s when given (``None``: every character, for admins)."""
        with self.db.read() as s:
            stmt = select(CharacterRow.id)
            if owner is not None:
                stmt = stmt.where(CharacterRow.owner == owner)
            ids = s.scalars(stmt.order_by(CharacterRow.created_at.desc(), CharacterRow.id).limit(limit).offset(offset)).all()
        return [self.get(i) for i in ids]

    def set_id_photo(self, character_id: str, sheet_file: str, views: list[dict[str, Any]], identities: list[dict[str, Any]] = ()) -> CharacterView:  # type: ignore[assignment]
        """Record the ID-photo sheet and views (replacing earlier ones and their view identities)."""
        old_files = self._files_of(character_id)
        with self.db.write() as s:
            row = s.get(CharacterRow, character_id)
            if row is None:
                raise CharacterNotFoundError(f"no character with id {character_id!r}")
            row.sheet_file, row.views_json, row.updated_at = sheet_file, json.dumps(views), self.clock()
            s.execute(delete(IdentityRow).where(IdentityRow.character_id == character_id, IdentityRow.source.like("view:%")))
            for ident in identities:
                s.add(self._identity_row(character_id, ident))
        self._collect(old_files - self._files_of(character_id))
        return self.get(character_id)

    def delete(self, character_id: str) -> list[str]:
        """Delete the character, its identities and history, and its files; return the deleted file ids."""
        files = self._files_of(character_id)
        with self.db.write() as s:
            row = s.get(CharacterRow, character_id)
            if row is None:
                raise CharacterNotFoundError(f"no character with id {character_id!r}")
            s.execute(delete(GenerationRow).where(GenerationRow.character_id == character_id))
            s.execute(delete(IdentityRow).where(IdentityRow.character_id == character_id))
            s.delete(row)
        return self._collect(files)

    # ------------------------------------------------------------------ history
    def add_generation(self, character_id: str, kind: str, request: dict[str, Any], outputs: list[dict[str, Any]], info: dict[str, Any] | None = None) -> HistoryEntry:
        entry = HistoryEntry(uuid.uuid4().hex, character_id, kind, self.clock(), request, outputs, info or {})
        with self.db.write() as s:
            if s.get(CharacterRow, character_id) is None:
                raise CharacterNotFoundError(f"no character with id {character_id!r}")
            s.add(GenerationRow(id=entry.id, character_id=character_id, kind=kind, created_at=entry.created_at,
                                request_json=json.dumps(request, default=str), outputs_json=json.dumps(outputs),
                                info_json=json.dumps(info or {}, default=str)))
        return entry

    def history(self, character_id: str, limit: int = 100, offset: int = 0) -> list[HistoryEntry]:
        self.get(character_id)
        with self.db.read() as s:
            rows = s.scalars(select(GenerationRow).where(GenerationRow.character_id == character_id)
                             .order_by(GenerationRow.created_at.desc(), GenerationRow.id).limit(limit).offset(offset)).all()
            return [HistoryEntry(r.id, r.character_id, r.kind, r.created_at, json.loads(r.request_json),
                                 json.loads(r.outputs_json), json.loads(r.info_json)) for r in rows]

    # ------------------------------------------------------------------ file references
    def _files_of(self, character_id: str) -> set[str]:
        with self.db.read() as s:
            row = s.get(CharacterRow, character_id)
            if row is None:
                return set()
            return self._row_files(s, row)

    @staticmethod
    def _row_files(s, row: CharacterRow) -> set[str]:  # noqa: ANN001
        out = set(json.loads(row.photos_json))
        if row.sheet_file:
            out.add(row.sheet_file)
        out.update(v["file_id"] for v in json.loads(row.views_json) if v.get("file_id"))
        for g in s.scalars(select(GenerationRow.outputs_json).where(GenerationRow.character_id == row.id)):
            out.update(o["file_id"] for o in json.loads(g) if o.get("file_id"))
        return out

    def referenced_files(self) -> set[str]:
        with self.db.read() as s:
            out: set[str] = set()
            for row in s.scalars(select(CharacterRow)).all():
                out |= self._row_files(s, row)
            return out

    def _collect(self, candidates: set[str]) -> list[str]:
        """Delete the candidate files no character refers to any more (content addressing shares them)."""
        if not candidates:
            return []
        live = self.referenced_files()
        gone = []
        for fid in sorted(candidates - live):
            if self.files.delete(fid, NAMESPACE):
                gone.append(fid)
        return gone
