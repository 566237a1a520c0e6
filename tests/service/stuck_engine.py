"""An engine for the supervisor tests: prompt "stuck" sleeps (30 s) in one C call (``time.sleep``),
never looking at its cancel flag (a native kernel that ignores Python); other prompts run the
tiny engine. Every run holds an exclusive lock on ``STUCK_LOCK`` and appends ``start``/``end``
lines with its pid to ``STUCK_LOG``, so a test sees whether two runs ever overlapped."""

from __future__ import annotations

import fcntl
import os
import time

from tiny_engine import TinyEngine


class StuckEngine(TinyEngine):
    def __init__(self, log: str, lock: str, stuck_seconds: float = 30.0):
        super().__init__()
        self.log, self.lock, self.stuck_seconds = log, lock, stuck_seconds

    def _note(self, text: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {text}\n")

    def generate(self, request, on_progress=None, cancel=None):
        with open(self.lock, "w") as lk:
            try:
                fcntl.flock(lk, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._note("CONCURRENT")
                raise
            self._note(f"start {request.prompt}")
            if request.prompt == "stuck":
                time.sleep(self.stuck_seconds)
            out = super().generate(request, on_progress, cancel)
            self._note(f"end {request.prompt}")
            return out


def factory(settings) -> StuckEngine:  # noqa: ANN001
    return StuckEngine(os.environ["STUCK_LOG"], os.environ["STUCK_LOCK"])
