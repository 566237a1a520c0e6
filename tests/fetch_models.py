"""Put the test suite's downloaded model in place, once, before pytest runs (no network at test time).

    .venv/bin/python tests/fetch_models.py

is the README's set-up step between installing and ``pytest`` (``.ci/run`` runs it too). It
fetches the ``scrfd==0.3.0`` source archive from PyPI with pip (pip's cache serves repeats),
checks the SHA-256 of its ``models/scrfd.onnx``, and writes it to
``tests/data/models/scrfd-0.3.0.onnx`` (git-ignored; see ``tests/data/models/PROVENANCE.md``
for where the model comes from and why it is not committed). Does nothing when the file is
already there with the right checksum. Exit status 1 with the reason when it cannot.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

MODELS_DIR = Path(__file__).parent / "data" / "models"
SCRFD_VERSION = "0.3.0"
SCRFD_FILE = MODELS_DIR / f"scrfd-{SCRFD_VERSION}.onnx"
SCRFD_MEMBER = f"scrfd-{SCRFD_VERSION}/models/scrfd.onnx"
SCRFD_SHA256 = "9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30"
SETUP_STEP = "python tests/fetch_models.py"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def scrfd_ready() -> bool:
    return SCRFD_FILE.is_file() and sha256(SCRFD_FILE) == SCRFD_SHA256


def fetch_scrfd() -> Path:
    if scrfd_ready():
        return SCRFD_FILE
    MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", f"scrfd=={SCRFD_VERSION}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archive = Path(tmp) / f"scrfd-{SCRFD_VERSION}.tar.gz"
        if proc.returncode != 0 or not archive.is_file():
            raise SystemExit(f"could not download scrfd=={SCRFD_VERSION} with pip:\n{proc.stderr[-2000:]}")
        part = SCRFD_FILE.with_suffix(".part")
        with tarfile.open(archive) as tar, open(part, "wb") as out:
            src = tar.extractfile(tar.getmember(SCRFD_MEMBER))
            out.write(src.read())
    got = sha256(part)
    if got != SCRFD_SHA256:
        part.unlink()
        raise SystemExit(f"{SCRFD_MEMBER} has SHA-256 {got}, expected {SCRFD_SHA256}: not writing it")
    part.replace(SCRFD_FILE)
    return SCRFD_FILE


if __name__ == "__main__":
    print(f"test model ready: {fetch_scrfd()}")
