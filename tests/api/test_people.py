"""Several people in one picture over ``POST /v1/character/generate`` (``people``): characters and
faces side by side, each with its own place and strengths, one score per person, and another
tenant's character as unknown as a made-up id. Tiny engine, dlib pack, 128x64, 1 step."""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from faceanchor.api.app import create_app
from faceanchor.config import Settings
from faceanchor.engine import Engine
from faceanchor.imageio import read_metadata

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
OPTS = dict(prompt="two friends at a cafe", width=128, height=64, num_inference_steps=1, seed=5)
LEFT, RIGHT = [4, 4, 60, 60], [68, 4, 124, 60]


def _b64(name, width=240):
    im = Image.open(FACES / name).convert("RGB")
    im = im.resize((width, round(im.height * width / im.width)))
    buf = io.BytesIO()
    im.save(buf, "JPEG")
    return base64.b64encode(buf.getvalue()).decode()


OBAMA, BIDEN = _b64("obama.jpg"), _b64("biden.jpg")


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    # watermark off: these tests compare pixels across jobs, and each job's mark carries its own id (tests/trust tests the mark)
    settings = Settings(home=tmp_path_factory.mktemp("home"), device="cpu", rate_limit_per_minute=0, job_lease_seconds=30, watermark=False)
    app = create_app(settings, Engine(settings, weights="tiny", face_pack="dlib"), load_in_background=False, serve_web=False)
    keys = app.state.service.keys
    with TestClient(app) as client:
        client.a = {"x-api-key": keys.create("a", tenant="acme")[0]}
        client.b = {"x-api-key": keys.create("b", tenant="other")[0]}
        ids = []
        for name, face in (("Barack", OBAMA), ("Joe", BIDEN)):
            r = client.post("/v1/characters", json={"name": name, "images": {"face": face}}, headers=client.a)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        client.ids = ids
        yield client
    torch.set_num_threads(n)


def _png(h, body, headers):
    r = h.post("/v1/character/generate", json=body, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()
    img = h.get(out["images"][0]["url"], headers=headers)
    assert img.status_code == 200
    return out, np.asarray(Image.open(io.BytesIO(img.content)).convert("RGB")), read_metadata(img.content)


def test_two_characters_side_by_side(h):
    a, b = h.ids
    out, pixels, meta = _png(h, dict(OPTS, people=[{"character_id": a}, {"character_id": b}], layout="left-right"), h.a)
    assert pixels.shape == (64, 128, 3)
    scores = out["images"][0]["identity_scores"]
    assert len(scores) == 2 and len(meta["identity_scores_per_person"][0]) == 2
    assert out["images"][0]["identity_score"] == (None if None in scores else min(scores))
    # left-right: person 1 in the left half, person 2 in the right half, same size, no overlap
    p1, p2 = out["params"]["face_box"], out["params"]["more_identities"][0]["box"]
    assert p1[2] <= 64 <= p2[0] and np.isclose(p1[2] - p1[0], p2[2] - p2[0])
    assert out["params"]["people"] == [{"character_id": a}, {"character_id": b}] and out["params"]["character_id"] is None
    for cid in (a, b):  # the picture is in both characters' histories
        entries = h.get(f"/v1/characters/{cid}/history", headers=h.a).json()["entries"]
        assert entries[0]["kind"] == "generate" and entries[0]["outputs"][0]["seed"] == out["seed"]
        stored = h.get(entries[0]["outputs"][0]["url"], headers=h.a)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored.content)).convert("RGB")), pixels)
        assert read_metadata(stored.content)["character_ids"] == [a, b]


def test_each_person_has_its_own_strengths(h):
    """Person 2 at strengths 0 gives person 1's picture bit for bit; active, it changes the picture."""
    a, b = h.ids
    _, alone, _ = _png(h, dict(OPTS, people=[{"character_id": a, "box": LEFT}]), h.a)
    _, silent, _ = _png(h, dict(OPTS, people=[{"character_id": a, "box": LEFT},
                                              {"character_id": b, "box": RIGHT, "identity_strength": 0, "adapter_strength": 0}]), h.a)
    assert np.array_equal(alone, silent)
    out, two, _ = _png(h, dict(OPTS, people=[{"character_id": a, "box": LEFT}, {"face": BIDEN, "box": RIGHT, "adapter_strength": 1.2}]), h.a)
    assert np.abs(two.astype(int) - alone.astype(int)).max() > 0
    assert out["params"]["more_identities"][0]["adapter_strength"] == 1.2 and out["params"]["face_box"] == LEFT


def test_people_on_a_pose_photo(h):
    """A pose photo with two faces: person 1 takes the left face, person 2 the right one."""
    a, b = h.ids
    ims = [Image.open(io.BytesIO(base64.b64decode(x))) for x in (OBAMA, BIDEN)]
    hh = min(i.height for i in ims)
    ims = [i.resize((i.width * hh // i.height, hh)) for i in ims]
    group = Image.new("RGB", (sum(i.width for i in ims), hh))
    group.paste(ims[0], (0, 0))
    group.paste(ims[1], (ims[0].width, 0))
    buf = io.BytesIO()
    group.save(buf, "JPEG")
    pose = base64.b64encode(buf.getvalue()).decode()
    out, _, _ = _png(h, dict(OPTS, pose_image=pose, people=[{"character_id": a}, {"character_id": b}]), h.a)
    p1, p2 = out["params"]["face_box"], out["params"]["more_identities"][0]
    assert p1 is None and p2["box"] is None and len(out["images"][0]["identity_scores"]) == 2


def test_another_tenants_character_is_unknown(h):
    a, b = h.ids
    body = dict(OPTS, people=[{"face": OBAMA}, {"character_id": b}], layout="left-right")
    r = h.post("/v1/character/generate", json=body, headers=h.b)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    missing = h.post("/v1/character/generate", json=dict(body, people=[{"face": OBAMA}, {"character_id": "0" * 32}]), headers=h.b)
    assert missing.status_code == 404 and missing.json()["error"]["message"] == r.json()["error"]["message"].replace(b, "0" * 32)
    assert h.post("/queue/character/generate", json=body, headers=h.b).status_code == 404
    own = h.post("/v1/character/generate", json=dict(body, people=[{"face": OBAMA}, {"face": BIDEN}]), headers=h.b)
    assert own.status_code == 200, own.text


@pytest.mark.parametrize("change, needle", [
    ({"people": [{"character_id": "x", "face": "abc"}, {"face": "abc"}]}, "people[0]: give a character_id or a face"),
    ({"people": [{"face": OBAMA}, {"face": BIDEN}], "character_id": "x"}, "not on the request"),
    ({"people": [{"face": OBAMA}, {"face": BIDEN}]}, "people[0]: give a box, a layout or a pose_image"),
    ({"people": [{"face": OBAMA}, {"face": BIDEN}], "layout": "left-right", "width": None}, "give width and height"),
    ({"layout": "left-right", "images": {"face": OBAMA}}, "layout: it places people"),
    ({"people": [{"face": OBAMA, "box": [10, 0, 5, 8]}, {"face": BIDEN, "box": RIGHT}]}, "x1 < x2"),
    ({"people": [{"face": OBAMA}] * 5, "layout": "left-right"}, "people"),
])
def test_bad_people_are_clear_4xx(h, change, needle):
    body = {k: v for k, v in dict(OPTS, **change).items() if v is not None}
    r = h.post("/v1/character/generate", json=body, headers=h.a)
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_overlapping_boxes_are_refused(h):
    r = h.post("/v1/character/generate", json=dict(OPTS, people=[{"face": OBAMA, "box": LEFT}, {"face": BIDEN, "box": [40, 0, 100, 60]}]),
               headers=h.a)
    assert 400 <= r.status_code < 500 and "overlap" in r.text
