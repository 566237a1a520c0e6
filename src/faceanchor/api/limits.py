"""Request limits: per-key token-bucket rate limiting and the body-size cap.

The body cap is an ASGI middleware: a declared ``Content-Length`` over the limit is refused with
413 before any byte is read, and a body without one (chunked) is counted while it streams and
refused as soon as it passes the limit — nothing over the limit is ever parsed.
"""

from __future__ import annotations

import json
import math
import threading
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceanchor.api.errors import ApiError


class TokenBucket:
    """Per-key buckets of ``per_minute`` tokens, refilled continuously."""

    def __init__(self, clock=time.monotonic):  # noqa: ANN001
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int) -> float | None:
        """Take one token; ``None`` if allowed, else seconds until one is available."""
        if per_minute <= 0:
            return None
        now = self.clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(key, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate


def retry_after_header(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int):
        super().__init__(413, f"the request body is over the limit of {limit} bytes", "body_too_large")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    status = 413 if declared > self.max_bytes else 400
                    msg = (f"the request body is over the limit of {self.max_bytes} bytes" if status == 413
                           else "the Content-Length header is malformed")
                    body = json.dumps({"error": {"type": "body_too_large" if status == 413 else "invalid_request", "message": msg}}).encode()
                    await send({"type": "http.response.start", "status": status,
                                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                            (b"connection", b"close")]})
                    await send({"type": "http.response.body", "body": body})
                    return
        seen = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)
