"""One owner's jobs (a key's, or its tenant's), newest first: the history the web page shows
after a reload (``GET /v1/jobs``)."""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select

from faceanchor.store.db import Database
from faceanchor.store.jobs import Job, JobView, _view


def jobs_of_key(db: Database, key_id: str, *, owner: str | None = None, limit: int = 50, offset: int = 0,
                app: str | None = None) -> tuple[list[JobView], int]:
    """The jobs of ``owner`` (a key's or its tenant's; rows from before owners: the key's own),
    newest first, ``limit`` from ``offset``, and how many there are in all."""
    with db.read() as s:
        mine = Job.key_id == key_id
        where = [or_(Job.owner == owner, and_(Job.owner.is_(None), mine)) if owner else mine]
        if app is not None:
            where.append(Job.app == app)
        rows = s.scalars(select(Job).where(*where).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)).all()
        total = int(s.scalar(select(func.count()).select_from(Job).where(*where)) or 0)
        return [_view(r) for r in rows], total
