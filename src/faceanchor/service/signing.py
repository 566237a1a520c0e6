"""Signed, expiring download URLs: ``<path>?expires=<unix time>&sig=<hex>``.

``sig`` is the HMAC-SHA256, with a server secret, of ``"<path>\\n<expires>"``: a browser or a
webhook receiver can fetch the file without the API key until ``expires``; the link cannot be
guessed or moved to another file or time without the secret. The secret is
``settings.url_signing_secret`` or a random one kept in ``<data_dir>/url_signing_secret``
(mode 0600), created on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlencode


def load_or_create_url_secret(settings) -> str:  # noqa: ANN001
    if getattr(settings, "url_signing_secret", None):
        return settings.url_signing_secret
    path = Path(settings.data_dir) / "url_signing_secret"
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret


class UrlSigner:
    """Signs and checks download paths with one secret; ``ttl_seconds`` 0 turns signing off."""

    def __init__(self, secret: str, ttl_seconds: int = 3600, clock=time.time):  # noqa: ANN001
        self.secret = secret.encode()
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    def signature(self, path: str, expires: int) -> str:
        return hmac.new(self.secret, f"{path}\n{int(expires)}".encode(), hashlib.sha256).hexdigest()

    def sign(self, base_url: str, path: str, ttl_seconds: int | None = None) -> str | None:
        """The absolute signed URL of ``path`` (``None`` when signing is off)."""
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            return None
        expires = int(self.clock()) + int(ttl)
        return f"{base_url.rstrip('/')}{path}?{urlencode({'expires': expires, 'sig': self.signature(path, expires)})}"

    def check(self, path: str, expires: str | None, sig: str | None) -> str | None:
        """``None`` if ``(expires, sig)`` is a valid, unexpired signature of ``path``, else why not."""
        if not expires or not sig:
            return "missing expires or sig"
        try:
            when = int(expires)
        except ValueError:
            return "expires is not a unix time"
        if not hmac.compare_digest(self.signature(path, when), sig.strip().lower()):
            return "the signature does not match"
        if when < self.clock():
            return "the link has expired"
        return None
