"""Helpers shared by the API tests (put on sys.path by conftest.py)."""

import base64
import io
import time

from fastapi.testclient import TestClient
from PIL import Image

import tiny_engine as tiny
from faceanchor.api.app import create_app


def png_bytes(size=(48, 48), noise=True, fmt="PNG") -> bytes:
    img = Image.effect_noise(size, 60).convert("RGB") if noise else Image.new("RGB", size, (120, 120, 120))
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wait_ready(client, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if client.get("/health").json()["status"] in ("ready", "busy"):
            return
        time.sleep(0.02)
    raise AssertionError("service never became ready")


class Harness:
    def __init__(self, settings, engine, **kw):
        self.engine = engine
        self.app = create_app(settings, engine, **kw)
        self.service = self.app.state.service
        self.key, self.key_info = self.service.keys.create("test")
        self.headers = {"x-api-key": self.key}
        self.client = TestClient(self.app)

    def __enter__(self):
        self.client.__enter__()
        wait_ready(self.client)
        return self

    def __exit__(self, *exc):
        self.client.__exit__(*exc)

    def wait(self, status_url, timeout=10.0, statuses=("COMPLETED", "FAILED", "CANCELLED")):
        deadline = time.time() + timeout
        while time.time() < deadline:
            body = self.client.get(status_url, headers=self.headers).json()
            if body["status"] in statuses:
                return body
            time.sleep(0.02)
        raise AssertionError(f"job never reached {statuses}: {body}")
