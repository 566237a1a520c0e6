"""Fixtures of the MCP tests: an embedded faceanchor (the API app in process, the tiny test
engine) behind the MCP server, driven by the SDK's own in-memory client."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

import tiny_engine  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    from faceanchor.config import Settings

    return Settings(home=tmp_path / "home", rate_limit_per_minute=0, job_lease_seconds=1, face_pack="dlib")


@pytest.fixture
def engine():
    return tiny_engine.TinyEngine(step_delay=0.05)


@pytest.fixture(scope="session")
def dlib_analyzer(tmp_path_factory):
    """One prepared dlib analyzer for the whole run (loading its models takes seconds)."""
    from faceanchor.config import Settings
    from faceanchor.face.analyzer import FaceAnalyzer

    return FaceAnalyzer(Settings(home=tmp_path_factory.mktemp("analyzer"), face_pack="dlib"), "dlib").prepare()


def share_analyzer(backend, analyzer):
    """Hand the app's character service the prepared analyzer (test scaffolding: its cache)."""
    backend.app.state.characters._analyzers["dlib"] = analyzer
    return backend


@pytest.fixture
def backend(settings, engine, dlib_analyzer):
    from faceanchor.mcp.backend import embedded

    return share_analyzer(embedded(settings, engine), dlib_analyzer)


@pytest.fixture
def server(backend):
    from faceanchor.mcp.server import build_server

    return build_server(backend)
