"""One background thread per worker that stores finished results while the engine runs the next job.

Encoding a 1024² PNG with its metadata, the trust steps (watermark, credentials) and writing the
file take about 0.4 s per image: the worker hands each finished result to its
:class:`ResultWriter` and claims the next job at once. Writes run one at a time in submission
order; the queue is bounded (``capacity`` results waiting), so a worker whose writes fall behind
waits in :meth:`ResultWriter.submit` instead of piling results up in memory. The job is recorded
(COMPLETED, or FAILED with the write's error) by the write itself, only after its files are
stored. :meth:`ResultWriter.close` drains: every accepted write finishes before it returns.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

log = logging.getLogger("faceanchor.service")

Write = Callable[[], None]

_CLOSE = object()


class ResultWriter:
    """Runs submitted writes one by one on its own thread, ``capacity`` of them waiting at most."""

    def __init__(self, name: str, capacity: int = 1):
        if capacity < 1:
            raise ValueError("a result writer needs room for at least one waiting result")
        self._queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self._pending = 0  # accepted and not yet finished (waiting or being written)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"{name}-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Writes accepted and not finished yet."""
        with self._lock:
            return self._pending

    def submit(self, write: Write) -> None:
        """Queue ``write``; block while ``capacity`` writes are already waiting."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the result writer is closed")
            self._pending += 1
        self._queue.put(write)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every accepted write has finished; return whether it did in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting writes, finish the accepted ones, end the thread; return whether it ended."""
        with self._lock:
            if self._closed:
                already = True
            else:
                self._closed, already = True, False
        if not already:
            self._queue.put(_CLOSE)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                return
            try:
                item()  # type: ignore[operator]
            except Exception:  # a write records its own errors; this is a bug in that bookkeeping
                log.exception("a background result write failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
