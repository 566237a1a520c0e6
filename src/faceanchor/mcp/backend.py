"""Where the MCP tools send their calls: a faceanchor HTTP API, through :mod:`faceanchor.client`.

Three ways to have one, all the same API (so keys, tenancy, limits and validation are the
server's own, never re-implemented here):

* a running server: ``Backend(url, key)``;
* embedded: :func:`embedded` builds the API app in this process around an engine and calls it
  through ``httpx.ASGITransport`` (no socket); its lifespan (workers, model) runs with the MCP
  server's;
* mounted in ``faceanchor serve`` (:mod:`faceanchor.mcp.mount`): the app the MCP route lives in,
  called in process, with the key each MCP request presented.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping

import httpx

from faceanchor.client import AsyncClient, image_ref

#: The base URL of in-process calls (never resolved: the transport is the app itself).
IN_PROCESS_URL = "http://faceanchor.internal"
_REMOTE_SCHEMES = ("http://", "https://", "data:")


class BackendError(Exception):
    """A tool's input the backend refuses before any call (a missing key, a server path over HTTP)."""


@dataclass
class Backend:
    """One faceanchor API and how to reach it.

    ``key``: the key of every call (stdio, a remote server); ``None``: each call's key comes from
    the MCP request's own ``x-api-key`` / ``Authorization`` header (streamable HTTP).
    ``allow_paths``: image arguments may name local files (read here, sent as base64); off when
    the MCP server is reached over the network, where a path would name a file of the server.
    ``public_url``: where result files can be fetched by the agent's host (None: in process;
    ``"request"``: the base URL of the MCP request, when mounted in the API app).
    ``lifespan``: an async context manager factory run for the MCP server's lifetime.
    """

    base_url: str
    key: str | None = None
    transport: httpx.AsyncBaseTransport | None = None
    allow_paths: bool = True
    public_url: str | None = None
    lifespan: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None
    poll_interval: float = 0.1
    _methods: dict[str, str] | None = field(default=None, repr=False)

    def client(self, headers: Mapping[str, str] | None = None) -> AsyncClient:
        """A client with this call's key: the backend's own, else the MCP request's header."""
        key = self.key or presented_key(headers)
        if not key:
            raise BackendError("an API key is required: send it as 'x-api-key' or 'Authorization: Bearer <key>'")
        return AsyncClient(self.base_url, key, transport=self.transport, poll_interval=self.poll_interval)

    def image(self, value: str, name: str) -> str:
        """An image argument as the API takes it (URL, data: URI or base64)."""
        if not isinstance(value, str) or not value.strip():
            raise BackendError(f"{name}: give a file path, an http(s) URL, a data: URI or base64 text")
        value = value.strip()
        if value[:10].lower().startswith(_REMOTE_SCHEMES):
            return value
        if len(value) < 4096 and not self.allow_paths and not _looks_base64(value):
            raise BackendError(f"{name}: this server does not read file paths; send an http(s) URL, a data: URI or base64")
        try:
            return image_ref(os.path.expanduser(value) if len(value) < 4096 else value)
        except (FileNotFoundError, TypeError) as e:
            raise BackendError(f"{name}: {e}") from None

    async def app_of(self, client: AsyncClient, method: str | None) -> str:
        """The HTTP app that serves ``method`` (``None``: instantid's)."""
        if self._methods is None:
            self._methods = {m.name: m.app for m in (await client.methods()).methods}
        name = method or "instantid"
        if name not in self._methods:
            raise BackendError(f"unknown method {name!r}; one of: {', '.join(sorted(self._methods))}")
        return self._methods[name]

    def file_url(self, file_url: str, request_base: str | None = None) -> str | None:
        """The URL an outside host can fetch a result at (None in process)."""
        public = request_base if self.public_url == "request" else self.public_url
        if public is None:
            return None
        if file_url.startswith(IN_PROCESS_URL):
            return public.rstrip("/") + file_url[len(IN_PROCESS_URL):]
        return file_url


def _looks_base64(value: str) -> bool:
    import re

    return len(value) >= 64 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", value[:4096]) is not None


def presented_key(headers: Mapping[str, str] | None) -> str | None:
    """The key of ``x-api-key: KEY``, ``Authorization: Key KEY`` or ``Authorization: Bearer KEY``."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if lowered.get("x-api-key"):
        return lowered["x-api-key"].strip()
    scheme, _, value = (lowered.get("authorization") or "").strip().partition(" ")
    if scheme.lower() in ("key", "bearer") and value.strip():
        return value.strip()
    return None


def embedded(settings: Any, engine: Any = None, *, engine_factory: Callable | None = None, key: str | None = None,
             tenant: str = "mcp-local", background: bool = False) -> Backend:
    """The API app built here around ``engine`` (or ``engine_factory``), called in process.

    ``background``: the model loads in a thread after the MCP server starts (so a host's
    initialize does not wait for it); calls made meanwhile queue, or wait out the API's 503.

    With no ``key``, the MCP server uses a key of tenant ``tenant`` made when it starts and
    revoked when it stops, so its characters persist from one run to the next (every key of a
    tenant sees the tenant's characters) and no key outlives the process.
    """
    from faceanchor.api.app import create_app

    app = create_app(settings, engine, engine_factory=engine_factory, load_in_background=background, serve_web=False)
    backend = Backend(IN_PROCESS_URL, key, transport=httpx.ASGITransport(app=app))

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with app.router.lifespan_context(app):
            made = None
            if backend.key is None:
                backend.key, made = app.state.service.keys.create("faceanchor mcp (embedded)", tenant=tenant)
            try:
                yield
            finally:
                if made is not None:
                    app.state.service.keys.revoke(made.id)
                    backend.key = None

    backend.lifespan = lifespan
    backend.app = app  # type: ignore[attr-defined]  # tests reach the service through it
    return backend
