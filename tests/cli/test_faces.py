"""`faceanchor faces` / `faceanchor compare` through the real entry point (faceanchor.cli.app.main)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

FACES = os.path.join(os.path.dirname(__file__), "..", "data", "faces")


def run(*args, env_home=None, tmp_path=None):
    env = dict(os.environ)
    if tmp_path is not None:
        env["FACEANCHOR_HOME"] = str(tmp_path / "home")
        env["FACEANCHOR_INSIGHTFACE_ROOT"] = str(tmp_path / "insightface")
    return subprocess.run([sys.executable, "-m", "faceanchor", *args], capture_output=True, text=True, env=env, timeout=300)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_compare_same_and_different(tmp_path):
    same = run("compare", f"{FACES}/obama.jpg", f"{FACES}/obama2.jpg", tmp_path=tmp_path)
    assert same.returncode == 0, same.stderr
    assert same.stdout.startswith("same: euclidean")
    diff = run("compare", f"{FACES}/obama.jpg", f"{FACES}/biden.jpg", "--json", tmp_path=tmp_path)
    assert diff.returncode == 0, diff.stderr
    out = json.loads(diff.stdout)
    assert out["verdict"] == "different" and out["same"] is False
    assert out["threshold"] == 0.6 and out["metric"] == "euclidean" and out["score"] > 0.6
    assert out["a"]["image"].endswith("obama.jpg") and len(out["a"]["kps"]) == 5


def test_faces_json_and_draw(tmp_path):
    overlay = tmp_path / "overlay.png"
    proc = run("faces", f"{FACES}/obama.jpg", "--json", "--draw", str(overlay), tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["pack"] == "dlib" and len(out["faces"]) == 1
    f = out["faces"][0]
    assert f["index"] == 0 and set(f["kps"]) == {"left_eye", "right_eye", "nose", "mouth_left", "mouth_right"}
    assert f["kps"]["left_eye"][0] < f["kps"]["right_eye"][0]
    assert f["quality"]["warnings"] == [] and f["quality"]["size_px"] > 200
    img = Image.open(overlay)
    assert img.size == tuple(out["size"])
    x, y = (int(v) for v in f["kps"]["left_eye"])
    assert tuple(np.asarray(img.convert("RGB"))[y, x]) == (255, 0, 0)


def test_faces_text(tmp_path):
    proc = run("faces", f"{FACES}/astronaut.png", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "largest first" in proc.stdout and "[0] box" in proc.stdout


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def _jpeg(img):
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def _noisy_jpeg_half():
    data = _jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)))
    return data[: len(data) // 2]


def test_bad_inputs_exit_2_with_one_line(tmp_path, monkeypatch, capsys):
    from faceanchor.cli.app import main

    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEANCHOR_INSIGHTFACE_ROOT", str(tmp_path / "insightface"))
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, format="GIF")
    blank = _write(tmp_path, "blank.png", _png(Image.new("RGB", (300, 200), (255, 255, 255))))
    cases = [
        (("faces", str(tmp_path / "nope.jpg")), ("nope.jpg", "no such file")),
        (("faces", _write(tmp_path, "x.jpg", b"garbage bytes")), ("x.jpg", "not a readable image")),
        (("faces", _write(tmp_path, "anim.gif", gif.getvalue())), ("anim.gif", "GIF images are not supported; use JPEG, PNG or WEBP")),
        (("faces", _write(tmp_path, "cut.jpg", _noisy_jpeg_half())), ("cut.jpg", "truncated or corrupt")),
        (("faces", blank), ("no face found in", "blank.png")),
        (("compare", f"{FACES}/obama.jpg", blank), ("no face found in", "blank.png")),
        (("faces", f"{FACES}/obama.jpg", "--pack", "antelopev2"), ("face pack 'antelopev2' was not found", "glintr100.onnx", "scrfd_10g_bnkps.onnx")),
        (("faces", f"{FACES}/obama.jpg", "--detector", "yolo"), ("detector 'yolo' is unknown",)),
    ]
    for args, needles in cases:
        with pytest.raises(SystemExit) as e:
            main(list(args))
        captured = capsys.readouterr()
        proc = subprocess.CompletedProcess(args, e.value.code, captured.out, captured.err)
        _one_line_error(proc, *needles)
    # and once through a real process, to see no traceback reaches the terminal
    _one_line_error(run("faces", blank, tmp_path=tmp_path), "no face found in", "blank.png")


def test_limits_from_environment(tmp_path):
    env_proc = subprocess.run(
        [sys.executable, "-m", "faceanchor", "faces", f"{FACES}/obama.jpg"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FACEANCHOR_HOME": str(tmp_path), "FACEANCHOR_MAX_IMAGE_BYTES": "1000"},
    )
    _one_line_error(env_proc, "obama.jpg", "over the limit of 1000 bytes")
    bomb = _write(tmp_path, "bomb.png", _png(Image.new("L", (9000, 9000))))
    env_proc = subprocess.run(
        [sys.executable, "-m", "faceanchor", "faces", bomb],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FACEANCHOR_HOME": str(tmp_path), "FACEANCHOR_MAX_IMAGE_PIXELS": "40000000"},
    )
    _one_line_error(env_proc, "bomb.png", "81000000 pixels", "over the limit of 40000000 pixels")


def test_in_process_main(tmp_path, monkeypatch, capsys):
    from faceanchor.cli.app import main

    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(["faces", str(tmp_path / "missing.png")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'missing.png'}: no such file"


def _png(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
