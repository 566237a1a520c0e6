"""Unknown embedding spaces and styles are 4xx JSON at submit (never a 503, a server path or a failed job)."""

from api_helpers import b64, png_bytes

from faceanchor.face.packs import PACK_NAMES


def _err(r, status=422):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]


def test_unknown_space_names_the_valid_ones(harness):
    r = harness.client.post("/v1/characters", headers=harness.headers,
                            json={"name": "x", "images": {"face": b64(png_bytes())}, "spaces": ["nonexistent"]})
    e = _err(r)
    assert e["type"] == "validation_error" and "'nonexistent'" in e["message"]
    for name in PACK_NAMES:
        assert name in e["message"]
    assert "/" not in e["message"]  # no server path


def test_unknown_style_is_refused_at_submit_on_every_route(harness):
    c, h = harness.client, harness.headers
    face = b64(png_bytes())
    before = harness.engine.calls
    for path in ("/queue/instantid", "/queue/faceid", "/queue/character/generate"):
        body = {"face_image": face, "style": "Nonexistent Style"} if "character" not in path else {
            "images": {"face": face}, "style": "Nonexistent Style"}
        e = _err(c.post(path, json=body, headers=h))
        assert e["type"] == "validation_error" and "Nonexistent Style" in e["message"] and "Headshot" in e["message"], e
    assert "Watercolour" in _err(c.post("/queue/instantid", json={"face_image": face, "style": "Watercolour"}, headers=h))["message"]
    assert harness.service.jobs.counts()["IN_QUEUE"] == 0 and harness.engine.calls == before  # nothing was queued
    # a known style (any case/spacing) is accepted
    r = c.post("/queue/instantid", json={"face_image": face, "style": "film noir", "num_inference_steps": 1}, headers=h)
    assert r.status_code == 200, r.text
