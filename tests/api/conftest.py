import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from api_helpers import Harness, b64, png_bytes, tiny  # noqa: E402

from faceanchor.config import Settings  # noqa: E402


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path / "home", rate_limit_per_minute=0, job_lease_seconds=5, sse_keepalive_seconds=0.2,
                    webhook_backoff_seconds=0.01)


@pytest.fixture
def harness(settings):
    with Harness(settings, tiny.TinyEngine()) as h:
        yield h


@pytest.fixture
def face_b64():
    return b64(png_bytes())

