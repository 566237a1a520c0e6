"""InfiniteYou through the HTTP API (its own app, the methods list, a character) and the CLI, on tiny weights."""

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from faceanchor.api.app import create_app
from faceanchor.config import Settings
from faceanchor.engine import Engine
from faceanchor.imageio import read_metadata

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
OPTS = dict(width=64, height=64, num_inference_steps=1, seed=3)


def _b64(name, width=300):
    im = Image.open(FACES / name).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = Settings(home=tmp_path_factory.mktemp("home"), device="cpu", rate_limit_per_minute=0, job_lease_seconds=30)
    app = create_app(settings, Engine(settings, weights="tiny", face_pack="dlib"), load_in_background=False, serve_web=False)
    key, _ = app.state.service.keys.create("test")
    with TestClient(app) as client:
        client.headers.update({"x-api-key": key})
        yield client
    torch.set_num_threads(n)


def test_listed_and_served_by_its_own_app(h):
    methods = {m["name"]: m for m in h.get("/v1/methods").json()["methods"]}
    m = methods["infiniteyou"]
    assert m["app"] == "infiniteyou" and m["families"] == ["flux"] and m["embedding_space"] == "facexlib"
    assert {"identity_strength", "pose_image", "control_guidance_start", "control_guidance_end"} <= set(m["method_fields"])
    assert "infiniteyou-aes_stage2" in m["models"] and "flux1-dev-base" in m["models"]
    r = h.post("/v1/infiniteyou", json={"face_image": _b64("obama.jpg"), "prompt": "a portrait", "base64": True, **OPTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 1 and Image.open(io.BytesIO(base64.b64decode(body["images"][0]))).size == (64, 64)
    r = h.post("/v1/infiniteyou", json={"face_image": _b64("obama.jpg"), "prompt": "x", "scheduler": "ddim", **OPTS})
    assert 400 <= r.status_code < 500 and "flow-matching" in r.text


def test_a_character_generates_with_it(h):
    c = h.post("/v1/characters", json={"name": "Barack", "images": {"face": _b64("obama.jpg")}})
    assert c.status_code == 201, c.text
    r = h.post("/v1/character/generate", json={"prompt": "a portrait", "character_id": c.json()["id"], "method": "infiniteyou", **OPTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["params"]["method"] == "infiniteyou" and body["params"]["character_id"] == c.json()["id"]
    assert h.get(body["images"][0]["url"]).status_code == 200


@pytest.mark.slow  # two CLI subprocesses (~25 s each on a loaded 2-core machine)
def test_cli_generate_writes_images_with_metadata_and_scores(tmp_path):
    small = tmp_path / "face.jpg"
    im = Image.open(FACES / "obama.jpg")
    im.resize((300, round(im.height * 300 / im.width))).save(small)
    env = dict(os.environ, FACEANCHOR_HOME=str(tmp_path / "home"), FACEANCHOR_DEVICE="cpu")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "faceanchor", "generate", "--method", "infiniteyou", "--weights", "tiny", "--face", str(small),
                           "--prompt", "a portrait", "--steps", "1", "--seed", "5", "--out", str(out), "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert meta["seeds"] == [5] and len(meta["files"]) == 1
    embedded = read_metadata(open(meta["files"][0], "rb").read())
    assert embedded["params"]["method"] == "infiniteyou" and embedded["models"]["infusenet"].startswith("tiny:infiniteyou-aes_stage2")
    assert "identity_score" in embedded and "no face" in embedded["identity_reason"]  # tiny random weights draw no face to score
    bad = subprocess.run([sys.executable, "-m", "faceanchor", "generate", "--method", "infiniteyou", "--weights", "tiny", "--face", str(small),
                          "--prompt", "x", "--negative-prompt", "ugly", "--steps", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "negative_prompt" in bad.stderr


LEFT, RIGHT = [0, 0, 64, 64], [64, 0, 128, 64]
TWO = dict(OPTS, width=128, height=64)


def test_two_people_on_its_own_app(h):
    body = {"face_image": _b64("obama.jpg"), "prompt": "two friends", "face_box": LEFT, **TWO,
            "more_identities": [{"face_image": _b64("biden.jpg"), "box": RIGHT, "identity_strength": 0.7}]}
    r = h.post("/v1/infiniteyou", json=body)
    assert r.status_code == 200, r.text
    meta = read_metadata(r.content)
    assert Image.open(io.BytesIO(r.content)).size == (128, 64) and len(meta["identity_scores_per_person"][0]) == 2
    assert meta["params"]["method"] == "infiniteyou" and meta["params"]["more_identities"][0]["identity_strength"] == 0.7
    assert meta["params"]["identity_strength"] == 1.0  # unset over HTTP too: InfiniteYou's default InfuseNet scale, not 0.8
    r = h.post("/v1/infiniteyou", json=dict(body, more_identities=[{"face_image": _b64("biden.jpg"), "box": [32, 0, 128, 64]}]))
    assert 400 <= r.status_code < 500 and "overlap" in r.text


def test_two_characters_with_it(h):
    ids = []
    for name, photo in (("Barack", "obama.jpg"), ("Joe", "biden.jpg")):
        c = h.post("/v1/characters", json={"name": name, "images": {"face": _b64(photo)}})
        assert c.status_code == 201, c.text
        ids.append(c.json()["id"])
    body = {"prompt": "two friends", "method": "infiniteyou", "layout": "left-right", **TWO,
            "people": [{"character_id": ids[0], "identity_strength": 0.5}, {"character_id": ids[1]}]}
    r = h.post("/v1/character/generate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["params"]["method"] == "infiniteyou" and len(out["images"][0]["identity_scores"]) == 2
    # person 1's own strength is on the request; person 2 keeps InfiniteYou's default InfuseNet scale (1.0), not 0.8
    assert out["params"]["identity_strength"] == 0.5 and out["params"]["more_identities"][0]["identity_strength"] == 1.0
    assert h.get(out["images"][0]["url"]).status_code == 200


def test_cli_two_people_with_face_boxes(tmp_path):
    from typer.testing import CliRunner

    from faceanchor.cli.app import build_app

    faces = []
    for name in ("obama.jpg", "biden.jpg"):
        faces.append(tmp_path / name)
        Image.open(io.BytesIO(base64.b64decode(_b64(name)))).save(faces[-1])
    out = tmp_path / "out"
    r = CliRunner().invoke(build_app(), [
        "--home", str(tmp_path / "home"), "--device", "cpu", "generate", "--method", "infiniteyou", "--weights", "tiny",
        "--face", str(faces[0]), "--face-box", "0,0,64,64", "--face", str(faces[1]), "--face-box", "64,0,128,64",
        "--prompt", "two friends", "--width", "128", "--height", "64", "--steps", "1", "--seed", "2", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    meta = json.loads(r.stdout.strip().splitlines()[-1])
    embedded = read_metadata(open(meta["files"][0], "rb").read())
    assert embedded["params"]["method"] == "infiniteyou" and len(embedded["identity_scores_per_person"][0]) == 2
    assert embedded["params"]["face_box"] == [0, 0, 64, 64] and embedded["params"]["more_identities"][0]["box"] == [64, 0, 128, 64]
