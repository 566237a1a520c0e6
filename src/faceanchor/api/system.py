"""``GET /health`` (no key) and ``GET /metrics`` (Prometheus text, key required)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from faceanchor.api.deps import CurrentKey, MetricsDep, ServiceDep
from faceanchor.api.errors import error_responses
from faceanchor.api.schemas import HealthOut

router = APIRouter(tags=["system"])


@router.get("/health", response_model=HealthOut, summary="loading / ready / busy",
            responses={503: {"model": HealthOut, "description": "The model is loading or failed to load."}})
async def health(request: Request, service: ServiceDep) -> JSONResponse:
    # From memory while the service's own thread keeps a recent queue count (no thread hop, no
    # query: never behind request work); else counted on a thread of its own.
    snapshot = service.cached_health() or await request.app.state.lanes.run("health", service.health)
    body = HealthOut(**snapshot)
    code = 200 if body.status in ("ready", "busy") else 503
    headers = {"Retry-After": "5"} if body.status in ("starting", "loading") else None
    return JSONResponse(body.model_dump(exclude_none=True), status_code=code, headers=headers)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
                       **error_responses(401, 403, 422)})
def metrics(service: ServiceDep, metrics: MetricsDep, _key: CurrentKey) -> Response:
    metrics.queue_depth.set(service.jobs.queue_depth())
    metrics.model_ready.set(1 if service.state == "ready" else 0)
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
