"""Prometheus metrics, one registry per app (never the process-global one)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceanchor.store.jobs import JobView


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("faceanchor_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("faceanchor_http_request_seconds", "HTTP request latency", ["route"], registry=r)
        self.submitted = Counter("faceanchor_jobs_submitted_total", "Jobs accepted", ["app"], registry=r)
        self.finished = Counter("faceanchor_jobs_finished_total", "Jobs finished", ["app", "status"], registry=r)
        self.job_seconds = Histogram("faceanchor_job_seconds", "Job run time", ["app"], registry=r,
                                     buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300))
        self.queue_depth = Gauge("faceanchor_queue_depth", "Jobs waiting", registry=r)
        self.model_ready = Gauge("faceanchor_model_ready", "1 when the engine is loaded", registry=r)

    def job_finished(self, job: JobView) -> None:
        self.finished.labels(job.app, job.status.value).inc()
        if job.started_at and job.finished_at:
            self.job_seconds.labels(job.app).observe(max(0.0, job.finished_at - job.started_at))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests by route template (not raw path, to keep label sets small)."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope.get("method", ""), path, str(status["code"])).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - t0)
