"""The service database through SQLAlchemy 2, shared by jobs, keys, characters and file owners:
one SQLite file (WAL) on one machine, or PostgreSQL (psycopg 3) shared by many.

Every table declares itself on :class:`Base`; :class:`Database` opens the database and hands
out sessions.

* **SQLite**: WAL; reads use deferred transactions; writes use ``BEGIN IMMEDIATE`` so a
  read-then-write never fails half-way with "database is locked" under concurrency: writers
  wait for each other (``busy_timeout``) instead. ``synchronous=NORMAL``: every commit survives
  a killed process (the durability the queue promises); a power cut may lose the last commits.
* **PostgreSQL** (``postgresql://…``, driven by psycopg 3): READ COMMITTED transactions run in
  parallel; the stores lock the rows they change (``SELECT … FOR UPDATE``, job claims with
  ``SKIP LOCKED``), pooled connections are checked before use, and :meth:`Database.retrying`
  rides out a dropped connection or a restarted server. Schema creation takes an advisory
  lock, so replicas starting together do not race.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from sqlalchemy import Connection, Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.schema import CreateColumn
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


log = logging.getLogger("faceanchor.store")

T = TypeVar("T")

#: The advisory lock key under which PostgreSQL schema changes run (any constant of our own).
_SCHEMA_LOCK = 0x66616365  # "face"


class Base(DeclarativeBase):
    """Declarative base of every faceanchor table."""


def normalise_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean PostgreSQL through psycopg 3 (the driver the
    ``postgres`` extra installs; SQLAlchemy's default would be psycopg2)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def display_url(url: str) -> str:
    """The URL with its password masked, for logs and start-up lines."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@", 1)[-1] if "@" in url else url


def is_transient(error: BaseException) -> bool:
    """A database error worth retrying: the connection dropped, the server restarted or is
    starting, a deadlock/serialisation abort, SQLite busy. Constraint and programming errors are not."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, (OperationalError, InterfaceError)):
        return False
    orig = getattr(error, "orig", None)
    if type(orig).__module__.startswith("sqlite3"):  # SQLite's OperationalError also means "no such table"
        return any(word in str(orig).lower() for word in ("locked", "busy"))
    return True  # psycopg: connection lost, server shutting down or starting, deadlock/serialisation


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, pool_pre_ping=False)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Engines and sessions for one database URL (``sqlite:///path`` by default).

    ``read()`` and ``write()`` are context managers yielding a :class:`Session`; ``write()``
    commits on success and rolls back on error.
    """

    def __init__(self, url: str, *, retry_seconds: float = 30.0):
        url = normalise_url(url)
        self.url = url
        self.retry_seconds = retry_seconds
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith("postgresql")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:  # PostgreSQL (or another server): its own transactions, row locks and pool
            self.read_engine = self.write_engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        # SQLite has one writer: this process's writers queue on a lock (see write()). A server
        # database runs writers in parallel; row locks order them.
        self._write_lock = threading.Lock() if self.is_sqlite else nullcontext()

    @classmethod
    def from_settings(cls, settings) -> "Database":  # noqa: ANN001
        db = cls(settings.resolved_database_url())
        db.create_all()
        return db

    def create_all(self) -> None:
        # Import the table modules so they register on Base.metadata.
        from faceanchor.store import file_owners, jobs, keys  # noqa: F401

        self.migrate()

    def migrate(self, tables=None) -> None:  # noqa: ANN001
        """Create missing tables (all of :class:`Base`'s, or ``tables``) and add missing columns.
        On PostgreSQL under an advisory lock: replicas starting at once take turns."""
        def run() -> None:
            with self.write_engine.begin() as conn:
                if self.is_postgres:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK})
                Base.metadata.create_all(conn, tables=tables)
                add_missing_columns(conn, Base.metadata, tables)

        self.retrying(run)

    def retrying(self, fn: Callable[[], T], *, seconds: float | None = None) -> T:
        """``fn()``, run again while it fails with a transient database error (see
        :func:`is_transient`), for up to ``seconds`` (default ``retry_seconds``); then the last error.

        ``fn`` must be safe to repeat: each call is its own transaction, and the stores' writes
        are conditional (a repeat of a write that did land finds nothing left to change)."""
        deadline = time.monotonic() + (self.retry_seconds if seconds is None else seconds)
        delay = 0.05
        while True:
            try:
                return fn()
            except Exception as e:
                if not is_transient(e) or time.monotonic() + delay > deadline:
                    raise
                log.warning("database unavailable (%s); retrying in %.2f s", type(e.orig if isinstance(e, DBAPIError) else e).__name__, delay)
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._read() as session:
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        # Writers of this process queue on a lock rather than in SQLite's busy handler, whose
        # sleeps (1, 2, 5, 10, ... ms) would add tens of milliseconds under contention; other
        # processes still wait through busy_timeout.
        with self._write_lock, self._write() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def dispose(self) -> None:
        self.read_engine.dispose()
        if self.write_engine is not self.read_engine:
            self.write_engine.dispose()


def add_missing_columns(engine: Engine | Connection, metadata: MetaData, tables=None) -> list[str]:  # noqa: ANN001
    """The additive migration: ``ALTER TABLE … ADD COLUMN`` for every column a table of
    ``metadata`` declares that the database's table lacks (a database made by an older
    version). New columns are nullable or carry a ``server_default``, so old rows stay valid.
    The column DDL is rendered by SQLAlchemy for the engine's dialect (SQLite, PostgreSQL).
    ``engine`` may be a connection inside a transaction (then the changes are part of it).
    Returns the ``table.column`` names added."""
    added: list[str] = []
    inspector = inspect(engine)
    existing_tables = set(inspector.get_table_names())
    preparer = engine.dialect.identifier_preparer
    for table in tables if tables is not None else metadata.sorted_tables:
        if table.name not in existing_tables:
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            ddl = CreateColumn(column).compile(dialect=engine.dialect)
            statement = text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {ddl}")
            if isinstance(engine, Connection):
                engine.execute(statement)
            else:
                with engine.begin() as conn:
                    conn.execute(statement)
            added.append(f"{table.name}.{column.name}")
    return added
