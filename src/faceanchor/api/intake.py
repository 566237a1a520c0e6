"""Bounded intake: how request work reaches threads without starving the rest of the server.

Submits (validate the body cheaply, store its bytes, insert the job) run in threads, at most
``intake_concurrency`` at once; the others wait on the event loop holding only their parsed
body. ``/health`` has a thread of its own, so readiness never waits behind request work in the
shared pool (anyio's default limiter, 40 threads, which every sync route uses).
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")


class Lanes:
    """Capacity limiters by name, made on first use inside the running event loop."""

    def __init__(self, sizes: dict[str, int]):
        self.sizes = dict(sizes)
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    async def run(self, lane: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, holding one of ``lane``'s places."""
        limiter = self._limiters.get(lane)
        if limiter is None:
            limiter = self._limiters.setdefault(lane, anyio.CapacityLimiter(self.sizes[lane]))
        return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)


def lanes_for(settings: Any) -> Lanes:
    return Lanes({"intake": settings.intake_concurrency, "health": 1})
