"""Webhooks: POST the outcome of a job to the URL given at submission, signed, with retries.

Body: ``{"request_id", "status": "OK" | "ERROR", "job_status", "payload", "error"}``.
Headers: ``X-Faceanchor-Request-Id``, ``X-Faceanchor-Timestamp`` and
``X-Faceanchor-Signature: sha256=<hex>``, the HMAC-SHA256 with the webhook secret of
``"<timestamp>.<body>"`` (verify with :func:`verify_signature`). Retries only for 429, 503,
504 and network errors, with exponential backoff; any other answer is final. Delivery state is
kept in the job row, so webhooks still pending at a crash are sent after restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable

from faceanchor.service.fetch import UrlFetchError, UrlRefusedError, post_pinned
from faceanchor.service.results import public_result
from faceanchor.store.jobs import JobStore, JobView
from faceanchor.types import JobStatus

log = logging.getLogger("faceanchor.webhook")

RETRY_STATUSES = frozenset({429, 503, 504})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def load_or_create_secret(settings) -> str:  # noqa: ANN001
    """``settings.webhook_secret``, or a random one kept in ``<data_dir>/webhook_secret`` (0600)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path = Path(settings.data_dir) / "webhook_secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret


def webhook_body(job: JobView, signer: Any = None) -> dict[str, Any]:
    """The webhook's JSON; with a ``signer`` each image carries a ``signed_url`` the receiver
    can fetch without an API key."""
    base_url = job.request.get("base_url", "")
    ok = job.status == JobStatus.COMPLETED
    return {
        "request_id": job.id,
        "status": "OK" if ok else "ERROR",
        "job_status": job.status.value,
        "payload": public_result(job.result, base_url, signer) if ok and job.result else None,
        "error": None if ok else {k: v for k, v in (job.error or {}).items() if k in ("type", "message")},
    }


class WebhookSender(threading.Thread):
    """Delivers webhooks of finished jobs, one at a time, from a queue of job ids."""

    def __init__(
        self,
        jobs: JobStore,
        secret: str,
        *,
        max_attempts: int = 5,
        backoff_seconds: float = 1.0,
        timeout: float = 10.0,
        allow_private: bool = False,
        post: Callable[..., int] = post_pinned,
        signer: Any = None,
    ):
        super().__init__(name="faceanchor-webhooks", daemon=True)
        self.jobs = jobs
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.timeout = timeout
        self.allow_private = allow_private
        self.post = post
        self.signer = signer
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self._stop_event = threading.Event()

    def enqueue(self, job_id: str) -> None:
        self._queue.put(job_id)

    def stop(self) -> None:
        self._stop_event.set()
        self._queue.put(None)

    def run(self) -> None:
        try:
            for job in self.jobs.pending_webhooks():  # left over from before a restart
                self._queue.put(job.id)
        except Exception:
            log.exception("could not list pending webhooks")
        while not self._stop_event.is_set():
            job_id = self._queue.get()
            if job_id is None:
                break
            try:
                self.deliver(job_id)
            except Exception:
                log.exception("webhook for job %s failed", job_id)

    def deliver(self, job_id: str) -> str:
        """Send one job's webhook with retries; return the final state (delivered/failed/skipped)."""
        job = self.jobs.get(job_id)
        if job is None or not job.webhook_url or job.webhook_state != "pending" or not job.status.finished:
            return "skipped"
        body = json.dumps(webhook_body(job, self.signer), sort_keys=True).encode()
        attempts = job.webhook_attempts
        state = "failed"
        while attempts < self.max_attempts and not self._stop_event.is_set():
            attempts += 1
            ts = str(int(time.time()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "faceanchor-webhook/1",
                "X-Faceanchor-Request-Id": job.id,
                "X-Faceanchor-Timestamp": ts,
                "X-Faceanchor-Signature": sign(self.secret, ts, body),
            }
            try:
                status = self.post(job.webhook_url, body, headers, timeout=self.timeout, allow_private=self.allow_private)
            except UrlRefusedError as e:
                log.warning("webhook for job %s refused: %s", job.id, e)
                break
            except UrlFetchError:
                status = None  # network error: retry
            if status is not None and 200 <= status < 300:
                state = "delivered"
                break
            if status is not None and status not in RETRY_STATUSES:
                break
            if attempts < self.max_attempts:
                self._stop_event.wait(self.backoff_seconds * (2 ** (attempts - 1)))
        else:
            if self._stop_event.is_set():
                self.jobs.mark_webhook(job.id, "pending", attempts)
                return "pending"
        self.jobs.mark_webhook(job.id, state, attempts)
        return state
