"""Image quotas per key: images per UTC day and per UTC calendar month.

A key's own ``images_per_day`` / ``images_per_month`` win over the server settings; ``None``
means "the server's", 0 means unlimited. Usage is read from the job table: the images every
job of the key created in the period asked for (``samples``; 4 for an ID photo), failed and
cancelled jobs not counted. An exhausted quota answers **429** ``quota_exceeded`` with the
numbers in the message and in ``X-Quota-*`` headers, and ``Retry-After`` until the period
resets (the Segmind-shaped ``/v1/instantid`` answers 406, Segmind's "insufficient credits").

The check is atomic: :meth:`Service.submit <faceanchor.service.runtime.Service.submit>` runs it
inside the job insert's transaction, serialised per key (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: a transaction-scoped advisory lock on the key, see :mod:`faceanchor.store.jobs`), so
concurrent submits of one key — on one server or on several sharing one PostgreSQL — never
admit more images than the limit left: N submits for the last M images admit exactly M.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from faceanchor.errors import FaceAnchorError


class QuotaExceededError(FaceAnchorError):
    http_status = 429
    type = "quota_exceeded"

    def __init__(self, message: str, *, limit: int, used: int, requested: int, period: str, resets_at: float, now: float):
        super().__init__(message)
        self.limit, self.used, self.requested, self.period, self.resets_at = limit, used, requested, period, resets_at
        self.retry_after = max(1, int(resets_at - now + 0.999))
        self.headers = {"X-Quota-Limit": str(limit), "X-Quota-Used": str(used), "X-Quota-Requested": str(requested),
                        "X-Quota-Period": period, "X-Quota-Resets-At": _iso(resets_at)}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """Start and end (unix seconds) of the UTC ``day`` or ``month`` holding ``now``."""
    d = datetime.fromtimestamp(now, timezone.utc)
    if period == "day":
        start = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        return start.timestamp(), start.timestamp() + 86400
    start = datetime(d.year, d.month, 1, tzinfo=timezone.utc)
    days = calendar.monthrange(d.year, d.month)[1]
    return start.timestamp(), start.timestamp() + days * 86400


def images_of(app: str, request: dict[str, Any]) -> int:
    """Images a submitted request will create (what a quota counts)."""
    if app == "character/id-photo":
        return 4
    fields = request.get("fields", request)
    try:
        return max(1, int(fields.get("samples", 1) or 1))
    except (TypeError, ValueError):
        return 1


@dataclass(frozen=True)
class Limits:
    per_day: int | None
    per_month: int | None


def limits_for(key: Any, settings: Any) -> Limits:
    def pick(own: int | None, server: int | None) -> int | None:
        value = own if own is not None else server
        return value if value else None  # 0 / None: unlimited

    return Limits(pick(getattr(key, "images_per_day", None), settings.images_per_day),
                  pick(getattr(key, "images_per_month", None), settings.images_per_month))


def usage(jobs: Any, key: Any, settings: Any, now: float | None = None) -> dict[str, Any]:
    """The key's usage: per period, images used, the limit (null: unlimited), remaining and reset time."""
    now = time.time() if now is None else now
    lim = limits_for(key, settings)
    out: dict[str, Any] = {"key_id": key.id, "name": key.name, "tenant": key.tenant}
    for period, limit in (("day", lim.per_day), ("month", lim.per_month)):
        start, end = period_bounds(period, now)
        used = jobs.images_since(key.id, start)
        out[period] = {"images": used, "limit": limit, "remaining": None if limit is None else max(0, limit - used),
                       "period_start": _iso(start), "resets_at": _iso(end)}
    rpm = key.rate_limit_per_minute if key.rate_limit_per_minute is not None else settings.rate_limit_per_minute
    out["requests_per_minute"] = rpm or None
    return out


def check(jobs: Any, key: Any, settings: Any, requested: int, now: float | None = None, *, session: Any = None) -> None:
    """Raise :class:`QuotaExceededError` if ``requested`` more images would pass a limit of the key.
    With ``session`` (the submit's write transaction, holding the key's lock) the usage is read in
    it, which makes check-and-insert atomic."""
    now = time.time() if now is None else now
    lim = limits_for(key, settings)
    for period, limit in (("day", lim.per_day), ("month", lim.per_month)):
        if limit is None:
            continue
        start, end = period_bounds(period, now)
        used = jobs.images_since(key.id, start, session=session)
        if used + requested > limit:
            raise QuotaExceededError(
                f"image quota exhausted for this key: {used} of {limit} images per {period} used, this request needs "
                f"{requested}; the {period} resets at {_iso(end)}",
                limit=limit, used=used, requested=requested, period=period, resets_at=end, now=now)
