"""A live faceanchor server for the browser tests: what ``faceanchor serve --weights tiny`` runs
(the app of ``create_app`` with the tiny engine and the dlib face pack), on a free loopback
port, in a thread, with a temporary data dir."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx


class LiveServer:
    def __init__(self, app, host: str = "127.0.0.1"):  # noqa: ANN001
        import uvicorn

        with socket.socket() as s:
            s.bind((host, 0))
            self.port = s.getsockname()[1]
        self.host = host
        self.url = f"http://{host}:{self.port}"
        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code in (200, 503) and self.server.started:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the live server did not start")

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        self.server.should_exit = True
        self.thread.join(timeout=20)


def tiny_app(home: Path, **settings_kw):  # noqa: ANN201
    """The app `faceanchor serve --weights tiny` builds, with the dlib face pack (no model downloads)."""
    from faceanchor.api.app import create_app
    from faceanchor.config import Settings
    from faceanchor.engine import Engine

    settings = Settings(home=home, device="cpu", rate_limit_per_minute=0, job_lease_seconds=30, **settings_kw)
    return create_app(settings, engine_factory=lambda s: Engine(s, weights="tiny", face_pack="dlib"), load_in_background=False)
