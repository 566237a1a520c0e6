"""The dependency direction of DESIGN.md, enforced by import-linter, and no work at import time."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout, proc.stdout


def test_importing_the_package_loads_no_heavy_library():
    code = (
        "import sys, faceanchor, faceanchor.types, faceanchor.config, faceanchor.imageio, faceanchor.cli.app;"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'dlib', 'onnxruntime', 'mediapipe') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at import time: {out}"
