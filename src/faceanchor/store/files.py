"""Content-addressed files on disk: the sha256 of the bytes is the id.

Files live under ``root/<namespace>/<ab>/<sha256>`` (namespaces keep job inputs apart from
outputs the API serves). Writes go to a temporary file and are renamed into place, so a file
is either whole or absent; writing the same bytes twice is a no-op, which makes result
writes idempotent. Like the database (WAL, ``synchronous=NORMAL``) files survive a killed
process; they are not fsynced, so a power cut may lose the last moments.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{64}$")
_NAMESPACE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

#: Magic numbers of the types the store serves, checked in order.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"WEBP", 8, "image/webp"),
    (b"GIF8", 0, "image/gif"),
)


def sniff_content_type(head: bytes) -> str:
    """The MIME type of a file from its first bytes; ``application/octet-stream`` if unknown."""
    for magic, offset, mime in _MAGIC:
        if head[offset : offset + len(magic)] == magic and (mime != "image/webp" or head[:4] == b"RIFF"):
            return mime
    return "application/octet-stream"


def is_file_id(value: str) -> bool:
    return bool(_ID.match(value))


class FileStore:
    """Put and get immutable blobs by their sha256."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    def _path(self, namespace: str, file_id: str) -> Path:
        if not _NAMESPACE.match(namespace):
            raise ValueError(f"bad namespace {namespace!r}")
        if not is_file_id(file_id):
            raise ValueError(f"bad file id {file_id!r}")
        return self.root / namespace / file_id[:2] / file_id

    def put(self, data: bytes, namespace: str = "outputs") -> str:
        """Store ``data``; return its id (the hex sha256)."""
        file_id = hashlib.sha256(data).hexdigest()
        path = self._path(namespace, file_id)
        if path.exists() and path.stat().st_size == len(data):
            return file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        return file_id

    def path(self, file_id: str, namespace: str = "outputs") -> Path | None:
        """The file's path, or ``None`` if the id is malformed or unknown."""
        try:
            p = self._path(namespace, file_id)
        except ValueError:
            return None
        return p if p.is_file() else None

    def get(self, file_id: str, namespace: str = "outputs") -> bytes | None:
        p = self.path(file_id, namespace)
        return p.read_bytes() if p is not None else None

    def content_type(self, file_id: str, namespace: str = "outputs") -> str | None:
        p = self.path(file_id, namespace)
        if p is None:
            return None
        with open(p, "rb") as f:
            return sniff_content_type(f.read(16))

    def delete(self, file_id: str, namespace: str = "outputs") -> bool:
        p = self.path(file_id, namespace)
        if p is None:
            return False
        p.unlink(missing_ok=True)
        return True
