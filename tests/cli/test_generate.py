"""`faceanchor generate` through the real entry point, on tiny weights with the dlib pack."""

import json
import os
import subprocess
import sys

from PIL import Image

from faceanchor.imageio import read_metadata

FACES = os.path.join(os.path.dirname(__file__), "..", "data", "faces")


def run(tmp_path, *args):
    env = dict(os.environ, FACEANCHOR_HOME=str(tmp_path / "home"), FACEANCHOR_DEVICE="cpu")
    return subprocess.run([sys.executable, "-m", "faceanchor", *args], capture_output=True, text=True, env=env, timeout=600)


def test_generate_writes_images_with_metadata(tmp_path):
    small = tmp_path / "face.jpg"
    im = Image.open(f"{FACES}/obama.jpg")
    im.resize((300, round(im.height * 300 / im.width))).save(small)
    out = tmp_path / "out"
    proc = run(
        tmp_path, "generate", "--weights", "tiny", "--face", str(small), "--prompt", "a portrait", "--style", "Neon",
        "--width", "64", "--height", "64", "--steps", "2", "--seed", "5", "--samples", "2", "--out", str(out), "--json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert meta["seeds"] == [5, 6] and len(meta["files"]) == 2
    for f in meta["files"]:
        data = open(f, "rb").read()
        embedded = read_metadata(data)
        assert embedded["params"]["style"] == "Neon" and embedded["seed"] in (5, 6)
        assert embedded["identity_score"] is None and "no face" in embedded["identity_reason"]
        assert set(embedded["timings"]) >= {"face", "prompt", "denoise", "decode"}


def test_generate_progress_bar_and_human_output(tmp_path):
    small = tmp_path / "face.jpg"
    Image.open(f"{FACES}/obama.jpg").resize((300, 375)).save(small)
    proc = run(tmp_path, "generate", "--weights", "tiny", "--face", str(small), "--prompt", "x", "--width", "64",
               "--height", "64", "--steps", "2", "--seed", "1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "generating" in proc.stderr and "2/2" in proc.stderr  # tqdm
    assert "seed=1" in proc.stdout and "identity=n/a" in proc.stdout


def _one_line(proc, needle):
    assert proc.returncode == 2, proc.stdout + proc.stderr[-2000:]
    lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith("[transformers]")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_generate_bad_inputs_exit_2_with_one_line(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 120), "gray").save(blank)
    _one_line(run(tmp_path, "generate", "--weights", "tiny", "--face", str(blank), "--prompt", "x", "--width", "64", "--height", "64", "--steps", "1"), "no face")
    _one_line(run(tmp_path, "generate", "--weights", "tiny", "--prompt", "x"), "--face")
    _one_line(run(tmp_path, "generate", "--weights", "tiny", "--face", str(blank), "--samples", "9"), "samples")
    _one_line(run(tmp_path, "generate", "--weights", "tiny", "--face", str(tmp_path / "nope.jpg"), "--prompt", "x"), "no such file")
    _one_line(run(tmp_path, "generate", "--weights", "real", "--pack", "dlib", "--face", f"{FACES}/obama.jpg", "--prompt", "x"), "antelopev2")


def test_generate_two_people_with_face_boxes(tmp_path):
    out = tmp_path / "out"
    proc = run(
        tmp_path, "generate", "--weights", "tiny", "--face", f"{FACES}/obama.jpg", "--face-box", "0,0,64,64",
        "--face", f"{FACES}/biden.jpg", "--face-box", "64,0,128,64", "--prompt", "two friends", "--width", "128",
        "--height", "64", "--steps", "1", "--seed", "2", "--out", str(out), "--json",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    embedded = read_metadata(open(meta["files"][0], "rb").read())
    assert len(embedded["identity_scores_per_person"][0]) == 2
    assert embedded["params"]["face_box"] == [0, 0, 64, 64] and embedded["params"]["more_identities"][0]["box"] == [64, 0, 128, 64]
    bad = run(tmp_path, "generate", "--weights", "tiny", "--face", f"{FACES}/obama.jpg", "--face-box", "0,0,64,64",
              "--face", f"{FACES}/biden.jpg", "--prompt", "x")
    assert bad.returncode == 2 and "one --face-box per --face" in bad.stderr and "Traceback" not in bad.stderr
