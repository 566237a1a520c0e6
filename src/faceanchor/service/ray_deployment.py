"""Running the same FastAPI app on Ray Serve, for when one machine is not enough.

Not a home-made cluster: Ray Serve places replicas (one GPU each by default), routes HTTP to
them and restarts them. Each replica builds the unchanged app *inside the replica* by calling
the app factory it was given (nothing but the factory is pickled), and Ray Serve runs the app's
lifespan there: the engine loads once per replica, one worker runs on the replica's GPU, and
stopping the replica hands a running job back to the queue.

The replicas share the job queue through the database, so point ``FACEANCHOR_DATABASE_URL`` at
a database every node reaches (e.g. PostgreSQL; one SQLite file only works for replicas on a
single machine) and ``FACEANCHOR_HOME`` at storage every node shares (result files, webhook
secret). Job claims are compare-and-set, so replicas never run one job twice, and a sync
request that lands on a busy replica is run by whichever replica is free.

``ray[serve]`` is the optional extra ``ray`` and is imported only when these functions run.
The service layer never imports the API, so the caller passes the app factory: any picklable
zero-argument callable returning an ASGI app, e.g. ::

    import functools
    from faceanchor.api.app import create_app
    from faceanchor.service.ray_deployment import run_on_ray

    run_on_ray(functools.partial(create_app, settings, engine_factory=my_factory),
               num_replicas=2, num_gpus=1, host="0.0.0.0", port=8000, blocking=True)

``my_factory`` must be importable by its module name on every node (or be defined in
``__main__``, which Ray pickles by value); ``faceanchor serve --ray`` wraps this.
"""

from __future__ import annotations

from typing import Any, Callable

AppFactory = Callable[[], Any]


def _ray() -> tuple[Any, Any]:
    try:
        import ray
        from ray import serve
    except ImportError:
        from faceanchor.errors import InvalidInputError

        raise InvalidInputError("Ray Serve is not installed; pip install 'faceanchor[ray]'") from None
    return ray, serve


def build_deployment(
    *,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
    num_replicas: int | str = 1,
    name: str = "faceanchor",
    max_ongoing_requests: int = 256,
    graceful_shutdown_timeout_s: float = 30.0,
) -> Any:
    """A Ray Serve deployment whose replicas each serve ``app_factory()`` (given to ``bind``).

    ``num_gpus=0`` runs replicas on CPU. ``num_replicas="auto"`` lets Ray Serve autoscale.
    Synchronous requests hold a connection while they wait for a worker, hence the generous
    ``max_ongoing_requests``. Use it as ``build_deployment(...).bind(app_factory)``.
    """
    if num_gpus < 0 or num_cpus < 0:
        from faceanchor.errors import InvalidInputError

        raise InvalidInputError("num_gpus and num_cpus must not be negative")
    _, serve = _ray()

    @serve.deployment(
        name=name,
        num_replicas=num_replicas,
        max_ongoing_requests=max_ongoing_requests,
        graceful_shutdown_timeout_s=graceful_shutdown_timeout_s,
        ray_actor_options={"num_gpus": num_gpus, "num_cpus": num_cpus},
    )
    @serve.ingress()
    class FaceAnchorReplica:
        """One replica: the FastAPI app, with its own engine and worker, built in the replica."""

        def __init__(self, app_factory: AppFactory):
            self._app_factory = app_factory

        def __serve_build_asgi_app__(self) -> Any:  # noqa: N807 (Ray Serve's hook name)
            # Called by Ray Serve in the replica after __init__; it then runs the app's lifespan
            # (engine load, worker start) and, when the replica stops, its shutdown.
            return self._app_factory()

    return FaceAnchorReplica


def build_application(app_factory: AppFactory, **deployment_options: Any) -> Any:
    """The bound Ray Serve application (``serve.run`` takes it); options as :func:`build_deployment`."""
    if not callable(app_factory):
        from faceanchor.errors import InvalidInputError

        raise InvalidInputError("app_factory must be a callable returning the FastAPI app")
    return build_deployment(**deployment_options).bind(app_factory)


def run_on_ray(
    app_factory: AppFactory,
    *,
    num_replicas: int | str = 1,
    num_gpus: float = 1.0,
    num_cpus: float = 1.0,
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "faceanchor",
    address: str | None = None,
    blocking: bool = False,
) -> Any:
    """Deploy the app on Ray Serve, listening on ``host:port``, and return the deployment handle.

    Connects to the Ray cluster at ``address`` (``"auto"``: the one ``ray start`` made on this
    node) or, when ``address`` is None and Ray is not initialised yet, starts a local one.
    ``blocking=True`` waits until interrupted, then shuts Serve down. Serve's HTTP options are
    cluster-wide: if Serve already runs on the cluster, its host and port stay as they are.
    """
    ray, serve = _ray()
    application = build_application(app_factory, num_gpus=num_gpus, num_cpus=num_cpus,
                                     num_replicas=num_replicas, name=name)
    if not ray.is_initialized():
        ray.init(address=address)
    serve.start(http_options={"host": host, "port": port})
    if not blocking:
        return serve.run(application, name=name, route_prefix="/")
    try:
        return serve.run(application, name=name, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        serve.shutdown()  # stops the replicas: their lifespans hand running jobs back to the queue
        return None
