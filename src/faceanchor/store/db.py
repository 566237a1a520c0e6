"""The service database: one SQLite file (WAL) through SQLAlchemy 2, shared by jobs, keys and characters.

Every table declares itself on :class:`Base`; :class:`Database` opens the file, turns on WAL,
and hands out sessions. Reads use deferred transactions; writes use ``BEGIN IMMEDIATE`` so a
read-then-write never fails half-way with "database is locked" under concurrency: writers wait
for each other (``busy_timeout``) instead. ``synchronous=NORMAL``: every commit survives a
killed process (the durability the queue promises); a power cut may lose the last commits.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, MetaData, create_engine, event, inspect, text
from sqlalchemy.schema import CreateColumn
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker


class Base(DeclarativeBase):
    """Declarative base of every faceanchor table."""


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

    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
            self.write_engine = _sqlite_engine(url, immediate=True)
        else:  # another SQLAlchemy backend (e.g. PostgreSQL): its own transactions suffice
            self.read_engine = self.write_engine = create_engine(url, pool_pre_ping=True)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> "Database":  # noqa: ANN001
        db = cls(settings.resolved_database_url())
        db.create_all()
        return db

    def create_all(self) -> None:
        # Import the table modules so they register on Base.metadata.
        from faceanchor.store import file_owners, jobs, keys  # noqa: F401

        Base.metadata.create_all(self.write_engine)
        add_missing_columns(self.write_engine, Base.metadata)

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


def add_missing_columns(engine: Engine, metadata: MetaData, tables=None) -> list[str]:  # noqa: ANN001
    """The additive migration: ``ALTER TABLE … ADD COLUMN`` for every column a table of
    ``metadata`` declares that the database's table lacks (a database made by an older
    version). New columns are nullable or carry a ``server_default``, so old rows stay valid.
    The column DDL is rendered by SQLAlchemy for the engine's dialect (SQLite, PostgreSQL).
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
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {ddl}"))
            added.append(f"{table.name}.{column.name}")
    return added
