"""Fixtures of the client tests: the live server (module-wide) and scripted servers."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

import tiny_engine  # noqa: E402
from client_helpers import LiveServer, ScriptedServer  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from faceanchor.config import Settings

    settings = Settings(home=tmp_path_factory.mktemp("home"), rate_limit_per_minute=0, job_lease_seconds=1,
                        sse_keepalive_seconds=0.2, face_pack="dlib")
    with LiveServer(settings, tiny_engine.TinyEngine(step_delay=0.02)) as server:
        yield server


@pytest.fixture
def scripted():
    servers = []

    def make(*script):
        s = ScriptedServer(script).__enter__()
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.__exit__()
