"""One key's jobs, newest first: the history the web page shows after a reload (``GET /v1/jobs``)."""

from __future__ import annotations

from sqlalchemy import func, select

from faceanchor.store.db import Database
from faceanchor.store.jobs import Job, JobView, _view


def jobs_of_key(db: Database, key_id: str, *, limit: int = 50, offset: int = 0, app: str | None = None) -> tuple[list[JobView], int]:
    """The key's jobs (newest first, ``limit`` from ``offset``) and how many it has in all."""
    with db.read() as s:
        where = [Job.key_id == key_id]
        if app is not None:
            where.append(Job.app == app)
        rows = s.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)).all()
        total = int(s.scalar(select(func.count()).select_from(Job).where(*where)) or 0)
        return [_view(r) for r in rows], total
