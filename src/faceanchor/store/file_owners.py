"""Who each stored file belongs to, and since when: the ``file_owners`` table.

Files are content-addressed (:mod:`faceanchor.store.files`), so two owners uploading the same
bytes share one file; each gets its own row (namespace, file id, owner). ``GET /files/{id}``
serves a file only to a key whose owner has a row for it (admin keys: any), and the retention
cleanup deletes a file once every row for it is older than the retention period.
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from sqlalchemy import Float, String, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from faceanchor.store.db import Base, Database


class FileOwnerRow(Base):
    __tablename__ = "file_owners"

    namespace: Mapped[str] = mapped_column(String(32), primary_key=True)
    file_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(80), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)


class FileOwnerStore:
    def __init__(self, db: Database, clock=time.time):  # noqa: ANN001
        self.db = db
        self.clock = clock

    def add(self, namespace: str, file_ids: Iterable[str], owner: str) -> None:
        """Record ``owner`` for each file (a repeat refreshes the time: retention counts from the last use)."""
        with self.db.write() as s:
            self.add_in(s, namespace, file_ids, owner)

    def add_in(self, session: Session, namespace: str, file_ids: Iterable[str], owner: str) -> None:
        """:meth:`add` inside a write transaction of the caller's (e.g. with the job that uses the
        files): one upsert, so two writers racing on the same new row both succeed."""
        now = self.clock()
        rows = [{"namespace": namespace, "file_id": fid, "owner": owner, "created_at": now} for fid in dict.fromkeys(file_ids)]
        if not rows:
            return
        session.connection().execute(_upsert(self.db.is_sqlite), rows)  # Core: no ORM bulk machinery per submit

    def owns(self, namespace: str, file_id: str, owner: str) -> bool:
        with self.db.read() as s:
            return s.get(FileOwnerRow, (namespace, file_id, owner)) is not None

    def owners(self, namespace: str, file_id: str) -> list[str]:
        with self.db.read() as s:
            return list(s.scalars(select(FileOwnerRow.owner).where(FileOwnerRow.namespace == namespace,
                                                                   FileOwnerRow.file_id == file_id)))

    def newest_use(self, namespace: str, file_id: str) -> float | None:
        with self.db.read() as s:
            return s.scalar(select(func.max(FileOwnerRow.created_at)).where(
                FileOwnerRow.namespace == namespace, FileOwnerRow.file_id == file_id))

    def expired_files(self, namespace: str, before: float) -> list[str]:
        """Files of ``namespace`` whose every owner row is older than ``before``."""
        with self.db.read() as s:
            rows = s.execute(select(FileOwnerRow.file_id).where(FileOwnerRow.namespace == namespace)
                             .group_by(FileOwnerRow.file_id).having(func.max(FileOwnerRow.created_at) < before)).all()
        return [r[0] for r in rows]

    def forget_owner(self, namespace: str, file_id: str, owner: str) -> None:
        with self.db.write() as s:
            s.execute(delete(FileOwnerRow).where(FileOwnerRow.namespace == namespace, FileOwnerRow.file_id == file_id,
                                                 FileOwnerRow.owner == owner))

    def forget(self, namespace: str, file_id: str) -> None:
        with self.db.write() as s:
            s.execute(delete(FileOwnerRow).where(FileOwnerRow.namespace == namespace, FileOwnerRow.file_id == file_id))


_UPSERTS: dict[bool, Any] = {}


def _upsert(sqlite: bool):  # noqa: ANN202
    """``INSERT … ON CONFLICT (namespace, file_id, owner) DO UPDATE SET created_at``, built once per
    dialect (so SQLAlchemy's compiled cache serves every call) and run with a list of rows."""
    stmt = _UPSERTS.get(sqlite)
    if stmt is None:
        base = (sqlite_insert if sqlite else pg_insert)(FileOwnerRow.__table__)
        stmt = _UPSERTS[sqlite] = base.on_conflict_do_update(index_elements=["namespace", "file_id", "owner"],
                                                             set_={"created_at": base.excluded.created_at})
    return stmt
