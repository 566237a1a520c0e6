"""One worker thread per device: claim a job, run it on the engine, write the outcome once.

While a job runs, a heartbeat thread extends its lease, records progress and log lines, and
reads the cancel flag. The engine's ``cancel`` callable polls that flag in the database (and an
in-process event for speed), so cancelling works between denoising steps. If the lease is
lost (this worker stalled past expiry and another took the job) the run is abandoned and its
result discarded: the conditional writes in :class:`~faceanchor.store.jobs.JobStore` make sure
only one run's outcome is ever recorded.

Batching (setting ``worker_batch_max`` > 1, an engine with ``generate_many``): after claiming a
generation job the worker also leases up to ``worker_batch_max - 1`` more queued jobs of the same
app whose engine :meth:`batch_key` is equal, and runs them as one engine call. Every job keeps
its own lease, heartbeat, progress, logs, cancel flag, time limit and outcome: a cancelled job
of the batch ends CANCELLED and its images are discarded while the others complete; a job whose
own input fails (no face) fails alone; if the shared call itself fails, the jobs are run again
one by one, each getting its own outcome.

With ``write_queue`` > 0 (setting ``worker_write_queue``) a finished result is encoded and
stored by the worker's :class:`~faceanchor.service.result_writer.ResultWriter` while the engine
already runs the next job (or batch); the job keeps its lease and heartbeats until that write has
recorded its outcome (COMPLETED once the files are stored; FAILED, that job only, when writing fails).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import ValidationError

from faceanchor import cancel as cancellation
from faceanchor.errors import Cancelled, FaceAnchorError, InvalidInputError
from faceanchor.service.results import store_result
from faceanchor.service.result_writer import ResultWriter
from faceanchor.trust.finalise import job_scope
from faceanchor.service.supervisor import WorkerRecycled
from faceanchor.store.db import is_transient
from faceanchor.store.files import FileStore
from faceanchor.store.jobs import JobStore, JobView, error_dict
from faceanchor.types import (
    CancelCheck,
    GenerationEngine,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProgressEvent,
)

log = logging.getLogger("faceanchor.service")

#: Runs one job's request on an engine. ``request`` has its input files already resolved to bytes.
JobRunner = Callable[[GenerationEngine, dict[str, Any], ProgressCallback, CancelCheck], GenerationResult]


class InputMissingError(FaceAnchorError):
    http_status = 500
    type = "input_missing"


def run_generation(engine: GenerationEngine, request: dict[str, Any], on_progress: ProgressCallback, cancel: CancelCheck) -> GenerationResult:
    """The runner of the generation apps (one per app of the method registry)."""
    return engine.generate(_parse(request), on_progress, cancel)


def _parse(request: dict[str, Any]) -> GenerationRequest:
    try:
        return GenerationRequest.model_validate(request)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "request"
        raise InvalidInputError(f"{loc}: {first.get('msg', 'invalid value')}") from None


def _file_placeholders(value: Any) -> Any:
    """A stored request with every ``{"$file": id}`` as empty bytes: enough to read its batch key."""
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            return b""
        return {k: _file_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_file_placeholders(v) for v in value]
    return value


def generation_batch_key(engine: Any, app: str, request: dict[str, Any]) -> Any:
    """The batch key of a stored generation request (``None``: it runs alone)."""
    key_of = getattr(engine, "batch_key", None)
    if key_of is None or not hasattr(engine, "generate_many"):
        return None
    try:
        parsed = GenerationRequest.model_validate(_file_placeholders(request))
    except ValidationError:
        return None
    key = key_of(parsed)
    return None if key is None else (app, key)


def default_runners() -> dict[str, JobRunner]:
    """The generation runner for every app of the method registry."""
    from faceanchor.methods.registry import apps

    return {app: run_generation for app in apps()}


def resolve_inputs(value: Any, files: FileStore) -> Any:
    """Replace every ``{"$file": id}`` in a stored request with the file's bytes."""
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            data = files.get(value["$file"], "inputs")
            if data is None:
                raise InputMissingError(f"the job's input file {value['$file'][:12]}… is missing from the store")
            return data
        return {k: resolve_inputs(v, files) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_inputs(v, files) for v in value]
    return value


def job_limit(default: float | None, requested: Any) -> float | None:
    """A job's time limit: the request's ``timeout`` (seconds) when given, never above ``default``."""
    try:
        req = float(requested) if requested is not None else None
    except (TypeError, ValueError):
        req = None
    if req is not None and req > 0:
        return min(req, default) if default is not None else req
    return default


def _log_db_error(what: str, error: Exception) -> None:
    """One line for a database that is away for a moment (it is retried); a traceback otherwise."""
    if is_transient(error):
        log.warning("%s: database unavailable (%s)", what, type(error).__name__)
    else:
        log.error("%s", what, exc_info=error)


@dataclass
class _Outcome:
    """What one run of a job came to, before it is recorded."""

    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancelled: bool = False
    recycled: WorkerRecycled | None = None
    abandoned: bool = False  # the lease was lost: nothing is recorded
    deferred: bool = False  # the result went to the background writer, which records the outcome


#: :meth:`Worker._record`'s answer when the result went to the background writer.
_DEFERRED = "deferred"


@dataclass
class _Run:
    job: JobView
    owner: str
    cancel: threading.Event = field(default_factory=threading.Event)
    lost: bool = False
    finishing: bool = False  # the terminal write is under way; heartbeats stop counting
    done: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] | None = None
    progress_dirty: bool = False
    logs: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_cancel_poll: float = 0.0
    limit: float | None = None  # the job's time limit (seconds)
    deadline: float | None = None  # time.monotonic() past which the job is stopped
    timed_out: bool = False
    stop_since: float | None = None  # when the cancel or the time limit came (stuck detection)
    t0: float = 0.0  # when this run started (inference time)
    peers: list["_Run"] = field(default_factory=list)  # the other jobs of its batch (batched worker)
    beat: threading.Thread | None = None


class Worker(threading.Thread):
    """Claims and runs jobs until :meth:`stop`."""

    def __init__(
        self,
        name: str,
        engine: GenerationEngine,
        jobs: JobStore,
        files: FileStore,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        runners: dict[str, JobRunner] | None = None,
        wakeup: threading.Event | None = None,
        on_finished: Callable[[JobView], None] | None = None,
        poll_interval: float = 0.25,
        owners: Any = None,
        job_timeout: float | None = None,
        stuck_grace: float = 10.0,
        settings: Any = None,
        batch_max: int = 1,
        write_queue: int = 0,
    ):
        super().__init__(name=f"faceanchor-worker-{name}", daemon=True)
        self.worker_name = name
        self.engine = engine
        self.jobs = jobs
        self.files = files
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.runners = dict(runners or default_runners())
        self.wakeup = wakeup or threading.Event()
        self.on_finished = on_finished
        self.poll_interval = poll_interval
        self.owners = owners  # a FileOwnerStore: outputs are recorded as the job owner's
        self.job_timeout = job_timeout  # seconds a job may run (its request's `timeout` may lower it)
        self.stuck_grace = stuck_grace  # seconds a job may keep running past its cancel / time limit
        self.settings = settings if settings is not None else getattr(engine, "settings", None)  # outputs' trust steps
        # Jobs run as one engine call at most (setting worker_batch_max; 1: one job at a time).
        self.batch_max = max(1, int(batch_max))
        self._stop_event = threading.Event()
        self.current: _Run | None = None
        self.current_runs: list[_Run] = []  # the jobs on the engine
        self.writing: dict[str, _Run] = {}  # jobs whose results the background writer is storing
        self._writing_lock = threading.Lock()
        # write_queue > 0: results are stored in the background, this many waiting at most
        self.writer = ResultWriter(self.name, write_queue) if write_queue > 0 else None
        self.processed = 0
        self.batches = 0  # engine calls that ran more than one job

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        self._stop_event.set()
        self.wakeup.set()

    @property
    def busy(self) -> bool:
        return self.current is not None

    def request_cancel(self, job_id: str) -> None:
        with self._writing_lock:
            writing = self.writing.get(job_id)
        for run in [*self.current_runs, *([writing] if writing is not None else [])]:
            if run.job.id == job_id:
                run.cancel.set()

    # ------------------------------------------------------------------ loop

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                job = self.run_once()
            except Exception as e:  # the database hiccuped; keep the worker alive
                _log_db_error(f"worker {self.worker_name}: claim failed", e)
                job = None
                self._stop_event.wait(self.poll_interval)
            if job is None:
                self.wakeup.wait(self.poll_interval)
                self.wakeup.clear()
        if self.writer is not None:  # shutting down: the results already made are stored, not lost
            self.writer.close()

    def run_once(self) -> JobView | None:
        """Claim and run one job (with ``batch_max`` > 1: and the queued jobs that can share its
        engine call); return the first (or ``None`` when the queue is empty)."""
        owner = f"{self.worker_name}:{uuid.uuid4().hex[:12]}"
        job = self.jobs.claim(owner, self.lease_seconds, max_attempts=self.max_attempts, apps=self.runners.keys())
        if job is None:
            return None
        runs = [_Run(job=job, owner=owner)]
        key = self._batch_key(job) if self.batch_max > 1 else None
        if key is not None:
            try:
                more = self.jobs.claim_matching(owner, self.lease_seconds, lambda v: self._batch_key(v) == key,
                                                limit=self.batch_max - 1, apps=[job.app], max_attempts=self.max_attempts)
            except Exception as e:  # the database hiccuped: run the job we hold alone
                _log_db_error(f"worker {self.worker_name}: batch claim failed", e)
                more = []
            runs += [_Run(job=j, owner=owner) for j in more]
        self._process(runs)
        self.processed += len(runs)
        return job

    def _batch_key(self, job: JobView) -> Any:
        """The job's batch key (``None``: it runs alone): generation jobs on an engine that batches."""
        if self.runners.get(job.app) is not run_generation:
            return None
        return generation_batch_key(self.engine, job.app, job.request.get("request", {}))

    def _process(self, runs: list[_Run]) -> None:
        self.current_runs = list(runs)
        self.current = runs[0]
        for run in runs:
            run.beat = threading.Thread(target=self._heartbeat, args=(run,), name=f"{self.name}-heartbeat", daemon=True)
            run.beat.start()
        outcomes: list[str | None] = [None] * len(runs)
        try:
            if len(runs) == 1:
                outcomes[0] = self._record_safely(runs[0], self._execute)
            else:
                outcomes = self._run_batch(runs)
        finally:
            self.current, self.current_runs = None, []
            for run, outcome in zip(runs, outcomes):
                if outcome != _DEFERRED:  # a deferred job ends when the writer has recorded it
                    self._end(run, outcome)

    def _end(self, run: _Run, outcome: str | None) -> None:
        """The job is done with (its outcome recorded, or left to its lease): stop its heartbeat
        and tell :attr:`on_finished`."""
        run.done.set()
        if run.beat is not None:
            run.beat.join(timeout=5)
        with self._writing_lock:
            self.writing.pop(run.job.id, None)
        if outcome and self.on_finished is not None:
            self._notify_finished(run.job.id)

    def _deferred(self, run: _Run, result: Any, output_format: str) -> _Outcome:
        """Hand ``result`` to the background writer (which records the outcome and ends the job)."""
        assert self.writer is not None
        with self._writing_lock:
            self.writing[run.job.id] = run
        self.writer.submit(lambda: self._write_and_record(run, result, output_format))
        return _Outcome(deferred=True)

    def _write_and_record(self, run: _Run, result: Any, output_format: str) -> None:
        """On the background writer: store ``result`` (encode, trust steps, files), then record the
        job's outcome. A cancel or the job's time limit still stops it between two images; a
        shutdown does not (the writer drains)."""
        job = run.job
        outcome: str | None = None
        try:
            try:
                with cancellation.scope(lambda: self._cancelled(run, stopping=False)), job_scope(job.id):
                    done = _Outcome(payload=store_result(result, self.files, output_format, self.settings))
            except Cancelled:
                done = _Outcome(cancelled=True)
            except FaceAnchorError as e:
                done = _Outcome(error=error_dict(e.type, str(e), e.http_status))
            except Exception as e:
                log.exception("job %s: storing its result failed", job.id)
                done = _Outcome(error=error_dict("output_write_failed", f"the images were made but storing them failed "
                                                 f"({type(e).__name__}); nothing of this job was kept", 500))
            outcome = self._record(run, done)
        except Exception:  # the database stayed away: as in _process, the lease runs out and the job runs again
            log.exception("job %s: the outcome could not be recorded; the job will run again", job.id)
        finally:
            self._end(run, outcome)

    def _notify_finished(self, job_id: str) -> None:
        try:
            view = self.jobs.db.retrying(lambda: self.jobs.get(job_id))
        except Exception:
            log.exception("job %s: could not read the finished job", job_id)
            view = None
        if view is not None:
            try:
                self.on_finished(view)
            except Exception:
                log.exception("on_finished hook failed for job %s", job_id)

    def _record_safely(self, run: _Run, execute: Callable[[_Run], _Outcome]) -> str | None:
        try:
            return self._record(run, execute(run))
        except Exception:
            # Only the database can get here (the engine's errors are the job's outcome): it stayed
            # unreachable past the retries. The job keeps its lease, which runs out; then this or
            # another worker runs it again, and the conditional writes keep its outcome single.
            log.exception("job %s: the outcome could not be recorded; the job will run again", run.job.id)
            return None

    def _start(self, run: _Run, batch: int = 1) -> None:
        job = run.job
        if not run.t0:  # a job of a failed batch run again alone keeps its start and time limit
            run.t0 = time.time()
            run.limit = job_limit(self.job_timeout, job.request.get("timeout"))
            if run.limit is not None:
                run.deadline = time.monotonic() + run.limit
        self._log(run, f"started on {self.worker_name} (attempt {job.attempts})" + (f", in a batch of {batch} jobs" if batch > 1 else ""))

    def _execute(self, run: _Run) -> _Outcome:
        """Run one job on the engine (errors become its outcome)."""
        job = run.job
        self._start(run)
        try:
            request = resolve_inputs(job.request.get("request", {}), self.files)
            with cancellation.scope(lambda: self._cancelled(run)), job_scope(job.id):  # every stage, down to model layers, checks it
                result = self.runners[job.app](self.engine, request, lambda ev: self._progress(run, ev), lambda: self._cancelled(run))
                if run.lost:
                    return _Outcome(abandoned=True)
                output_format = str(request.get("output_format", "png"))
                if self.writer is not None:
                    return self._deferred(run, result, output_format)
                return _Outcome(payload=store_result(result, self.files, output_format, self.settings))
        except Exception as e:
            return self._failure(run, e)

    def _failure(self, run: _Run, e: Exception) -> _Outcome:
        if isinstance(e, Cancelled):
            return _Outcome(cancelled=True)
        if isinstance(e, WorkerRecycled):  # stuck past its cancel/limit (or its process died): retried once, else failed
            return _Outcome(recycled=e)
        if isinstance(e, FaceAnchorError):
            return _Outcome(error=error_dict(e.type, str(e), e.http_status))
        log.error("job %s failed inside the engine", run.job.id, exc_info=e)
        return _Outcome(error=error_dict("internal_error", f"generation failed with an internal error ({type(e).__name__})", 500))

    def _run_batch(self, runs: list[_Run]) -> list[str | None]:
        """Several jobs as one engine call (``generate_many``), each recorded on its own; if the
        shared call fails, each job runs again alone."""
        out: list[str | None] = [None] * len(runs)
        live: list[tuple[int, _Run, dict[str, Any], GenerationRequest]] = []
        for run in runs:
            run.peers = [r for r in runs if r is not run]
        for k, run in enumerate(runs):
            self._start(run, len(runs))
            try:
                request = resolve_inputs(run.job.request.get("request", {}), self.files)
                live.append((k, run, request, _parse(request)))
            except Exception as e:  # its input is missing or invalid: it fails now, alone
                out[k] = self._record_safely(run, lambda r, err=e: self._failure(r, err))
        results: list[Any] | None = None
        if live:
            checks = [(lambda r=run: self._cancelled(r)) for _, run, _, _ in live]
            progress = [(lambda ev, r=run: self._progress(r, ev)) for _, run, _, _ in live]
            try:
                with cancellation.scope(lambda: all(c() for c in checks)):
                    results = self.engine.generate_many([p for _, _, _, p in live], progress, checks)
                self.batches += 1
            except Cancelled as e:
                results = [e] * len(live)
            except Exception as e:  # the shared call failed: every job on its own
                log.warning("batch of %d jobs failed (%s: %s); running them one by one", len(live), type(e).__name__, e)
                for _, run, _, _ in live:
                    self._log(run, f"its batch failed ({type(e).__name__}); running alone")
                results = None
        for j, (k, run, request, _) in enumerate(live):
            if results is None:
                if not run.lost:  # (a job already ended while its batch ran stays ended)
                    out[k] = self._record_safely(run, self._execute)
                continue
            out[k] = self._record_safely(run, lambda r, res=results[j], req=request: self._store(r, res, req))
        return out

    def _store(self, run: _Run, result: Any, request: dict[str, Any]) -> _Outcome:
        """One batched job's outcome: its error, or its result stored (in its own cancel scope and job id)."""
        if isinstance(result, Exception):
            return self._failure(run, result)
        if run.lost:
            return _Outcome(abandoned=True)
        if self._cancelled(run):
            return _Outcome(cancelled=True)
        output_format = str(request.get("output_format", "png"))
        if self.writer is not None:
            return self._deferred(run, result, output_format)
        try:
            with cancellation.scope(lambda: self._cancelled(run)), job_scope(run.job.id):
                return _Outcome(payload=store_result(result, self.files, output_format, self.settings))
        except Exception as e:
            return self._failure(run, e)

    def _record(self, run: _Run, outcome: _Outcome) -> str | None:
        """Record a run's one outcome; return it (``None``: another run owns the job, or it went
        back to the queue). Database errors while recording are retried (see
        :meth:`Database.retrying`) and never turn a finished run into a failure."""
        job = run.job
        if outcome.deferred:
            return _DEFERRED
        if outcome.abandoned:
            return None
        payload, error, cancelled, recycled = outcome.payload, outcome.error, outcome.cancelled, outcome.recycled
        t0 = run.t0
        db = self.jobs.db
        if recycled is not None:
            self._log(run, str(recycled))
        self._flush_final(run)
        run.finishing = True
        if run.lost:
            return None
        if payload is not None:
            if self.owners is not None:
                ids = [img["file_id"] for img in payload["images"]]
                db.retrying(lambda: self.owners.add("outputs", ids, job.owner or f"key:{job.key_id}"))
            payload["timings"].update({
                "queue": round((job.started_at or t0) - job.created_at, 4),
                "inference": round(time.time() - t0, 4),
            })
            return "completed" if self.jobs.complete(job.id, run.owner, payload) else None
        if recycled is not None:
            if run.cancel.is_set():
                return "cancelled" if self.jobs.finish_cancelled(job.id, run.owner) else None
            if job.attempts < 2 and self.jobs.requeue(job.id, run.owner):
                self.wakeup.set()
                return None
            error = error_dict("timeout" if run.timed_out else recycled.type, str(recycled),
                               504 if run.timed_out else recycled.http_status)
            return "failed" if self.jobs.fail(job.id, run.owner, error) else None
        if cancelled:
            if run.timed_out and not run.cancel.is_set():
                err = error_dict("timeout", f"the job ran past its time limit of {run.limit:g} s and was stopped", 504)
                return "failed" if self.jobs.fail(job.id, run.owner, err) else None
            if self._stop_event.is_set() and not run.cancel.is_set():
                self.jobs.release(job.id, run.owner)  # shutting down: hand the job back
                return None
            return "cancelled" if self.jobs.finish_cancelled(job.id, run.owner) else None
        assert error is not None
        return "failed" if self.jobs.fail(job.id, run.owner, error) else None

    def _flush_final(self, run: _Run) -> None:
        """The last progress/log flush before the outcome, retried through a dropped connection
        for a few seconds; if the database stays away the outcome is still attempted."""
        try:
            self.jobs.db.retrying(lambda: self._flush(run), seconds=min(5.0, self.lease_seconds))
        except Exception:
            log.warning("job %s: last progress flush failed; recording the outcome anyway", run.job.id)

    # ------------------------------------------------------------------ per-run callbacks

    def _log(self, run: _Run, message: str) -> None:
        with run.lock:
            run.logs.append((time.time(), message))

    def _progress(self, run: _Run, ev: ProgressEvent) -> None:
        frac = (ev.step / ev.total) if ev.total else None
        data = dict(ev.to_dict(), fraction=None if frac is None else round(frac, 4))
        text = ev.message or (f"{ev.stage} {ev.step}/{ev.total}" if ev.total else ev.stage)
        with run.lock:
            run.progress = data
            run.progress_dirty = True
            run.logs.append((time.time(), text))

    def _cancelled(self, run: _Run, stopping: bool = True) -> bool:
        """Whether ``run`` should stop: cancelled, lost, past its limit, or (``stopping``) the worker stops."""
        if run.cancel.is_set() or run.lost or (stopping and self._stop_event.is_set()) or run.timed_out:
            return True
        now = time.monotonic()
        if run.deadline is not None and now > run.deadline:
            run.timed_out = True
            return True
        if now - run.last_cancel_poll >= 0.2:
            run.last_cancel_poll = now
            try:
                if self.jobs.is_cancel_requested(run.job.id):
                    run.cancel.set()
                    return True
            except Exception as e:
                _log_db_error("cancel poll failed", e)
        return False

    def _flush(self, run: _Run) -> bool:
        with run.lock:
            progress = run.progress if run.progress_dirty else None
            logs, run.logs = run.logs, []
            run.progress_dirty = False
        try:
            owned, cancel = self.jobs.heartbeat(run.job.id, run.owner, self.lease_seconds, progress=progress, logs=logs)
        except Exception:
            with run.lock:  # keep what was not written for the next heartbeat
                run.logs[:0] = logs
                if progress is not None and not run.progress_dirty:
                    run.progress, run.progress_dirty = progress, True
            raise
        if not owned and not run.finishing:
            run.lost = True
        if cancel:
            run.cancel.set()
        return owned

    def _stuck(self, run: _Run) -> bool:
        """A job still running ``stuck_grace`` s after its cancel or time limit ignores them (native
        code). An engine process is recycled by its supervisor; an in-process engine's thread cannot
        be stopped, so the job is ended here (CANCELLED, or FAILED with ``timeout``) and whatever the
        engine returns later is discarded; the thread stays busy until it returns."""
        now = time.monotonic()
        if run.deadline is not None and now > run.deadline:
            run.timed_out = True
        if run.stop_since is None and (run.cancel.is_set() or run.timed_out):
            run.stop_since = now
        # A job of a batch whose other jobs go on is ended at once: the shared call keeps running
        # for them and this job's images are discarded.
        batch_goes_on = any(not (p.cancel.is_set() or p.timed_out or p.lost or p.finishing) for p in run.peers)
        grace = 0.0 if batch_goes_on else self.stuck_grace
        if run.stop_since is None or now - run.stop_since <= grace or getattr(self.engine, "supervised", False):
            return False
        with run.lock:
            if run.finishing:
                return False
            run.finishing, run.lost = True, True
        if batch_goes_on:
            self._log(run, "stopped; the other jobs of its batch go on")
            self._flush_final(run)
        else:
            log.error("job %s: still running %.0f s after its cancel/time limit; ended without waiting (the worker "
                      "thread stays busy until the engine returns; setting worker_processes recycles such a worker)",
                      run.job.id, self.stuck_grace)
        if run.cancel.is_set():
            ended = self.jobs.finish_cancelled(run.job.id, run.owner)
        else:
            why = "was stopped (its batch goes on)" if batch_goes_on else "did not stop (stuck outside Python)"
            ended = self.jobs.fail(run.job.id, run.owner, error_dict(
                "timeout", f"the job ran past its time limit of {run.limit:g} s and {why}", 504))
        view = self.jobs.get(run.job.id) if ended and self.on_finished is not None else None
        if view is not None:
            try:
                self.on_finished(view)
            except Exception:
                log.exception("on_finished hook failed for job %s", run.job.id)
        return True

    def _heartbeat(self, run: _Run) -> None:
        interval = max(0.05, min(0.5, self.lease_seconds / 4))
        while not run.done.wait(interval):
            if run.finishing:
                return
            if self._stuck(run):
                return
            try:
                if not self._flush(run) and not run.finishing:
                    log.warning("job %s: lease lost; abandoning this run", run.job.id)
                    return
            except Exception as e:
                _log_db_error(f"heartbeat failed for job {run.job.id}", e)
