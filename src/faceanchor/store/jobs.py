"""The durable job table and every state change a job can go through.

A job moves IN_QUEUE → IN_PROGRESS → COMPLETED | FAILED | CANCELLED. A worker *claims* a job by
taking a lease (``lease_owner`` + ``lease_expires_at``) and keeps it alive with heartbeats; a job
whose lease expired (its worker died) is claimed again. Every terminal write is conditional on
the writer still owning the lease and the job still being IN_PROGRESS, so however many workers
ran a job, clients see exactly one outcome.

On SQLite all changes run in ``BEGIN IMMEDIATE`` transactions (one writer at a time, see
:mod:`faceanchor.store.db`). On PostgreSQL workers claim in parallel: the claim selects the
oldest runnable job ``FOR UPDATE SKIP LOCKED`` (a row another worker is claiming is skipped, not
waited for), and a client's cancel locks the row it changes. Terminal writes are retried
through a dropped connection and are safe to repeat.

A submit can be *admitted* atomically: :meth:`JobStore.submit` with ``admit`` runs the
caller's check (the key's image quota, the queue limit) and the insert in one write
transaction that is serialised per key — on SQLite by ``BEGIN IMMEDIATE`` (one writer for the
whole database, across processes too), on PostgreSQL by a transaction-scoped advisory lock on
the key (:func:`key_lock_id`), so submits of other keys still run in parallel. Under READ
COMMITTED each statement sees every commit made before it, so the check that runs after the
lock sees the jobs of every submit of the key admitted before: N concurrent submits for the
last M images admit exactly M, on one node or many sharing the database. (The service's queue
limit is checked in the same transaction: exact on SQLite; on PostgreSQL submits of different
keys hold different locks, so it may be passed by the submits in flight at once — it is
back-pressure, not a quota.)
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from faceanchor.errors import FaceAnchorError
from faceanchor.store.db import Base, Database
from faceanchor.types import JobStatus

Q, P, C, F, X = (JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value, JobStatus.COMPLETED.value,
                 JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class IdempotencyConflict(FaceAnchorError):
    """The same Idempotency-Key was sent with a different request."""

    http_status = 422
    type = "idempotency_conflict"


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("key_id", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_status_created", "status", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    app: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=Q)
    request_json: Mapped[str] = mapped_column(Text)
    request_sha256: Mapped[str] = mapped_column(String(64), default="")
    result_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_id: Mapped[str] = mapped_column(String(32), default="")
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    webhook_state: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending/delivered/failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    start_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Tenancy and quotas (issue 11; added to older databases by the additive migration).
    owner: Mapped[str | None] = mapped_column(String(80), nullable=True)
    images: Mapped[int | None] = mapped_column(Integer, nullable=True)


class JobLog(Base):
    __tablename__ = "job_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)


@dataclass(frozen=True)
class JobView:
    """A read-only snapshot of one job."""

    id: str
    app: str
    status: JobStatus
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None
    key_id: str
    idempotency_key: str | None
    webhook_url: str | None
    webhook_state: str | None
    webhook_attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    attempts: int
    cancel_requested: bool
    start_deadline: float | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    queue_position: int | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    owner: str | None = None
    images: int | None = None


def _loads(value: str | None) -> Any:
    return json.loads(value) if value else None


def key_lock_id(key_id: str) -> int:
    """The PostgreSQL advisory lock id (a signed 64-bit integer) that serialises one key's submits."""
    digest = hashlib.blake2b(b"faceanchor-key:" + key_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _view(row: Job, position: int | None = None) -> JobView:
    return JobView(
        id=row.id, app=row.app, status=JobStatus(row.status), request=json.loads(row.request_json),
        result=_loads(row.result_json), error=_loads(row.error_json), progress=_loads(row.progress_json),
        key_id=row.key_id, idempotency_key=row.idempotency_key, webhook_url=row.webhook_url,
        webhook_state=row.webhook_state, webhook_attempts=row.webhook_attempts, lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at, attempts=row.attempts, cancel_requested=bool(row.cancel_requested),
        start_deadline=row.start_deadline, created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, queue_position=position, owner=row.owner, images=row.images,
    )


_INSERT = Job.__table__.insert()
_QUEUED = select(func.count()).select_from(Job.__table__).where(Job.__table__.c.status == Q)


def error_dict(type_: str, message: str, status: int) -> dict[str, Any]:
    return {"type": type_, "message": message, "status": status}


DEADLINE_ERROR = error_dict("deadline_exceeded", "the job did not start before its start deadline", 504)


class CancelOutcome:
    REQUESTED = "CANCELLATION_REQUESTED"
    ALREADY_COMPLETED = "ALREADY_COMPLETED"


class JobStore:
    """Every read and conditional write of the job table."""

    def __init__(self, db: Database, clock=time.time):  # noqa: ANN001
        self.db = db
        self.clock = clock

    # ------------------------------------------------------------------ submit and read

    def submit(
        self,
        app: str,
        request: dict[str, Any],
        *,
        key_id: str = "",
        idempotency_key: str | None = None,
        request_sha256: str = "",
        webhook_url: str | None = None,
        start_deadline: float | None = None,
        owner: str | None = None,
        images: int | None = None,
        admit: Callable[[Session], None] | None = None,
        within: Callable[[Session], None] | None = None,
    ) -> tuple[JobView, bool]:
        """Insert a queued job; return ``(job, created)``. A repeated idempotency key returns the
        existing job (``created`` false), or raises :class:`IdempotencyConflict` if the request differs.

        ``admit(session)`` runs first inside the insert's transaction, after the key's lock (see
        the module docstring): it reads what it must (usage, queue depth) through ``session`` and
        raises to refuse the job, which then is not inserted. ``within(session)`` writes more rows
        in the same transaction (the job's file owners)."""
        if idempotency_key is not None:  # the cheap path for a repeat: a read, no lock
            existing = self.by_idempotency(key_id, idempotency_key, request_sha256)
            if existing is not None:
                return existing, False
        now = self.clock()
        values = dict(
            id=uuid.uuid4().hex, app=app, status=Q, request_json=json.dumps(request, sort_keys=True),
            request_sha256=request_sha256, key_id=key_id, idempotency_key=idempotency_key,
            webhook_url=webhook_url, webhook_state="pending" if webhook_url else None, webhook_attempts=0,
            attempts=0, cancel_requested=False, start_deadline=start_deadline, created_at=now,
            owner=owner, images=images,
        )
        try:
            with self.db.write() as s:
                if admit is not None or idempotency_key is not None:
                    self.lock_key(s, key_id)
                if idempotency_key is not None:  # under the key's lock: a racing repeat is seen here
                    existing = self._idempotent(s, key_id, idempotency_key, request_sha256)
                    if existing is not None:
                        return existing, False
                if admit is not None:
                    admit(s)
                s.connection().execute(_INSERT, values)  # Core: no unit of work for one new row
                if within is not None:
                    within(s)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = self.by_idempotency(key_id, idempotency_key, request_sha256)
            if existing is None:
                raise
            return existing, False
        return _view(Job(**values), position=None), True

    def lock_key(self, session: Session, key_id: str) -> None:
        """Serialise the rest of ``session``'s write transaction with every other one that locks
        ``key_id``. SQLite: nothing to do, ``BEGIN IMMEDIATE`` already made this the only writer.
        PostgreSQL: ``pg_advisory_xact_lock``, released when the transaction ends."""
        if not self.db.is_sqlite:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key_lock_id(key_id)})

    def _idempotent(self, s: Session, key_id: str, idem: str, request_sha256: str) -> JobView | None:
        row = s.scalar(select(Job).where(Job.key_id == key_id, Job.idempotency_key == idem))
        if row is None:
            return None
        if row.request_sha256 != request_sha256:
            raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
        return _view(row)

    def by_idempotency(self, key_id: str, idem: str, request_sha256: str) -> JobView | None:
        """The job this key already submitted with this idempotency key (None: none yet)."""
        with self.db.read() as s:
            return self._idempotent(s, key_id, idem, request_sha256)

    def get(self, job_id: str, *, with_logs: bool = False) -> JobView | None:
        with self.db.read() as s:
            row = s.get(Job, job_id)
            if row is None:
                return None
            position = self._position(s, row) if row.status == Q else None
            view = _view(row, position)
            if with_logs:
                logs = s.scalars(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id))
                view = _replace_logs(view, [{"timestamp": lg.at, "message": lg.message} for lg in logs])
            return view

    def _position(self, s, row: Job) -> int:  # noqa: ANN001
        ahead = s.scalar(
            select(func.count()).select_from(Job).where(
                Job.status == Q,
                or_(Job.created_at < row.created_at, and_(Job.created_at == row.created_at, Job.id < row.id)),
            )
        )
        return int(ahead or 0)

    def counts(self) -> dict[str, int]:
        with self.db.read() as s:
            rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        out = {st.value: 0 for st in JobStatus}
        out.update({status: int(n) for status, n in rows})
        return out

    def images_since(self, key_id: str, since: float, *, session: Session | None = None) -> int:
        """Images the key's jobs created since ``since`` asked for (failed and cancelled jobs do not
        count); in ``session`` when given (an admission check inside the submit's transaction)."""
        stmt = select(func.coalesce(func.sum(func.coalesce(Job.images, 1)), 0)).where(
            Job.key_id == key_id, Job.created_at >= since, Job.status.not_in([F, X]))
        if session is not None:
            return int(session.scalar(stmt) or 0)
        with self.db.read() as s:
            return int(s.scalar(stmt) or 0)

    def with_request_text(self, app_prefix: str, fragment: str) -> list[JobView]:
        """Jobs of apps starting with ``app_prefix`` whose stored request contains ``fragment``
        (e.g. the character jobs naming one character, to delete their files with it)."""
        with self.db.read() as s:
            rows = s.scalars(select(Job).where(Job.app.startswith(app_prefix, autoescape=True),
                                               Job.request_json.contains(fragment, autoescape=True)))
            return [_view(r) for r in rows]

    def queue_depth(self, *, session: Session | None = None) -> int:
        """Jobs waiting (every submit and ``/health`` asks: a Core count on the status index)."""
        if session is not None:
            return int(session.connection().execute(_QUEUED).scalar() or 0)
        with self.db.read() as s:
            return int(s.connection().execute(_QUEUED).scalar() or 0)

    # ------------------------------------------------------------------ worker side

    def claim(self, owner: str, lease_seconds: float, *, max_attempts: int = 3, apps: Iterable[str] | None = None) -> JobView | None:
        """Lease the oldest runnable job (queued, or in progress with an expired lease)."""
        apps = list(apps) if apps is not None else None
        locking = not self.db.is_sqlite  # SQLite: BEGIN IMMEDIATE already makes this writer the only one
        while True:
            now = self.clock()
            with self.db.write() as s:
                late = and_(Job.status == Q, Job.start_deadline.is_not(None), Job.start_deadline < now)
                if locking:  # only rows nobody else holds, so concurrent claims never wait on each other
                    late = Job.id.in_(select(Job.id).where(late).with_for_update(skip_locked=True).scalar_subquery())
                s.execute(
                    update(Job).where(late).values(status=F, error_json=json.dumps(DEADLINE_ERROR), finished_at=now)
                    .execution_options(synchronize_session=False)
                )
                runnable = or_(Job.status == Q, and_(Job.status == P, Job.lease_expires_at < now))
                stmt = select(Job).where(runnable)
                if apps is not None:
                    stmt = stmt.where(Job.app.in_(apps))
                stmt = stmt.order_by(Job.created_at, Job.id).limit(1)
                if locking:
                    stmt = stmt.with_for_update(skip_locked=True)
                row = s.scalar(stmt)
                if row is None:
                    return None
                if row.status == P and row.cancel_requested:
                    row.status, row.finished_at, row.lease_owner = X, now, None
                    row.error_json = json.dumps(error_dict("cancelled", "the job was cancelled", 409))
                    continue
                if row.attempts >= max_attempts:
                    row.status, row.finished_at, row.lease_owner = F, now, None
                    row.error_json = json.dumps(error_dict(
                        "worker_crashed", f"the job stopped its worker {row.attempts} times and was given up", 500))
                    continue
                # Compare-and-set, so the claim is exclusive on any backend (not only under
                # SQLite's single writer): it only lands if the job is still runnable.
                if not self._lease(s, row, owner, lease_seconds, now,
                                   or_(Job.status == Q, and_(Job.status == P, Job.lease_expires_at < now))):
                    continue
                return _view(row)

    def claim_matching(
        self, owner: str, lease_seconds: float, match: Callable[[JobView], bool], *, limit: int,
        apps: Iterable[str] | None = None, max_attempts: int = 3, scan: int = 64,
    ) -> list[JobView]:
        """Lease up to ``limit`` more queued jobs that ``match`` (the batched worker: jobs that
        can share one pipeline call with a job it holds), oldest first among the next ``scan``
        queued ones. Only queued jobs past no start deadline are taken (expired leases and late
        jobs are :meth:`claim`'s); each lease is a compare-and-set as there, and on PostgreSQL
        rows another claim holds are skipped."""
        if limit <= 0:
            return []
        apps = list(apps) if apps is not None else None
        now = self.clock()
        out: list[JobView] = []
        with self.db.write() as s:
            stmt = select(Job).where(Job.status == Q, Job.attempts < max_attempts, Job.cancel_requested.is_(False),
                                     or_(Job.start_deadline.is_(None), Job.start_deadline >= now))
            if apps is not None:
                stmt = stmt.where(Job.app.in_(apps))
            stmt = stmt.order_by(Job.created_at, Job.id).limit(scan)
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update(skip_locked=True)
            for row in s.scalars(stmt).all():
                if len(out) >= limit:
                    break
                try:
                    if not match(_view(row)):
                        continue
                except Exception:  # a request the key cannot read: it runs alone, through claim()
                    continue
                if not self._lease(s, row, owner, lease_seconds, now, Job.status == Q):
                    continue
                out.append(_view(row))
        return out

    @staticmethod
    def _lease(s: Any, row: Job, owner: str, lease_seconds: float, now: float, runnable: Any) -> bool:
        """Lease ``row`` to ``owner`` by compare-and-set (it lands only while the job is still at
        the attempt read and ``runnable``), so a claim is exclusive on any backend; on success
        ``row`` is refreshed."""
        res = s.execute(
            update(Job).where(Job.id == row.id, Job.attempts == row.attempts, runnable)
            .values(status=P, lease_owner=owner, lease_expires_at=now + lease_seconds, heartbeat_at=now,
                    attempts=row.attempts + 1, started_at=row.started_at if row.started_at is not None else now)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            return False
        s.expire(row)
        s.refresh(row)
        return True

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        lease_seconds: float,
        *,
        progress: dict[str, Any] | None = None,
        logs: list[tuple[float, str]] = (),  # type: ignore[assignment]
    ) -> tuple[bool, bool]:
        """Extend the lease (and record progress/logs); return ``(still_owner, cancel_requested)``."""
        now = self.clock()
        with self.db.write() as s:
            values: dict[str, Any] = {"lease_expires_at": now + lease_seconds, "heartbeat_at": now}
            if progress is not None:
                values["progress_json"] = json.dumps(progress)
            res = s.execute(update(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.status == P).values(**values))
            owned = res.rowcount == 1
            if owned and logs:
                s.add_all([JobLog(job_id=job_id, at=at, message=msg) for at, msg in logs])
            cancel = bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
        return owned, cancel

    def is_cancel_requested(self, job_id: str) -> bool:
        with self.db.read() as s:
            return bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))

    def _finish(self, job_id: str, owner: str, **values: Any) -> bool:
        """The conditional terminal write, retried through a dropped connection. A repeat of a
        write that landed (its reply was lost with the connection) finds the job already in the
        state ``owner`` gave it, and answers ``True`` again."""
        now = self.clock()

        def write() -> bool:
            with self.db.write() as s:
                res = s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.lease_owner == owner, Job.status == P)
                    .values(finished_at=now, lease_expires_at=None, **values)
                )
                if res.rowcount == 1:
                    return True
                landed = s.scalar(select(func.count()).select_from(Job).where(
                    Job.id == job_id, Job.lease_owner == owner, Job.status == values["status"], Job.finished_at == now))
                return bool(landed)

        return self.db.retrying(write)

    def complete(self, job_id: str, owner: str, result: dict[str, Any]) -> bool:
        """Record the result if ``owner`` still holds the job; ``False`` means another run won."""
        return self._finish(job_id, owner, status=C, result_json=json.dumps(result))

    def fail(self, job_id: str, owner: str, error: dict[str, Any]) -> bool:
        return self._finish(job_id, owner, status=F, error_json=json.dumps(error))

    def finish_cancelled(self, job_id: str, owner: str) -> bool:
        return self._finish(job_id, owner, status=X, error_json=json.dumps(error_dict("cancelled", "the job was cancelled", 409)))

    def release(self, job_id: str, owner: str) -> bool:
        """Give a running job back to the queue (graceful shutdown); attempts are refunded."""
        def write() -> bool:
            with self.db.write() as s:
                res = s.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.lease_owner == owner, Job.status == P)
                    .values(status=Q, lease_owner=None, lease_expires_at=None, attempts=Job.attempts - 1)
                )
                return res.rowcount == 1

        return self.db.retrying(write, seconds=5.0)

    def requeue(self, job_id: str, owner: str) -> bool:
        """Put a running job back in the queue for another attempt (its attempt stays counted)."""
        with self.db.write() as s:
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == owner, Job.status == P)
                .values(status=Q, lease_owner=None, lease_expires_at=None)
            )
            return res.rowcount == 1

    def append_logs(self, job_id: str, logs: list[tuple[float, str]]) -> None:
        if logs:
            with self.db.write() as s:
                s.add_all([JobLog(job_id=job_id, at=at, message=msg) for at, msg in logs])

    # ------------------------------------------------------------------ client side

    def request_cancel(self, job_id: str) -> str | None:
        """Cancel a queued job now, flag a running one; ``None`` if there is no such job."""
        now = self.clock()
        with self.db.write() as s:
            row = s.get(Job, job_id, with_for_update=True)  # PostgreSQL: no claim slips in between
            if row is None:
                return None
            if JobStatus(row.status).finished:
                return CancelOutcome.ALREADY_COMPLETED
            row.cancel_requested = True
            if row.status == Q:
                row.status, row.finished_at = X, now
                row.error_json = json.dumps(error_dict("cancelled", "the job was cancelled before it started", 409))
            return CancelOutcome.REQUESTED

    def expire_deadline(self, job_id: str) -> None:
        """Fail a still-queued job whose start deadline passed (so clients see 504 promptly)."""
        now = self.clock()
        with self.db.write() as s:
            s.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == Q, Job.start_deadline.is_not(None), Job.start_deadline < now)
                .values(status=F, error_json=json.dumps(DEADLINE_ERROR), finished_at=now)
            )

    # ------------------------------------------------------------------ webhooks

    def pending_webhooks(self) -> list[JobView]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Job).where(Job.webhook_state == "pending", Job.status.in_([C, F, X])).order_by(Job.finished_at)
            )
            return [_view(r) for r in rows]

    def mark_webhook(self, job_id: str, state: str, attempts: int) -> None:
        with self.db.write() as s:
            s.execute(update(Job).where(Job.id == job_id).values(webhook_state=state, webhook_attempts=attempts))


def _replace_logs(view: JobView, logs: list[dict[str, Any]]) -> JobView:
    from dataclasses import replace

    return replace(view, logs=logs)
