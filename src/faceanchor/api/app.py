"""The FastAPI app factory. Nothing is built at import time: call :func:`create_app`.

``create_app(settings, engine)`` (or ``engine_factory=``) builds the service (database, stores,
workers) and the app; the lifespan loads the model once (in a background thread unless
``load_in_background=False``) and stops the workers on shutdown.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from typing import AsyncIterator, Sequence

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders

from faceanchor.api import characters, files, generate, methods, queue, system
from faceanchor.api import studio
from faceanchor.api.errors import install_error_handlers
from faceanchor.api.limits import BodyLimitMiddleware, TokenBucket
from faceanchor.api.intake import lanes_for
from faceanchor.api.metrics import Metrics, MetricsMiddleware
from faceanchor.config import Settings
from faceanchor.service.runtime import EngineFactory, Service
from faceanchor.service.worker import JobRunner
from faceanchor.types import GenerationEngine


def create_app(
    settings: Settings,
    engine: GenerationEngine | Sequence[GenerationEngine] | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    service: Service | None = None,
    runners: dict[str, JobRunner] | None = None,
    load_in_background: bool = True,
    serve_web: bool = True,
) -> FastAPI:
    """Build the HTTP app around an engine (or a factory called once per worker at start-up)."""
    service = service or Service(settings, engine=engine, engine_factory=engine_factory, runners=runners)
    metrics = Metrics()
    service.finished_listeners.append(metrics.job_finished)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        service.start(background=load_in_background)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="faceanchor",
        version="0.1.0",
        description="Identity-preserving image generation: synchronous calls, a durable queue, result files.",
        lifespan=lifespan,
        docs_url=None,  # studio.install_docs: Swagger UI from package files, not a CDN
        redoc_url=None,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.rate_limiter = TokenBucket()
    app.state.lanes = lanes_for(service.settings)  # bounded intake; /health on a thread of its own
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(methods.router)
    app.include_router(generate.sync_router())
    app.include_router(queue.router)
    app.include_router(files.router)
    from faceanchor.api import keys as keys_api  # issue 11: /v1/usage, /v1/keys (admin)

    app.include_router(keys_api.router)
    from faceanchor.api import fal  # issue 11: fal-ai/instantid[/lcm] with fal's body and output

    app.include_router(fal.router)
    characters.install(app, service)  # /v1/characters, /v1/character/*, /queue/character/* and their runners
    app.include_router(studio.router)  # /v1/faces, /v1/jobs, /v1/styles (the web studio's reads)
    from faceanchor.api import verify  # issue 16: watermark and content credentials read back

    app.include_router(verify.router)
    studio.install_docs(app)
    if serve_web:
        web_dir = resources.files("faceanchor") / "web"
        app.mount("/web", StaticFiles(directory=str(web_dir), html=True), name="web")

        @app.get("/", include_in_schema=False)
        def _root() -> RedirectResponse:
            return RedirectResponse("/web/")

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    app.add_middleware(NoSniffMiddleware)  # outermost
    return app


class NoSniffMiddleware:
    """``X-Content-Type-Options: nosniff`` on every response, the web page's too. Plain ASGI, not
    ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware hides a client's disconnect from
    the endpoint, and sync requests cancel their job when the client goes (api/generate.py)."""

    def __init__(self, app):  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_nosniff(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "x-content-type-options" not in headers:
                    headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        await self.app(scope, receive, send_nosniff)
