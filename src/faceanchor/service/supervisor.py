"""Worker liveness: an engine in a supervised child process, recycled when a job is stuck.

Cancellation lands within a second wherever Python runs (:mod:`faceanchor.cancel`), but a kernel
that never returns to Python cannot be stopped from inside its process. With the setting
``worker_processes`` each worker's engine lives in a child process (:class:`EngineProcess`, an
engine to the worker: ``generate(request, on_progress, cancel)``). The worker's thread relays the
request, the progress events and the cancel flag; when the job's cancel or time limit has come
and the child has not stopped ``job_stuck_grace_seconds`` later, the child is killed (and waited
for: the job never runs twice at once), a fresh one is started, and :class:`WorkerRecycled` tells
the worker to retry the job once or fail it. A child that dies on its own is handled alike.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import threading
import time
from typing import Any, Callable

from faceanchor.errors import FaceAnchorError
from faceanchor.types import CancelCheck, GenerationRequest, GenerationResult, ProgressCallback

log = logging.getLogger("faceanchor.service")


class WorkerRecycled(FaceAnchorError):
    """The job's worker process was killed and replaced (stuck past its cancel/limit, or it died)."""

    http_status = 500
    type = "worker_stuck"


def _child(conn: Any, cancel: Any, factory: Callable[[Any], Any], settings: Any) -> None:
    """The child process: build the engine, then serve ``("generate", request)`` messages."""
    try:
        engine = factory(settings)
    except BaseException as e:  # noqa: BLE001
        _send(conn, ("load_error", e))
        return
    _send(conn, ("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        _, request = msg
        try:
            result = engine.generate(request, lambda ev: _send(conn, ("progress", ev)), cancel.is_set)
            _send(conn, ("result", result))
        except BaseException as e:  # noqa: BLE001
            _send(conn, ("error", e))


def _send(conn: Any, msg: tuple[str, Any]) -> None:
    try:
        conn.send(msg)
    except Exception as e:  # an exception or result that does not pickle
        if msg[0] in ("error", "result", "load_error"):
            conn.send(("error", FaceAnchorError(f"the worker process could not send its {msg[0]} ({type(e).__name__}: {e})")))


class EngineProcess:
    """An engine in a child process (spawned), supervised by the calling thread."""

    supervised = True  # the worker leaves stuck jobs to it (it kills and replaces the child)

    def __init__(self, factory: Callable[[Any], Any], settings: Any, *, grace: float | None = None,
                 start_timeout: float = 600.0):
        self.factory = factory
        self.settings = settings
        self.grace = float(grace if grace is not None else getattr(settings, "job_stuck_grace_seconds", 10.0))
        self.start_timeout = start_timeout
        self.recycled = 0  # child processes killed and replaced
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None
        self._cancel: Any = None
        self._ready = False

    # ------------------------------------------------------------------ the child

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> "EngineProcess":
        """Start the child and wait until its engine is loaded (a load error is raised here)."""
        if self._proc is not None and self._proc.is_alive() and self._ready:
            return self
        parent, child = self._ctx.Pipe()
        self._cancel = self._ctx.Event()
        self._proc = self._ctx.Process(target=_child, args=(child, self._cancel, self.factory, self.settings),
                                       name="faceanchor-engine", daemon=True)
        self._proc.start()
        child.close()
        self._conn, self._ready = parent, False
        deadline = time.monotonic() + self.start_timeout
        while not parent.poll(0.1):
            if not self._proc.is_alive():
                raise FaceAnchorError(f"the engine process exited while loading (exit code {self._proc.exitcode})")
            if time.monotonic() > deadline:
                self._kill()
                raise FaceAnchorError(f"the engine process did not load within {self.start_timeout:g} s")
        kind, payload = parent.recv()
        if kind == "load_error":
            self._kill()
            raise payload
        self._ready = True
        return self

    def _kill(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.is_alive():
            proc.kill()
        proc.join(30)  # gone before anyone else may run the job
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn, self._ready = None, None, False

    def recycle(self) -> None:
        """Kill the child (and wait for it), then start a fresh one (before the next job's clock runs)."""
        log.warning("engine process %s recycled", self.pid)
        self._kill()
        self.recycled += 1
        try:
            self.start()
        except Exception:  # the next generate() tries again and reports it
            log.exception("the replacement engine process failed to start")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._proc is not None and self._proc.is_alive():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
                self._proc.join(5)
            self._kill()

    # ------------------------------------------------------------------ the engine protocol

    def generate(self, request: GenerationRequest, on_progress: ProgressCallback | None = None,
                 cancel: CancelCheck | None = None) -> GenerationResult:
        notify = on_progress or (lambda e: None)
        check = cancel or (lambda: False)
        with self._lock:
            self.start()
            self._cancel.clear()
            self._conn.send(("generate", request))
            stop_by: float | None = None
            while True:
                if self._conn.poll(0.05):
                    try:
                        kind, payload = self._conn.recv()
                    except EOFError:
                        kind, payload = "died", None
                    if kind == "progress":
                        notify(payload)
                        continue
                    if kind == "result":
                        return payload
                    if kind == "error":
                        raise payload
                if not self._proc.is_alive():
                    code = self._proc.exitcode
                    self.recycle()
                    raise WorkerRecycled(f"the worker process died during the job (exit code {code}); it was restarted")
                if stop_by is None and check():
                    self._cancel.set()  # the child's engine stops at its next checkpoint
                    stop_by = time.monotonic() + self.grace
                elif stop_by is not None and time.monotonic() > stop_by:
                    self.recycle()
                    raise WorkerRecycled(
                        f"the job did not stop within {self.grace:g} s of its cancel or time limit (stuck outside "
                        "Python, e.g. in a native kernel); its worker process was recycled"
                    )

