"""Test photos (public domain, see data/faces/PROVENANCE.md) and reduced copies of them.

dlib's detector is the slow part of tests that analyse faces: reduced copies keep them fast.
Import with ``from photos import ...`` (tests/conftest.py puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

FACES = Path(__file__).parent / "data" / "faces"


def small_copy(name: str, width: int = 360) -> str:
    """Path of ``name`` resized to ``width`` pixels wide (made once per machine, in the temp dir)."""
    from PIL import Image

    out = Path(tempfile.gettempdir()) / f"faceanchor-test-{width}-{name}"
    if not out.exists():
        im = Image.open(FACES / name).convert("RGB")
        im.resize((width, round(im.height * width / im.width))).save(out)
    return str(out)
