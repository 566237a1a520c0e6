"""The service as one object: database, stores, model loading, workers and webhooks.

:class:`Service` is what the HTTP layer (or a Ray Serve replica) drives. ``start()`` loads the
engine(s) once in a background thread — ``/health`` reports ``loading`` meanwhile — and then
starts one worker thread per engine (one per device). Jobs are accepted while the model loads:
they wait durably in the queue.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from faceanchor.config import Settings
from faceanchor.errors import FaceAnchorError
from faceanchor.service import quotas
from faceanchor.service.signing import UrlSigner, load_or_create_url_secret
from faceanchor.service.webhook import WebhookSender, load_or_create_secret
from faceanchor.service.worker import JobRunner, Worker, default_runners
from faceanchor.store.db import Database
from faceanchor.store.file_owners import FileOwnerStore
from faceanchor.store.files import FileStore
from faceanchor.store.jobs import JobStore, JobView
from faceanchor.store.keys import KeyStore
from faceanchor.types import GenerationEngine

log = logging.getLogger("faceanchor.service")

EngineFactory = Callable[[Settings], GenerationEngine]


class ServiceUnavailableError(FaceAnchorError):
    """The service cannot take this request now (model loading or failed, queue full)."""

    http_status = 503
    type = "unavailable"

    def __init__(self, message: str, retry_after: int = 5):
        super().__init__(message)
        self.retry_after = retry_after


class Service:
    """Owns the queue and its workers for one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: GenerationEngine | Sequence[GenerationEngine] | None = None,
        engine_factory: EngineFactory | None = None,
        database: Database | None = None,
        files: FileStore | None = None,
        runners: dict[str, JobRunner] | None = None,
        poll_interval: float = 0.25,
    ):
        if engine is None and engine_factory is None:
            raise ValueError("give an engine or an engine_factory")
        self.settings = settings
        self._engines_given = [engine] if engine is not None and not isinstance(engine, (list, tuple)) else list(engine or [])
        self.engine_factory = engine_factory
        self.db = database or Database.from_settings(settings)
        self.files = files or FileStore(Path(settings.data_dir) / "files")
        self.jobs = JobStore(self.db)
        self.keys = KeyStore(self.db)
        self.file_owners = FileOwnerStore(self.db)
        self.signer = UrlSigner(load_or_create_url_secret(settings), settings.signed_url_seconds)
        self.runners = dict(default_runners() if runners is None else runners)
        self.poll_interval = poll_interval
        self.state = "starting"  # starting → loading → ready | error
        self.load_error: str | None = None
        self.load_seconds: float | None = None
        self.workers: list[Worker] = []
        self.wakeup = threading.Event()
        self.finished_listeners: list[Callable[[JobView], None]] = []
        self.webhooks = WebhookSender(
            self.jobs, load_or_create_secret(settings), max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds, timeout=settings.url_fetch_timeout,
            allow_private=settings.allow_private_urls, signer=self.signer,
        )
        self._loader: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped = False
        self._retention_stop = threading.Event()
        self._retention: threading.Thread | None = None
        self._depth: tuple[int, float] | None = None  # (queue depth, time.monotonic() it was counted)

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, background: bool = True) -> None:
        """Load the engine(s) (in a thread unless ``background=False``), then start the workers.

        Calling it again is a no-op."""
        if self.state != "starting" or self._stopped:
            return
        self.state = "loading"
        self.webhooks.start()
        threading.Thread(target=self._depth_loop, name="faceanchor-queue-depth", daemon=True).start()
        if self.settings.retention_days is not None:
            self._retention = threading.Thread(target=self._retention_loop, name="faceanchor-retention", daemon=True)
            self._retention.start()
        if background:
            self._loader = threading.Thread(target=self._load_and_start, name="faceanchor-loader", daemon=True)
            self._loader.start()
        else:
            self._load_and_start()

    def _load_and_start(self) -> None:
        t0 = time.perf_counter()
        runners = [self.runners] * self.settings.workers
        try:
            from faceanchor.trust.finalise import Finisher

            Finisher.for_settings(self.settings)  # a bad signing key or safety model fails here, not on every job
            engines = list(self._engines_given)
            if not engines and self.settings.worker_processes:
                engines, runners = self._engine_processes()
            elif not engines:
                assert self.engine_factory is not None
                engines = [self.engine_factory(self.settings) for _ in range(self.settings.workers)]
        except Exception as e:
            self.state = "error"
            self.load_error = str(e) if isinstance(e, FaceAnchorError) else f"the model failed to load ({type(e).__name__}: {e})"
            log.exception("engine failed to load")
            self._ready.set()
            return
        self.load_seconds = time.perf_counter() - t0
        if self._stopped:
            return
        for i, engine in enumerate(engines):
            worker = Worker(
                str(i), engine, self.jobs, self.files, lease_seconds=self.settings.job_lease_seconds,
                max_attempts=self.settings.job_max_attempts, runners=runners[i] if i < len(runners) else self.runners, wakeup=self.wakeup,
                on_finished=self._finished, poll_interval=self.poll_interval, owners=self.file_owners,
                job_timeout=self.settings.job_timeout_seconds, stuck_grace=self.settings.job_stuck_grace_seconds,
                settings=self.settings, write_queue=self.settings.worker_write_queue, batch_max=self.settings.worker_batch_max,
            )
            self.workers.append(worker)
            worker.start()
        self.state = "ready"
        self._ready.set()

    def _engine_processes(self) -> tuple[list[Any], list[dict[str, JobRunner]]]:
        """Setting ``worker_processes``: one supervised engine process per worker for the generation
        apps; other apps (characters, which use the engine's parts) get one in-process engine."""
        from faceanchor.service.supervisor import EngineProcess

        assert self.engine_factory is not None
        generation = {app: r for app, r in self.runners.items() if app in default_runners()}
        others = {app: r for app, r in self.runners.items() if app not in generation}
        engines: list[Any] = [EngineProcess(self.engine_factory, self.settings).start() for _ in range(self.settings.workers)]
        runners = [generation] * len(engines)
        if others:
            self._engines_given = [self.engine_factory(self.settings)]  # service.engine: face analysis, characters
            engines.append(self._engines_given[0])
            runners.append(others)
        return engines, runners

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout) and self.state == "ready"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop workers (a running job is handed back to the queue) and the webhook sender."""
        self._stopped = True
        self._retention_stop.set()
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(timeout)
            close = getattr(w.engine, "close", None)  # an engine process: end the child
            if close is not None:
                close()
        self.webhooks.stop()
        if self.webhooks.is_alive():
            self.webhooks.join(timeout)
        self.db.dispose()

    def _finished(self, job: JobView) -> None:
        for listener in list(self.finished_listeners):
            listener(job)
        if job.webhook_url:
            self.webhooks.enqueue(job.id)

    # ------------------------------------------------------------------ state

    @property
    def busy(self) -> bool:
        return any(w.busy for w in self.workers)

    @property
    def engine(self) -> Any | None:
        """The first engine (given, or loaded by a worker): for face analysis outside the queue."""
        if self._engines_given:
            return self._engines_given[0]
        return self.workers[0].engine if self.workers else None

    #: How often the started service counts the queue for ``/health`` (seconds), and how old a count may be.
    DEPTH_INTERVAL, DEPTH_MAX_AGE = 0.5, 2.0

    def _depth_loop(self) -> None:
        while not self._retention_stop.is_set():
            try:
                self._depth = (self.jobs.queue_depth(), time.monotonic())
            except Exception:  # the database is away: health() counts itself (and reports the error)
                self._depth = None
            self._retention_stop.wait(self.DEPTH_INTERVAL)

    def cached_health(self) -> dict[str, Any] | None:
        """:meth:`health` from memory — the queue depth a thread of the service counts every
        ``DEPTH_INTERVAL`` — so ``/health`` needs no thread and no query while submits keep both
        busy; ``None`` when there is no recent count (service not started, database away)."""
        depth = self._depth
        if depth is None or time.monotonic() - depth[1] > self.DEPTH_MAX_AGE:
            return None
        return self.health(queue_depth=depth[0])

    def health(self, queue_depth: int | None = None) -> dict[str, Any]:
        status = self.state
        if status == "ready" and self.workers and all(w.busy for w in self.workers):
            status = "busy"
        out: dict[str, Any] = {
            "status": status,
            "workers": len(self.workers),
            "busy_workers": sum(w.busy for w in self.workers),
            "queue_depth": self.jobs.queue_depth() if queue_depth is None else queue_depth,
        }
        if self.load_seconds is not None:
            out["load_seconds"] = round(self.load_seconds, 3)
        if self.load_error:
            out["error"] = self.load_error
        return out

    def check_available(self, *, need_ready: bool = False) -> None:
        if self.state == "error":
            raise ServiceUnavailableError(f"the model failed to load: {self.load_error}", retry_after=60)
        if need_ready and self.state != "ready":
            raise ServiceUnavailableError("the model is still loading; retry shortly", retry_after=5)

    # ------------------------------------------------------------------ jobs

    def submit(
        self,
        app: str,
        request: dict[str, Any],
        *,
        key_id: str = "",
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
        start_timeout: float | None = None,
        base_url: str = "",
        key: Any = None,
        timeout: float | None = None,
    ) -> tuple[JobView, bool]:
        """Queue a job. Image bytes anywhere in ``request`` are stored content-addressed and
        replaced by ``{"$file": id}``; a repeated idempotency key returns the first job.

        With ``key`` (a :class:`~faceanchor.store.keys.KeyInfo`) the job, its inputs and its
        outputs belong to the key's owner, and the key's image quotas are checked. ``timeout``
        (seconds) lowers the job's time limit (setting ``job_timeout_seconds``) for this job."""
        if app not in self.runners:
            raise FaceAnchorError(f"unknown app {app!r}")
        self.check_available()
        owner = key.owner if key is not None else None
        if key is not None:
            key_id = key.id
        uploads: list[str] = []
        stored = self._store_inputs(request, uploads)
        digest = hashlib.sha256(json.dumps([app, stored, webhook_url], sort_keys=True).encode()).hexdigest()
        # a repeated idempotency key returns its job (jobs.submit looks, before the quota and the
        # queue limit); a fresh key is a new job like any other
        images = quotas.images_of(app, request)
        admitted: dict[str, int] = {}

        def admit(session: Any) -> None:
            # In the insert's transaction, under the key's lock: the quota cannot be overshot by
            # concurrent submits of the key (here or on another node on the same database).
            if key is not None:
                quotas.check(self.jobs, key, self.settings, images, session=session)
            depth = self.jobs.queue_depth(session=session)
            if depth >= self.settings.max_queue_size:
                raise ServiceUnavailableError(f"the queue is full ({self.settings.max_queue_size} jobs); retry later", retry_after=30)
            admitted["depth"] = depth

        deadline = time.time() + start_timeout if start_timeout is not None else None
        job, created = self.jobs.submit(
            app, {"request": stored, "base_url": base_url, **({"timeout": float(timeout)} if timeout else {})}, key_id=key_id, idempotency_key=idempotency_key,
            request_sha256=digest, webhook_url=webhook_url, start_deadline=deadline, owner=owner, images=images, admit=admit,
            # the uploads' owner rows (their retention clock) in the job's own transaction: one write per submit
            within=lambda s: self.file_owners.add_in(s, "inputs", uploads, owner or ""),
        )
        if created:
            self.wakeup.set()
            # the jobs queued ahead of it as it went in (a new read would count the same rows again)
            job = dataclasses.replace(job, queue_position=admitted["depth"])
        return job, created

    def _store_inputs(self, value: Any, uploads: list[str]) -> Any:
        """``value`` with its bytes stored and replaced by ``{"$file": id}``; the ids go to ``uploads``."""
        if isinstance(value, (bytes, bytearray)):
            fid = self.files.put(bytes(value), "inputs")
            uploads.append(fid)
            return {"$file": fid}
        if isinstance(value, dict):
            return {k: self._store_inputs(v, uploads) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._store_inputs(v, uploads) for v in value]
        return value

    # ------------------------------------------------------------------ tenancy, retention

    def can_read_file(self, key: Any, file_id: str, namespace: str = "outputs") -> bool:
        """A key may read a stored file its owner has a record for (admin keys: any)."""
        if key.admin:
            return True
        return self.file_owners.owns(namespace, file_id, key.owner)

    def delete_character_job_files(self, character_id: str) -> list[str]:
        """With a character: the inputs and outputs of the character jobs that named it (the
        copies the queue keeps), where no other owner still uses the same bytes."""
        import json as _json

        gone: list[str] = []
        fragment = _json.dumps({"character_id": character_id})[1:-1]  # '"character_id": "<id>"' as stored
        for job in self.jobs.with_request_text("character/", fragment):
            owner = job.owner or f"key:{job.key_id}"
            found: list[tuple[str, str]] = [("outputs", img["file_id"]) for img in (job.result or {}).get("images", [])]
            found += [("inputs", fid) for fid in _file_refs(job.request)]
            for namespace, fid in found:
                self.file_owners.forget_owner(namespace, fid, owner)
                if not self.file_owners.owners(namespace, fid) and self.files.delete(fid, namespace):
                    gone.append(fid)
        return gone

    def cleanup_expired(self, now: float | None = None) -> list[str]:
        """Delete job inputs and outputs not used within ``retention_days``; return their ids.

        A file's age is that of its newest owner record, so content shared with a newer job
        stays. Characters' files are not touched here: they go with their character."""
        if self.settings.retention_days is None:
            return []
        cutoff = (time.time() if now is None else now) - self.settings.retention_days * 86400
        gone: list[str] = []
        for namespace in ("inputs", "outputs"):
            for fid in self.file_owners.expired_files(namespace, cutoff):
                self.files.delete(fid, namespace)
                self.file_owners.forget(namespace, fid)
                gone.append(fid)
        return gone

    def _retention_loop(self) -> None:
        while not self._retention_stop.is_set():
            try:
                removed = self.cleanup_expired()
                if removed:
                    log.info("retention: deleted %d expired files", len(removed))
            except Exception:
                log.exception("retention cleanup failed")
            self._retention_stop.wait(self.settings.retention_check_seconds)

    def get(self, job_id: str, *, with_logs: bool = False) -> JobView | None:
        job = self.jobs.get(job_id, with_logs=with_logs)
        if job is not None and job.start_deadline is not None and not job.status.finished and job.started_at is None and job.start_deadline < time.time():
            self.jobs.expire_deadline(job_id)
            job = self.jobs.get(job_id, with_logs=with_logs)
        return job

    def cancel(self, job_id: str) -> str | None:
        outcome = self.jobs.request_cancel(job_id)
        if outcome is not None:
            for w in self.workers:
                w.request_cancel(job_id)
        return outcome


def _file_refs(value: Any) -> list[str]:
    """Every ``{"$file": id}`` of a stored request."""
    if isinstance(value, dict):
        if set(value) == {"$file"}:
            return [value["$file"]]
        return [f for v in value.values() for f in _file_refs(v)]
    if isinstance(value, list):
        return [f for v in value for f in _file_refs(v)]
    return []
