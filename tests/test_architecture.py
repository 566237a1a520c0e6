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
        "import faceanchor.methods.registry as r; faceanchor.cli.app.build_app(); [m.describe() for m in r.methods()];"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'dlib', 'onnxruntime', 'mediapipe') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported at import time: {out}"


def test_no_method_or_weights_string_checks_outside_the_method_files():
    """A method is one file under methods/: nothing else branches on a method's name or on the weights kind."""
    import re

    root = Path(__file__).resolve().parents[1] / "src" / "faceanchor"
    pattern = re.compile(r"""(method|weights)\s*(==|!=)|(method|weights)\s+(not\s+)?in\s*\(|\b(==|!=)\s*["'](instantid|faceid[-a-z0-9]*|real|dummy|tiny)["']""")
    offenders = []
    for path in root.rglob("*.py"):
        if path.parent.name == "methods" or path.name == "loading.py":  # the method files; the loaders' one table
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
