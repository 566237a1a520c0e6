"""Shared fixtures: test photos, isolated settings, the real SCRFD model, a tiny ArcFace ONNX.

The SCRFD model is the real ``models/scrfd.onnx`` of the ``scrfd==0.3.0`` source archive on
PyPI, put in ``tests/data/models/`` by the set-up step ``python tests/fetch_models.py`` (part
of the README's test command) before pytest runs; nothing is downloaded during the tests. The
ArcFace stand-in is a small torch network exported to ONNX with the ArcFace contract
(1×3×112×112 → 1×512).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

FACES_DIR = Path(__file__).parent / "data" / "faces"


def _fetch_models():
    """``tests/fetch_models.py`` as a module (``tests`` is not a package)."""
    spec = importlib.util.spec_from_file_location("faceanchor_tests_fetch_models", Path(__file__).parent / "fetch_models.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return FACES_DIR


@pytest.fixture
def settings(tmp_path):
    """Settings whose home and InsightFace root are empty temporary directories."""
    from faceanchor.config import Settings

    return Settings(home=tmp_path / "home", insightface_root=tmp_path / "insightface")


@pytest.fixture(scope="session")
def scrfd_model_path() -> Path:
    """The real SCRFD ONNX model of the scrfd==0.3.0 sdist, as the set-up step left it."""
    fm = _fetch_models()
    if not fm.SCRFD_FILE.is_file():
        pytest.fail(f"{fm.SCRFD_FILE} is missing: run the test set-up step `{fm.SETUP_STEP}` (see README, Run the tests) before pytest")
    if not fm.scrfd_ready():
        pytest.fail(f"{fm.SCRFD_FILE} has the wrong SHA-256: delete it and run `{fm.SETUP_STEP}` again")
    return fm.SCRFD_FILE


class TinyArcFace:
    """Builds (once per session) a small torch net with ArcFace's contract and exports it."""

    def __init__(self, directory: Path):
        import torch
        from torch import nn

        torch.manual_seed(0)
        self.module = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(16 * 16, 512),
        ).eval()
        self.path = directory / "tiny_arcface.onnx"
        dummy = torch.zeros(1, 3, 112, 112)
        import warnings

        with warnings.catch_warnings():  # the TorchScript exporter is deprecated but exact here
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(self.module, (dummy,), str(self.path), input_names=["input.1"], output_names=["embedding"], opset_version=17, dynamo=False)

    def __call__(self, blob):
        import numpy as np
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(np.asarray(blob, dtype=np.float32))).numpy()


@pytest.fixture(scope="session")
def tiny_arcface(tmp_path_factory) -> TinyArcFace:
    return TinyArcFace(tmp_path_factory.mktemp("arcface"))


@pytest.fixture
def onnx_pack_settings(tmp_path, scrfd_model_path, tiny_arcface):
    """Settings with a ``buffalo_l`` pack (real SCRFD + tiny ArcFace) under the InsightFace root."""
    from faceanchor.config import Settings

    root = tmp_path / "insightface"
    pack = root / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    shutil.copy(scrfd_model_path, pack / "det_10g.onnx")
    shutil.copy(tiny_arcface.path, pack / "w600k_r50.onnx")
    return Settings(home=tmp_path / "home", insightface_root=root)


@pytest.fixture(scope="session")
def batched_models(tmp_path_factory, scrfd_model_path, tiny_arcface) -> dict[str, Path]:
    """The real SCRFD and the tiny ArcFace with a free batch size (the files fix it at 1):
    ``{"scrfd": ..., "arcface": ...}`` (tests/face/batched_onnx.py)."""
    sys.path.insert(0, str(Path(__file__).parent / "face"))
    from batched_onnx import batched_copy

    d = tmp_path_factory.mktemp("batched")
    return {"scrfd": batched_copy(scrfd_model_path, d / "scrfd_batched.onnx"),
            "arcface": batched_copy(tiny_arcface.path, d / "arcface_batched.onnx")}


@pytest.fixture
def batched_pack_settings(tmp_path, batched_models):
    """Settings with a ``buffalo_l`` pack of the batch-free copies (real SCRFD + tiny ArcFace)."""
    from faceanchor.config import Settings

    root = tmp_path / "insightface-batched"
    pack = root / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    shutil.copy(batched_models["scrfd"], pack / "det_10g.onnx")
    shutil.copy(batched_models["arcface"], pack / "w600k_r50.onnx")
    return Settings(home=tmp_path / "home", insightface_root=root)


@pytest.fixture(scope="session")
def dlib_analyzer():
    """A prepared dlib (HOG) analyzer over the installed face_recognition_models."""
    from faceanchor.config import Settings
    from faceanchor.face.analyzer import FaceAnalyzer

    return FaceAnalyzer(Settings(), pack="dlib").prepare()


@pytest.fixture(scope="session")
def load_face():
    """Load a test photo by file name as an RGB PIL image."""
    from faceanchor.imageio import load_image

    return lambda name: load_image(FACES_DIR / name)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models run faster on one thread than on two contended ones (CI has 2 cores)."""
    try:
        import torch
    except ImportError:  # the face stack runs without torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- the database backends

def _pg_cluster_module():
    spec = importlib.util.spec_from_file_location("faceanchor_tests_pg_cluster", Path(__file__).parent / "pg_cluster.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster for the session (tests/pg_cluster.py). Skips only when no
    PostgreSQL binaries are installed and ``FACEANCHOR_REQUIRE_PG`` is unset."""
    import os

    cluster = _pg_cluster_module().start_cluster()
    if cluster is None:
        if os.environ.get("FACEANCHOR_REQUIRE_PG"):
            pytest.fail("FACEANCHOR_REQUIRE_PG is set but no PostgreSQL (initdb, pg_ctl) is installed: apt-get install postgresql")
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin)")
    yield cluster
    cluster.destroy()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """The URL of an empty database on each backend: a SQLite file in tmp_path, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        (tmp_path / "db").mkdir(exist_ok=True)
        return f"sqlite:///{tmp_path}/db/faceanchor.db"
    return request.getfixturevalue("pg_cluster").create_database()
