"""Running the same FastAPI app on Ray Serve, for when one machine is not enough.

Not a home-made cluster: Ray Serve places replicas (one GPU each), routes HTTP to them and
restarts them; each replica runs the unchanged app (its lifespan loads the engine once and
starts one worker on the replica's GPU). The replicas share the job queue through the database,
so point ``FACEANCHOR_DATABASE_URL`` at a database every node reaches (e.g. PostgreSQL; one
SQLite file only works for replicas on a single machine) and ``FACEANCHOR_HOME`` at shared
storage for the result files. Job claims are compare-and-set, so replicas never run one job twice.

``ray[serve]`` is the optional extra ``ray`` and is imported only when this is called::

    from faceanchor.api.app import create_app
    from faceanchor.config import load_settings
    from faceanchor.service.ray_deployment import build_deployment

    settings = load_settings()
    deployment = build_deployment(lambda: create_app(settings, engine_factory=my_factory), num_gpus=1, num_replicas=2)
    serve.run(deployment.bind(), route_prefix="/")

The app factory is passed in (the service layer never imports the API). This module is not
exercised by the test suite (ray is not installed in the test environment).
"""

from __future__ import annotations

from typing import Any, Callable


def _serve() -> Any:
    try:
        from ray import serve
    except ImportError:
        from faceanchor.errors import InvalidInputError

        raise InvalidInputError("Ray Serve is not installed; pip install 'faceanchor[ray]'") from None
    return serve


def build_deployment(
    app_factory: Callable[[], Any],
    *,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
    num_replicas: int | str = 1,
    name: str = "faceanchor",
    max_ongoing_requests: int = 256,
) -> Any:
    """A Ray Serve deployment class serving ``app_factory()`` (a FastAPI app) on each replica.

    ``num_replicas="auto"`` lets Ray Serve autoscale. Synchronous requests hold a connection
    while they wait for the replica's worker, hence the generous ``max_ongoing_requests``.
    """
    serve = _serve()
    app = app_factory()

    @serve.deployment(
        name=name,
        num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": num_cpus},
    )
    @serve.ingress(app)
    class FaceAnchorDeployment:
        """One replica: the FastAPI app with its own engine and worker."""

    return FaceAnchorDeployment
