"""API keys, stored hashed.

A key reads ``fa_<id>_<secret>``: ``id`` (12 hex digits) is the public prefix by which the row is
found, and only the sha256 of the whole key is stored. A key is shown once, when created.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import Boolean, Float, Integer, String, bindparam, false, select
from sqlalchemy.orm import Mapped, mapped_column

from faceanchor.store.db import Base, Database

_KEY = re.compile(r"^fa_(?P<id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{20,100})$")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    rate_limit_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Tenancy and quotas (issue 11; added to older databases by the additive migration).
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)
    images_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    images_per_month: Mapped[int | None] = mapped_column(Integer, nullable=True)


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    created_at: float
    revoked_at: float | None
    rate_limit_per_minute: int | None
    admin: bool = False
    tenant: str | None = None
    images_per_day: int | None = None
    images_per_month: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def owner(self) -> str:
        """Who this key's jobs, files and characters belong to: its tenant (shared by every key
        of the tenant) or the key itself."""
        return f"tenant:{self.tenant}" if self.tenant else f"key:{self.id}"

    def can_see(self, owner: str | None, key_id: str | None = None) -> bool:
        """May this key read a resource owned by ``owner`` (older rows without an owner: by
        ``key_id``)? Admin keys see everything."""
        if self.admin:
            return True
        if owner:
            return owner == self.owner
        return bool(key_id) and key_id == self.id

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "admin": self.admin,
            "tenant": self.tenant,
            "images_per_day": self.images_per_day,
            "images_per_month": self.images_per_month,
        }


class KeyCheck:
    """Outcomes of :meth:`KeyStore.verify`."""

    OK = "ok"
    UNKNOWN = "unknown"  # malformed, no such id, or wrong secret
    REVOKED = "revoked"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


_BY_ID = select(ApiKey.__table__).where(ApiKey.__table__.c.id == bindparam("id"))


def _info(row: ApiKey) -> KeyInfo:  # an ORM row or a Core row of the table
    return KeyInfo(row.id, row.name, row.created_at, row.revoked_at, row.rate_limit_per_minute, bool(row.admin),
                   row.tenant, row.images_per_day, row.images_per_month)


class KeyStore:
    def __init__(self, db: Database):
        self.db = db

    def create(self, name: str = "", rate_limit_per_minute: int | None = None, *, admin: bool = False,
               tenant: str | None = None, images_per_day: int | None = None,
               images_per_month: int | None = None) -> tuple[str, KeyInfo]:
        """Make a key; return ``(the key in clear, its info)``. The clear key is not kept.

        ``admin`` keys see every tenant's resources and manage keys; keys with the same
        ``tenant`` share their jobs, files and characters; ``images_per_day`` /
        ``images_per_month`` override the server's quotas (0: unlimited)."""
        if tenant is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", tenant):
            raise ValueError("a tenant is 1-64 letters, digits, '_', '.' or '-'")
        with self.db.write() as s:
            while True:
                key_id = secrets.token_hex(6)
                if s.get(ApiKey, key_id) is None:
                    break
            key = f"fa_{key_id}_{secrets.token_urlsafe(32)}"
            row = ApiKey(id=key_id, name=name, key_hash=hash_key(key), created_at=time.time(),
                         rate_limit_per_minute=rate_limit_per_minute, admin=admin, tenant=tenant,
                         images_per_day=images_per_day, images_per_month=images_per_month)
            s.add(row)
            s.flush()
            return key, _info(row)

    def list(self) -> list[KeyInfo]:
        with self.db.read() as s:
            return [_info(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.created_at))]

    def get(self, key_id: str) -> KeyInfo | None:
        with self.db.read() as s:
            row = s.get(ApiKey, key_id)
            return _info(row) if row else None

    def revoke(self, key_id: str) -> bool:
        """Revoke by id (or by the whole key); ``False`` if no such key."""
        m = _KEY.match(key_id)
        if m:
            key_id = m.group("id")
        with self.db.write() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                return False
            if row.revoked_at is None:
                row.revoked_at = time.time()
            return True

    def verify(self, key: str) -> tuple[str, KeyInfo | None]:
        """Check a presented key: ``(KeyCheck.OK | UNKNOWN | REVOKED, info)``."""
        m = _KEY.match(key.strip())
        if not m:
            return KeyCheck.UNKNOWN, None
        with self.db.read() as s:  # every request runs this: one Core select, no ORM identity map
            row = s.connection().execute(_BY_ID, {"id": m.group("id")}).first()
            if row is None or not hmac.compare_digest(row.key_hash, hash_key(key.strip())):
                return KeyCheck.UNKNOWN, None
            info = _info(row)
        return (KeyCheck.REVOKED if info.revoked else KeyCheck.OK), info
