"""``faceanchor serve``: the HTTP API on uvicorn.

The engine comes from ``--engine MODULE:FUNCTION`` or ``--engine path/to/file.py:FUNCTION``
(also the ``FACEANCHOR_ENGINE_FACTORY`` setting); the function gets the settings and returns an
engine. Default: :class:`faceanchor.engine.Engine`. The model loads once, in the background,
after the server starts listening; ``/health`` says ``loading`` until it is ready.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable, Optional

import typer

from faceanchor.cli.generate import weights_option
from faceanchor.errors import FaceAnchorError, InvalidInputError


def default_engine_factory(settings):  # noqa: ANN001, ANN201
    from faceanchor.engine import Engine

    return Engine(settings).warmup()


def load_factory(spec: str) -> Callable:
    """Resolve ``module:attr`` or ``path/to/file.py:attr`` to a callable."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InvalidInputError(f"--engine {spec!r}: use MODULE:FUNCTION or path/to/file.py:FUNCTION")
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise InvalidInputError(f"--engine: no such file {path}")
            mod_spec = importlib.util.spec_from_file_location(f"faceanchor_engine_{path.stem}", path)
            if mod_spec is None or mod_spec.loader is None:
                raise InvalidInputError(f"--engine: cannot load {path}")
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ImportError as e:
        raise InvalidInputError(f"--engine {spec!r}: cannot import {target} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InvalidInputError(f"--engine {spec!r}: {target} has no callable {attr!r}")
    return factory


def spec_factory(spec: str, settings):  # noqa: ANN001, ANN201
    """The engine of factory ``spec``, resolved where it is called (``functools.partial(spec_factory, spec)``
    pickles by reference, so a worker process can build it: setting ``worker_processes``)."""
    return load_factory(spec)(settings)


def absolute_spec(spec: str) -> str:
    """``path/to/file.py:attr`` made absolute (a Ray replica has another working directory)."""
    target, sep, attr = spec.rpartition(":")
    if sep and (target.endswith(".py") or "/" in target):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return spec


def ray_app(settings, engine_spec: Optional[str]):  # noqa: ANN001, ANN201
    """The app a Ray Serve replica builds for itself (``functools.partial(ray_app, settings, spec)``
    pickles by reference; the engine spec is resolved inside the replica)."""
    from faceanchor.api.app import create_app

    factory = load_factory(engine_spec) if engine_spec else default_engine_factory
    return create_app(settings, engine_factory=factory)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        ctx: typer.Context,
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
        port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
        engine: Optional[str] = typer.Option(None, "--engine", help="Engine factory MODULE:FUNCTION or file.py:FUNCTION (default faceanchor.engine:Engine)."),
        workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker threads, one per device, each with its own engine."),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
        on_ray: bool = typer.Option(False, "--ray", help="Serve on Ray Serve replicas instead of uvicorn (extra 'ray')."),
        replicas: int = typer.Option(1, "--replicas", min=1, help="With --ray: number of replicas."),
        gpus_per_replica: float = typer.Option(1.0, "--gpus-per-replica", min=0, help="With --ray: GPUs per replica (0: CPU)."),
        ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --ray: cluster to join ('auto': the local `ray start` one; default: start one)."),
        weights: Optional[str] = weights_option("real (default; also FACEANCHOR_WEIGHTS), dummy (full-size random) or tiny (tiny random, for trying the API on a CPU)."),
        with_mcp: bool = typer.Option(True, "--mcp/--no-mcp", help="Serve the MCP server at /mcp too (streamable HTTP, behind the same keys; extra 'mcp')."),
    ) -> None:
        """Serve the HTTP API (sync + queue + web page) with uvicorn, or on Ray Serve with --ray."""
        import uvicorn

        from faceanchor.api.app import create_app
        from faceanchor.store.db import display_url

        settings = ctx.obj
        if workers is not None:
            settings = settings.model_copy(update={"workers": workers})
        if weights is not None:  # checked against the settings' choices by the option
            settings = settings.model_copy(update={"weights": weights})
        spec = engine or settings.engine_factory
        if on_ray:
            import functools

            from faceanchor.service.ray_deployment import run_on_ray

            spec = absolute_spec(spec) if spec else None
            if spec:
                load_factory(spec)  # a bad spec fails here, in one line, not in every replica
            typer.echo(f"faceanchor: serving on Ray Serve at http://{host}:{port} ({replicas} replica(s), "
                       f"{gpus_per_replica:g} GPU each; database {display_url(settings.resolved_database_url())})", err=True)
            run_on_ray(functools.partial(ray_app, settings, spec), num_replicas=replicas, num_gpus=gpus_per_replica,
                       host=host, port=port, address=ray_address, blocking=True)
            return
        factory = load_factory(spec) if spec else default_engine_factory
        if spec and settings.worker_processes:
            import functools

            factory = functools.partial(spec_factory, absolute_spec(spec))
        try:
            application = create_app(settings, engine_factory=factory)
        except FaceAnchorError:
            raise
        mcp_note = ""
        if with_mcp:
            try:
                from faceanchor.mcp.mount import mount
            except ModuleNotFoundError as e:
                if e.name is None or e.name.split(".")[0] not in ("mcp", "mcp_types"):
                    raise
                mcp_note = '; no /mcp: the "mcp" extra is not installed (pip install "faceanchor[mcp]")'
            else:
                mount(application, host=host)
                mcp_note = f"; MCP at http://{host}:{port}/mcp"
        typer.echo(f"faceanchor: serving on http://{host}:{port} (database {display_url(settings.resolved_database_url())}){mcp_note}", err=True)
        uvicorn.run(application, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
