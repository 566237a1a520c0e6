"""Character endpoints through the test client with the tiny real engine (dlib pack, 64x64, 1-2 steps)."""

import base64
import io
import time
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from faceanchor.api.app import create_app
from faceanchor.config import Settings
from faceanchor.engine import Engine

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
OPTS = dict(width=64, height=64, num_inference_steps=1, seed=3)


def _b64(name, width=200):
    im = Image.open(FACES / name).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


FACE = _b64("obama.jpg", 300)
TARGET = _b64("obama.jpg", 160)


def _grey():
    buf = io.BytesIO()
    Image.new("RGB", (100, 100), (120, 120, 120)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, device="cpu", rate_limit_per_minute=0, job_lease_seconds=30)
    engine = Engine(settings, weights="tiny", face_pack="dlib")
    app = create_app(settings, engine, load_in_background=False, serve_web=False)
    key, _ = app.state.service.keys.create("test")
    with TestClient(app) as client:
        client.headers.update({"x-api-key": key})
        client.key = key
        client.app_ref = app
        yield client
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def character(h):
    r = h.post("/v1/characters", json={"name": "Barack", "images": {"face": FACE}})
    assert r.status_code == 201, r.text
    return r.json()


def test_create_list_get(h, character):
    assert character["spaces"] == ["dlib"] and len(character["photos"]) == 1
    assert character["identities"][0]["dim"] == 128 and "embedding" not in character["identities"][0]
    ids = [c["id"] for c in h.get("/v1/characters").json()["characters"]]
    assert character["id"] in ids
    got = h.get(f"/v1/characters/{character['id']}").json()
    assert got["name"] == "Barack"
    photo = h.get(f"{got['files_url']}/{got['photos'][0]}")
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
    assert photo.headers["x-content-type-options"] == "nosniff"


def test_errors(h, character):
    assert h.get("/v1/characters/" + "0" * 32).status_code == 404
    assert h.get("/v1/characters/" + "0" * 32).json()["error"]["type"] == "not_found"
    r = h.post("/v1/characters", json={"name": "Nobody", "images": {"face": _grey()}})
    assert r.status_code == 422 and r.json()["error"]["type"] == "no_face"
    assert h.post("/v1/characters", json={"name": "x", "images": {}}).status_code == 422
    assert h.get("/v1/characters", headers={"x-api-key": "fa_000000000000_wrongwrongwrongwrongwrong"}).status_code == 401
    assert TestClient(h.app_ref).get("/v1/characters").status_code == 401
    assert h.get("/v1/characters", headers={"x-api-key": "", "Authorization": f"Bearer {h.key}"}).status_code == 200
    r = h.post("/v1/character/generate", json={"prompt": "x", "character_id": "0" * 32, **OPTS})
    assert r.status_code == 404
    r = h.post("/v1/character/generate", json={"prompt": "x", "character_id": character["id"], "images": {"face": FACE}, **OPTS})
    assert r.status_code == 422
    assert h.post("/v1/character/generate", json={"prompt": "x", **OPTS}).status_code == 422
    r = h.post("/v1/character/generate", json={"prompt": "x", "images": {"face": _grey()}, **OPTS})
    assert r.status_code == 422 and r.json()["error"]["type"] == "no_face"
    r = h.post("/v1/character/edit", json={"prompt": "x", "character_id": character["id"], **OPTS})
    assert r.status_code == 422
    assert h.get(f"/v1/characters/{character['id']}/files/{'a' * 64}").status_code == 404


def test_generate_with_a_character_and_with_a_face(h, character):
    r = h.post("/v1/character/generate", json={"prompt": "a portrait", "character_id": character["id"], **OPTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seed"] == 3 and len(body["images"]) == 1 and body["images"][0]["identity_score"] is None
    assert body["params"]["character_id"] == character["id"]
    assert h.get(body["images"][0]["url"]).status_code == 200
    hist = h.get(f"/v1/characters/{character['id']}/history").json()["entries"]
    assert hist[0]["kind"] == "generate" and h.get(hist[0]["outputs"][0]["url"]).status_code == 200
    r = h.post("/v1/character/generate", json={"prompt": "a portrait", "images": {"face": FACE}, **OPTS})
    assert r.status_code == 200 and r.json()["params"]["character_id"] is None


def test_id_photo(h, character):
    r = h.post("/v1/character/id-photo", json={"character_id": character["id"], **OPTS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 5 and (body["images"][0]["width"], body["images"][0]["height"]) == (152, 152)
    assert [v["view"] for v in body["params"]["id_photo"]["views"]] == ["front", "left", "right", "smiling"]
    got = h.get(f"/v1/characters/{character['id']}").json()
    assert got["sheet_file"] and len(got["views"]) == 4 and h.get(got["views"][1]["url"]).status_code == 200
    r = h.post("/v1/character/id-photo", json={"images": {"face": FACE}, **OPTS})
    assert r.status_code == 200 and len(r.json()["images"]) == 5


def test_edit_both_modes(h, character):
    for mode in ("face", "background"):
        r = h.post("/v1/character/edit", json={"prompt": "on a beach", "mode": mode, "character_id": character["id"],
                                               "images": {"target": TARGET}, "mask_source": "face-box", **OPTS})
        assert r.status_code == 200, r.text
        edit = r.json()["params"]["edit"]
        assert edit["mode"] == mode and r.json()["images"][0]["width"] == 160
    r = h.post("/v1/character/edit", json={"prompt": "x", "mode": "face", "images": {"target": TARGET, "face": FACE}, **OPTS})
    assert r.status_code == 200


def test_queued_generate_status_result_cancel(h, character):
    r = h.post("/queue/character/generate", json={"prompt": "p", "character_id": character["id"], **OPTS})
    assert r.status_code == 200, r.text
    sub = r.json()
    assert sub["status_url"].endswith(f"/queue/character/generate/requests/{sub['request_id']}/status")
    deadline = time.time() + 60
    while time.time() < deadline:
        st = h.get(sub["status_url"]).json()
        if st["status"] in ("COMPLETED", "FAILED"):
            break
        time.sleep(0.05)
    assert st["status"] == "COMPLETED", st
    res = h.get(sub["response_url"])
    assert res.status_code == 200 and res.json()["images"][0]["seed"] == 3
    c = h.put(sub["cancel_url"])
    assert c.status_code == 202 and c.json()["status"] == "ALREADY_COMPLETED"
    assert h.get(sub["status_url"].replace("/generate/", "/edit/")).status_code == 404
    assert h.get(sub["status_url"], headers={"x-api-key": "nope"}).status_code == 401


def test_delete_removes_character_and_files(h):
    r = h.post("/v1/characters", json={"name": "Temp", "images": {"face": _b64("obama2.jpg", 300)}})
    assert r.status_code == 201
    ch = r.json()
    photo_url = f"{ch['files_url']}/{ch['photos'][0]}"
    d = h.delete(f"/v1/characters/{ch['id']}")
    assert d.status_code == 200 and d.json()["files_deleted"] >= 1
    assert h.get(f"/v1/characters/{ch['id']}").status_code == 404
    assert h.get(photo_url).status_code == 404
    assert h.delete(f"/v1/characters/{ch['id']}").status_code == 404
    assert h.get(f"/v1/characters/{ch['id']}/history").status_code == 404
