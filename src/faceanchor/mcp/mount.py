"""``/mcp`` in the HTTP API app: the MCP server over streamable HTTP, behind the API's keys.

:func:`mount` adds the MCP endpoint to an app made by :func:`faceanchor.api.app.create_app` and
runs the MCP session manager with the app's lifespan. Each MCP request must carry an API key
(``x-api-key`` or ``Authorization: Bearer``/``Key``), checked like the API's own (401/403 with
the API's JSON error); the tools then call the same app in process with that key, so a key sees
only its own (or its tenant's) characters, jobs and files. File paths are never read here.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import httpx
from starlette.routing import Route

from faceanchor.mcp.backend import IN_PROCESS_URL, Backend, presented_key
from faceanchor.mcp.server import build_server


def mount(app: Any, *, path: str = "/mcp", host: str = "127.0.0.1") -> Any:
    """Serve the MCP server at ``path`` of ``app`` (before the app starts); returns the MCP server.

    ``host``: where the app listens; on a loopback address the SDK's DNS-rebinding protection
    (Host and Origin checks) is on."""
    backend = Backend(IN_PROCESS_URL, None, transport=httpx.ASGITransport(app=app), allow_paths=False,
                      public_url="request")
    server = build_server(backend)
    inner = server.streamable_http_app(streamable_http_path=path, host=host)
    endpoint = next(r.endpoint for r in inner.routes if isinstance(r, Route) and r.path == path)
    app.router.routes.append(Route(path, endpoint=_KeyRequired(endpoint, app), include_in_schema=False))

    before = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with before(a) as state:
            async with server.session_manager.run():
                yield state

    app.router.lifespan_context = lifespan
    return server


def proxy_app(server_url: str, *, host: str = "127.0.0.1") -> Any:
    """A streamable-HTTP MCP app (``/mcp``) in front of a faceanchor server elsewhere: each MCP
    request's key is passed on to ``server_url``, which checks it (``faceanchor mcp --http --server``)."""
    base = server_url.rstrip("/")
    return build_server(Backend(base, None, allow_paths=False, public_url=base)).streamable_http_app(host=host)


class _KeyRequired:
    """ASGI wrapper: the MCP endpoint answers only requests with a valid API key."""

    def __init__(self, inner: Any, app: Any):
        self.inner = inner
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from faceanchor.store.keys import KeyCheck

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        key = presented_key(headers)
        if not key:
            return await _error(send, 401, "unauthorized", "an API key is required (x-api-key header or Authorization: Bearer …)")
        outcome, _info = self.app.state.service.keys.verify(key)
        if outcome == KeyCheck.REVOKED:
            return await _error(send, 403, "forbidden", "this API key has been revoked")
        if outcome != KeyCheck.OK:
            return await _error(send, 401, "unauthorized", "the API key is not valid")
        await self.inner(scope, receive, send)


async def _error(send: Any, status: int, type_: str, message: str) -> None:
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Key"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
