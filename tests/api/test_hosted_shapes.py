"""Contract tests of the hosted shapes: the example bodies of fal's, Segmind's and the character
API's pages (tests/data/hosted/*.json, copied from ../shared/seeds/) replayed unchanged but for
their internet image URLs, which point at a loopback server here (test mode lets loopback through).
Each documented default is asserted on the request the engine receives."""

import io
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from api_helpers import Harness, tiny, wait_ready
from local_server import LocalServer
from PIL import Image

from faceanchor.api.fal import FAL_LCM_DEFAULTS
from faceanchor.api.segmind import SEGMIND_DEFAULTS
from faceanchor.config import Settings

DATA = Path(__file__).resolve().parents[1] / "data" / "hosted"
FAL = json.loads((DATA / "fal_instantid_lcm.json").read_text())
SEGMIND = json.loads((DATA / "segmind_instantid.json").read_text())
CHARACTER = json.loads((DATA / "character_api.json").read_text())


class RecordingEngine(tiny.TinyEngine):
    """The tiny engine, keeping every request it ran; ``gate`` (when set up) holds a run."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.requests = []
        self.gate = None

    def generate(self, request, on_progress=None, cancel=None):
        self.requests.append(request)
        if self.gate is not None:
            self.gate.wait(10)
        return super().generate(request, on_progress, cancel)


def localize(body, url):
    """``body`` with every http(s) URL replaced by ``url``; nothing else changed."""
    if isinstance(body, dict):
        return {k: localize(v, url) for k, v in body.items()}
    if isinstance(body, list):
        return [localize(v, url) for v in body]
    if isinstance(body, str) and body.startswith(("http://", "https://")):
        return url
    return body


@pytest.fixture
def server():
    with LocalServer() as s:
        yield s


def _settings(tmp_path, **kw):
    return Settings(home=tmp_path / "home", rate_limit_per_minute=0, allow_private_urls=True, **kw)


@pytest.fixture
def h(tmp_path):
    with Harness(_settings(tmp_path), RecordingEngine()) as h:
        yield h


def _path(url):
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# ------------------------------------------------------------------------------------------ fal


def test_fal_example_body_runs_unchanged_and_answers_fals_output(h, server):
    body = localize(FAL["input"], f"{server.url}/img")
    assert {k: v for k, v in body.items() if k != "face_image_url"} == {k: v for k, v in FAL["input"].items() if k != "face_image_url"}
    r = h.client.post("/fal-ai/instantid/lcm", json=body, headers=h.headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"image", "seed"} and set(out["image"]) == set(FAL["output"]["image"])  # fal's output keys
    assert out["seed"] == 42 and out["image"]["content_type"] == "image/png"
    img = h.client.get(_path(out["image"]["url"]))  # a browser can load it: no key needed
    assert img.status_code == 200
    assert Image.open(io.BytesIO(img.content)).size == (out["image"]["width"], out["image"]["height"])
    req = h.engine.requests[-1]
    assert req.prompt == "man" and req.style == "Headshot" and req.negative_prompt == FAL["input"]["negative_prompt"]
    assert (req.num_inference_steps, req.guidance_scale, req.scheduler) == (5, 1.5, "lcm")
    assert req.controlnet_selection == ["canny"] and req.controlnet_conditioning_scale == 0.4
    assert req.adapter_strength == 0.7 and req.identity_strength == 0.7 and req.enhance_face_region is True and req.seed == 42
    assert req.face_image == server.image  # the photo fetched from the (localized) URL


@pytest.mark.parametrize("field", list(FAL["documented_defaults"]))
def test_fal_documented_default(h, server, field):
    assert FAL_LCM_DEFAULTS[field] == FAL["documented_defaults"][field]
    r = h.client.post("/fal-ai/instantid/lcm", json=localize(FAL["minimal_input"], f"{server.url}/img"), headers=h.headers)
    assert r.status_code == 200, r.text
    req = h.engine.requests[-1]
    expected = FAL["documented_defaults"][field]
    got = {"ip_adapter_scale": req.adapter_strength, "identity_controlnet_conditioning_scale": req.identity_strength,
           "controlnet_selection": req.controlnet_selection}.get(field, getattr(req, field, None))
    assert got == ([expected] if field == "controlnet_selection" else expected), (field, got)
    assert req.seed == -1 and r.json()["seed"] >= 0  # no seed: a random one, returned


def test_fal_queue_protocol_and_errors(h, server):
    c = h.client
    r = c.post("/queue/fal-ai/instantid/lcm", json=localize(FAL["input"], f"{server.url}/img"), headers=h.headers)
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["response_url"].endswith(f"/queue/fal-ai/instantid/requests/{q['request_id']}")
    deadline = time.time() + 10
    while c.get(q["status_url"], headers=h.headers).json()["status"] != "COMPLETED":
        assert time.time() < deadline
        time.sleep(0.02)
    out = c.get(q["response_url"], headers=h.headers).json()
    assert set(out) == {"image", "seed"} and out["seed"] == 42
    other = {"x-api-key": h.service.keys.create("other")[0]}
    assert c.get(q["response_url"], headers=other).status_code == 404  # tenancy holds on the fal routes too
    assert c.put(q["cancel_url"], headers=h.headers).json()["status"] == "ALREADY_COMPLETED"
    # the plain variant: the same body; a list for controlnet_selection is not fal's shape
    assert c.post("/fal-ai/instantid", json=localize(FAL["input"], f"{server.url}/img"), headers=h.headers).status_code == 200
    assert h.engine.requests[-1].scheduler == "euler"
    bad = dict(localize(FAL["input"], f"{server.url}/img"), controlnet_selection=["canny"])
    assert c.post("/fal-ai/instantid/lcm", json=bad, headers=h.headers).status_code == 422
    assert c.post("/fal-ai/instantid/lcm", json={"prompt": "man"}, headers=h.headers).status_code == 422  # face_image_url required
    assert c.post("/fal-ai/instantid/lcm", json=localize(FAL["minimal_input"], f"{server.url}/img")).status_code == 401


# ------------------------------------------------------------------------------------------ Segmind


def test_segmind_example_body_runs_unchanged(h, server):
    body = localize(SEGMIND["input"], f"{server.url}/img")
    r = h.client.post("/v1/instantid", json=body, headers=h.headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "354849415"  # base64 false: the image
    req = h.engine.requests[-1]
    assert (req.prompt, req.negative_prompt, req.style) == ("photo of a man", "lowquality, badquality, sketches", "Vibrant Color")
    assert (req.samples, req.num_inference_steps, req.guidance_scale, req.seed) == (1, 10, 5.0, 354849415)
    assert (req.identity_strength, req.adapter_strength, req.enhance_face_region) == (0.8, 0.8, True)
    r = h.client.post("/v1/instantid", json=dict(body, base64=True), headers=h.headers)
    assert r.status_code == 200 and r.json()["seed"] == 354849415 and r.json()["image"]


@pytest.mark.parametrize("field", list(SEGMIND["documented_defaults"]))
def test_segmind_documented_default(h, server, field):
    assert SEGMIND_DEFAULTS[field] == SEGMIND["documented_defaults"][field]
    r = h.client.post("/v1/instantid", json={"prompt": "photo of a man", "face_image": f"{server.url}/img"}, headers=h.headers)
    assert r.status_code == 200, r.text
    expected = SEGMIND["documented_defaults"][field]
    if field == "base64":
        assert r.headers["content-type"] == "image/png"  # false: the image bytes, not JSON
        return
    req = h.engine.requests[-1]
    assert getattr(req, field) == expected, (field, getattr(req, field))


def test_segmind_error_codes(tmp_path, server):
    face = f"{server.url}/img"
    body = {"prompt": "p", "face_image": face, "num_inference_steps": 1}
    seen = {}
    settings = _settings(tmp_path, sync_timeout_seconds=2.0)
    with Harness(settings, RecordingEngine()) as h:
        c = h.client
        seen[400] = c.post("/v1/instantid", json=dict(body, samples=9), headers=h.headers)
        seen["400-format"] = c.post("/v1/instantid", json=dict(body, face_image="bm90IGFuIGltYWdl"), headers=h.headers)
        seen[401] = c.post("/v1/instantid", json=body)
        revoked, info = h.service.keys.create("gone")
        h.service.keys.revoke(info.id)
        seen[403] = c.post("/v1/instantid", json=body, headers={"x-api-key": revoked})
        seen[404] = c.post("/v1/instantid-nonexistent", json=body, headers=h.headers)
        poor = h.service.keys.create("poor", images_per_day=1)[0]
        assert c.post("/v1/instantid", json=body, headers={"x-api-key": poor}).status_code == 200
        seen[406] = c.post("/v1/instantid", json=body, headers={"x-api-key": poor})
        slow = h.service.keys.create("slow", rate_limit_per_minute=1)[0]
        assert c.post("/v1/instantid", json=body, headers={"x-api-key": slow}).status_code == 200
        seen[429] = c.post("/v1/instantid", json=body, headers={"x-api-key": slow})
        # 504: the only worker is held by another job past the sync request's start deadline
        h.engine.gate = threading.Event()
        q = c.post("/queue/instantid", json=body, headers=h.headers).json()
        while not h.engine.requests or h.service.get(q["request_id"]).status.value != "IN_PROGRESS":
            time.sleep(0.01)
        seen[504] = c.post("/v1/instantid", json=body, headers=h.headers)
        h.engine.gate.set()
    with Harness(_settings(tmp_path / "crash"), tiny.TinyEngine(crash=True)) as h:
        seen[500] = h.client.post("/v1/instantid", json=body, headers=h.headers)
    release = threading.Event()

    def slow_factory(_s):
        release.wait(10)
        return tiny.TinyEngine()

    from fastapi.testclient import TestClient

    from faceanchor.api.app import create_app

    app = create_app(_settings(tmp_path / "loading"), engine_factory=slow_factory)
    key, _ = app.state.service.keys.create()
    with TestClient(app) as c:
        seen[502] = c.post("/v1/instantid", json=body, headers={"x-api-key": key})
        release.set()
        wait_ready(c)  # stopping while the workers start races in Service (they are listed before started)
    for code, r in seen.items():
        status = 400 if code == "400-format" else code
        assert r.status_code == status, (code, r.status_code, r.text)
        assert set(r.json()) == {"error"} and r.json()["error"]["message"], r.text
    assert sorted(c for c in seen if isinstance(c, int)) == SEGMIND["error_codes"]
    assert seen[406].json()["error"]["type"] == "quota_exceeded" and "1 of 1 images per day" in seen[406].json()["error"]["message"]
    assert seen[502].headers["retry-after"] and seen[429].headers["retry-after"]


# ------------------------------------------------------------------------------------------ character API
# The unchanged bodies use the server's defaults (30 steps at the photo's size): an ID photo of
# four views at those settings takes minutes on 2 CPU cores even with tiny weights, so the
# replays run on the tiny stand-in engine: generate end to end; id-photo and edit accepted
# as they are (images fetched from the localized URLs and stored with the job). The operations
# themselves run with the real tiny engine in tests/api/test_characters.py and tests/client.


def test_character_api_generate_example_body_runs_unchanged(h, server):
    body = localize(CHARACTER["generate"], f"{server.url}/img")
    assert json.dumps(body).count(server.url) == json.dumps(CHARACTER["generate"]).count("https://")
    r = h.client.post("/v1/character/generate", json=body, headers=h.headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "COMPLETED" and len(out["images"]) == 1 and out["images"][0]["signed_url"]
    req = h.engine.requests[-1]
    assert req.prompt == CHARACTER["generate"]["prompt"] and req.face_image == server.image
    assert h.client.get(_path(out["images"][0]["url"]), headers=h.headers).status_code == 200


@pytest.mark.parametrize("op", ["id-photo", "edit"])
def test_character_api_example_bodies_are_accepted_unchanged(h, server, op):
    body = localize(CHARACTER[op], f"{server.url}/img")
    assert json.dumps(body).count(server.url) == json.dumps(CHARACTER[op]).count("https://")
    r = h.client.post(f"/queue/character/{op}", json=body, headers=h.headers)
    assert r.status_code == 200, r.text
    job = h.service.jobs.get(r.json()["request_id"])
    stored = job.request["request"]
    assert "$file" in stored["face"] and h.service.files.get(stored["face"]["$file"], "inputs") == server.image
    if op == "edit":
        assert h.service.files.get(stored["target"]["$file"], "inputs") == server.image
        assert stored["fields"]["prompt"] == CHARACTER["edit"]["prompt"] and stored["mode"] == "background"
