"""``faceanchor mcp``: the MCP server, over stdio (for an MCP host such as Claude Desktop) or streamable HTTP.

Against a running faceanchor server (``--server URL --key KEY``) or an embedded one (the API app
and an engine in this process: ``--weights``, ``--engine``). Over stdio, image arguments may be
local file paths; over HTTP each MCP request carries its own API key and paths are refused.
"""

from __future__ import annotations

from typing import Optional

import typer

from faceanchor.cli.generate import weights_option
from faceanchor.errors import InvalidInputError


def register(app: typer.Typer) -> None:
    @app.command("mcp")
    def mcp_command(
        ctx: typer.Context,
        server: Optional[str] = typer.Option(None, "--server", envvar="FACEANCHOR_SERVER",
                                             help="A running faceanchor server's URL (default: an embedded one)."),
        key: Optional[str] = typer.Option(None, "--key", envvar="FACEANCHOR_API_KEY",
                                          help="API key for --server over stdio (embedded: a key of tenant 'mcp-local' made per run)."),
        http: bool = typer.Option(False, "--http", help="Serve MCP over streamable HTTP at http://HOST:PORT/mcp instead of stdio."),
        host: str = typer.Option("127.0.0.1", "--host", help="With --http: address to listen on."),
        port: int = typer.Option(8001, "--port", min=0, max=65535, help="With --http: port to listen on."),
        engine: Optional[str] = typer.Option(None, "--engine", help="Embedded: engine factory MODULE:FUNCTION or file.py:FUNCTION."),
        weights: Optional[str] = weights_option("Embedded: real (default; also FACEANCHOR_WEIGHTS), dummy or tiny."),
        log_level: str = typer.Option("warning", "--log-level", help="With --http: uvicorn log level."),
    ) -> None:
        """Run the MCP server (tools: create/list/get/delete characters, generate, ID photo, edit, jobs)."""
        settings = ctx.obj
        if weights is not None:
            settings = settings.model_copy(update={"weights": weights})
        if server is not None and (engine is not None or weights is not None):
            raise InvalidInputError("--engine and --weights are for the embedded server; drop them with --server")
        if server is not None and not server.startswith(("http://", "https://")):
            raise InvalidInputError(f"--server {server!r}: give an http(s) URL, e.g. http://127.0.0.1:8000")
        if http:
            _serve_http(settings, server, host, port, engine, log_level)
            return
        from faceanchor.mcp.backend import Backend, embedded
        from faceanchor.mcp.server import build_server

        if server is not None:
            if not key:
                raise InvalidInputError("--server needs an API key: --key KEY or FACEANCHOR_API_KEY (faceanchor keys create)")
            backend = Backend(server.rstrip("/"), key, public_url=server.rstrip("/"))
        else:
            backend = embedded(settings, engine_factory=_factory(settings, engine), key=key, background=True)
        build_server(backend).run("stdio")


def _factory(settings, spec: Optional[str]):  # noqa: ANN001, ANN202
    from faceanchor.cli.serve import default_engine_factory, load_factory

    spec = spec or settings.engine_factory
    return load_factory(spec) if spec else default_engine_factory


def _serve_http(settings, server: Optional[str], host: str, port: int, spec: Optional[str], log_level: str) -> None:  # noqa: ANN001
    """Streamable HTTP: a proxy to ``server`` (each request's key passed on), or the embedded API app with ``/mcp``."""
    import uvicorn

    if server is not None:
        from faceanchor.mcp.mount import proxy_app

        application = proxy_app(server, host=host)
        typer.echo(f"faceanchor: MCP on http://{host}:{port}/mcp for {server.rstrip('/')}", err=True)
    else:
        from faceanchor.api.app import create_app
        from faceanchor.mcp.mount import mount

        application = create_app(settings, engine_factory=_factory(settings, spec))
        mount(application, host=host)
        typer.echo(f"faceanchor: MCP on http://{host}:{port}/mcp (and the HTTP API on http://{host}:{port})", err=True)
    uvicorn.run(application, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
