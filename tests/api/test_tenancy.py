"""Tenancy: every job, file, character and webhook belongs to the key (or tenant) that made it.

Key B gets 404 on each of key A's resources (as for ids that do not exist); a second key of A's
tenant shares them; an admin key (made with ``admin=True``, as ``faceanchor keys create --admin``)
sees all. Signed links open files without a key until they expire. With the tiny engine.
"""

import json
import time
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from api_helpers import Harness, b64, png_bytes, tiny
from local_server import LocalServer

from faceanchor.config import Settings


@pytest.fixture
def t(tmp_path):
    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, job_lease_seconds=5, sse_keepalive_seconds=0.2,
                        webhook_backoff_seconds=0.01, allow_private_urls=True)
    with Harness(settings, tiny.TinyEngine()) as h:
        keys = h.service.keys
        h.a = {"x-api-key": keys.create("a", tenant="acme")[0]}
        h.a2 = {"x-api-key": keys.create("a2", tenant="acme")[0]}  # same tenant as a
        h.b = {"x-api-key": keys.create("b")[0]}
        h.admin = {"x-api-key": keys.create("root", admin=True)[0]}
        yield h


def _404(r):
    assert r.status_code == 404, (r.status_code, r.text)
    assert r.json()["error"]["type"] == "not_found"


def _job(h, headers, **extra):
    body = dict({"face_image": b64(png_bytes()), "num_inference_steps": 1, "seed": 5}, **extra)
    r = h.client.post("/queue/instantid", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _wait(h, sub, headers):
    deadline = time.time() + 10
    while time.time() < deadline:
        s = h.client.get(sub["status_url"], headers=headers).json()
        if s["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
            return s
        time.sleep(0.02)
    raise AssertionError("job never finished")


def _path(url):
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def test_jobs_status_stream_result_cancel_are_404_for_another_key(t):
    sub = _job(t, t.a)
    assert _wait(t, sub, t.a)["status"] == "COMPLETED"
    c = t.client
    for url in (sub["status_url"], sub["status_url"] + "/stream", sub["response_url"]):
        _404(c.get(url, headers=t.b))
        assert c.get(url, headers=t.a).status_code == 200
        assert c.get(url, headers=t.a2).status_code == 200  # same tenant
        assert c.get(url, headers=t.admin).status_code == 200  # admin sees all
    _404(c.put(sub["cancel_url"], headers=t.b))
    assert c.put(sub["cancel_url"], headers=t.admin).json()["status"] == "ALREADY_COMPLETED"
    # a queued job B cannot cancel stays queued and runs
    sub2 = _job(t, t.a, seed=6)
    _404(c.put(sub2["cancel_url"], headers=t.b))
    assert _wait(t, sub2, t.a)["status"] == "COMPLETED"
    # the same answer as for an id that does not exist
    missing = c.get(sub["status_url"].replace(sub["request_id"], "0" * 32), headers=t.b)
    assert missing.status_code == 404


def test_files_belong_to_their_owner_and_signed_links_open_them(t):
    c = t.client
    sub = _job(t, t.a)
    _wait(t, sub, t.a)
    img = c.get(sub["response_url"], headers=t.a).json()["images"][0]
    url = _path(img["url"])
    assert c.get(url, headers=t.a).status_code == 200
    assert c.get(url, headers=t.a2).status_code == 200
    assert c.get(url, headers=t.admin).status_code == 200
    _404(c.get(url, headers=t.b))
    assert c.get(url).status_code == 401  # no key, no signature
    # the signed link works without a key ...
    signed = _path(img["signed_url"])
    r = c.get(signed)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:4] == b"\x89PNG"
    # ... but not tampered with, moved to another file, or past its expiry
    q = parse_qs(urlsplit(img["signed_url"]).query)
    exp, sig = q["expires"][0], q["sig"][0]
    bad = "0" * 64 if sig != "0" * 64 else "1" * 64
    assert c.get(f"{url}?expires={exp}&sig={bad}").status_code == 403
    assert c.get(f"{url}?expires={int(exp) + 1}&sig={sig}").status_code == 403
    other = _job(t, t.b, seed=99)
    _wait(t, other, t.b)
    other_url = _path(c.get(other["response_url"], headers=t.b).json()["images"][0]["url"])
    assert c.get(f"{other_url}?expires={exp}&sig={sig}").status_code == 403
    stale_exp = int(time.time()) - 10
    stale = t.service.signer.signature(url, stale_exp)
    r = c.get(f"{url}?expires={stale_exp}&sig={stale}")
    assert r.status_code == 403 and "expired" in r.json()["error"]["message"]
    # the signed link expires after signed_url_seconds
    assert int(exp) - time.time() == pytest.approx(t.service.settings.signed_url_seconds, abs=5)


def _make_character(t, headers):
    """A character owned by ``headers``' key, stored directly (no face analysis: the tiny engine has none)."""
    key = t.service.keys.verify(headers["x-api-key"])[1]
    chars = t.app.state.characters
    photo = chars.store.put_file(png_bytes())
    rs = np.random.RandomState(0)
    ident = {"space": "dlib", "source": "photo:0", "photo_file": photo, "embedding": rs.randn(128).astype(np.float32),
             "kps": [[20, 20], [30, 20], [25, 26], [21, 32], [29, 32]], "bbox": [10, 10, 40, 42], "image_size": (48, 48),
             "det_score": 0.9, "quality": None}
    return chars.store.create("Ada", [photo], [ident], owner=key.owner)


def test_characters_list_get_history_files_delete_and_operations_are_404_for_another_key(t):
    c = t.client
    ch = _make_character(t, t.a)
    base = f"/v1/characters/{ch.id}"
    ids = lambda h: [x["id"] for x in c.get("/v1/characters", headers=h).json()["characters"]]  # noqa: E731
    assert ch.id in ids(t.a) and ch.id in ids(t.a2) and ch.id in ids(t.admin)
    assert ch.id not in ids(t.b)
    photo = f"{base}/files/{ch.photos[0]}"
    for url in (base, f"{base}/history", photo):
        _404(c.get(url, headers=t.b))
        assert c.get(url, headers=t.a).status_code == 200
        assert c.get(url, headers=t.admin).status_code == 200
    gen = {"character_id": ch.id, "prompt": "x", "num_inference_steps": 1, "seed": 1}
    for path in ("/v1/character/generate", "/v1/character/id-photo", "/queue/character/generate", "/queue/character/id-photo"):
        _404(c.post(path, json=gen, headers=t.b))
    for path in ("/v1/character/edit", "/queue/character/edit"):
        _404(c.post(path, json=dict(gen, images={"target": b64(png_bytes())}), headers=t.b))
    assert t.service.jobs.counts()["IN_QUEUE"] == 0 and t.engine.calls == 0  # nothing of B's ran
    # A generates from its character; B cannot see the job; admin can generate from it too
    r = c.post("/v1/character/generate", json=gen, headers=t.a)
    assert r.status_code == 200, r.text
    out = r.json()
    _404(c.get(f"/queue/character/generate/requests/{out['request_id']}/status", headers=t.b))
    _404(c.get(f"/queue/character/generate/requests/{out['request_id']}", headers=t.b))
    _404(c.put(f"/queue/character/generate/requests/{out['request_id']}/cancel", headers=t.b))
    _404(c.get(_path(out["images"][0]["url"]), headers=t.b))
    assert c.get(f"/queue/character/generate/requests/{out['request_id']}", headers=t.a2).status_code == 200
    assert c.post("/v1/character/generate", json=dict(gen, seed=2), headers=t.admin).status_code == 200
    hist = c.get(f"{base}/history", headers=t.a).json()["entries"]
    assert len(hist) == 2
    _404(c.get(f"{base}/files/{hist[0]['outputs'][0]['file_id']}", headers=t.b))
    # B cannot delete it; A can, and its files go with it
    _404(c.delete(base, headers=t.b))
    assert c.get(base, headers=t.a).status_code == 200
    path = t.app.state.characters.store.file_path(ch.photos[0])
    assert path is not None and path.is_file()
    job_output = _path(out["images"][0]["url"])
    assert c.get(job_output, headers=t.a).status_code == 200
    assert c.delete(base, headers=t.a).json()["files_deleted"] >= 5  # photo, 2 history outputs, 2 job outputs
    assert not path.exists()
    _404(c.get(base, headers=t.a))
    _404(c.get(job_output, headers=t.a))  # the queue's copy of the output went with the character


def test_admin_deletes_any_character(t):
    ch = _make_character(t, t.b)
    assert t.client.delete(f"/v1/characters/{ch.id}", headers=t.admin).status_code == 200
    _404(t.client.get(f"/v1/characters/{ch.id}", headers=t.b))


def test_webhooks_carry_signed_links_and_their_job_is_the_owners(t):
    with LocalServer() as server:
        sub = t.client.post(f"/queue/instantid?webhook={server.url}/hook", headers=t.a,
                            json={"face_image": b64(png_bytes()), "num_inference_steps": 1}).json()
        _wait(t, sub, t.a)
        deadline = time.time() + 10
        while not server.posts and time.time() < deadline:
            time.sleep(0.02)
        assert server.posts, "the webhook was never sent"
        payload = json.loads(server.posts[0][2])
    assert payload["request_id"] == sub["request_id"] and payload["status"] == "OK"
    img = payload["payload"]["images"][0]
    # the receiver has no key: the signed link opens the image, the plain one does not
    assert t.client.get(_path(img["signed_url"])).status_code == 200
    assert t.client.get(_path(img["url"])).status_code == 401
    _404(t.client.get(_path(img["url"]), headers=t.b))
    _404(t.client.get(sub["status_url"], headers=t.b))


def test_key_management_is_for_admin_keys(t):
    c = t.client
    for method, path in (("get", "/v1/keys"), ("post", "/v1/keys"), ("delete", "/v1/keys/000000000000"),
                         ("get", "/v1/keys/000000000000/usage")):
        r = getattr(c, method)(path, headers=t.a, **({"json": {"name": "x"}} if method == "post" else {}))
        assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden", (path, r.text)
    listed = {k["name"]: k for k in c.get("/v1/keys", headers=t.admin).json()["keys"]}
    assert listed["root"]["admin"] is True and listed["a"]["tenant"] == "acme" and listed["b"]["admin"] is False
    made = c.post("/v1/keys", json={"name": "new", "tenant": "acme", "images_per_day": 3}, headers=t.admin)
    assert made.status_code == 201 and made.json()["admin"] is False  # the API cannot make admin keys
    new = {"x-api-key": made.json()["key"]}
    assert c.get("/v1/usage", headers=new).json()["day"]["limit"] == 3
    assert c.post("/v1/keys", json={"name": "x", "admin": True}, headers=t.admin).status_code == 422
    assert c.delete(f"/v1/keys/{made.json()['id']}", headers=t.admin).json()["revoked"] is True
    assert c.get("/v1/usage", headers=new).status_code == 403
    assert c.delete("/v1/keys/000000000000", headers=t.admin).status_code == 404


def test_stored_files_are_private_to_the_server_user(t):
    sub = _job(t, t.a)
    _wait(t, sub, t.a)
    root = t.service.files.root
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.parent.parent.name for p in files} >= {"inputs", "outputs"}
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o600, p
    secret = t.service.settings.data_dir / "url_signing_secret"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_retention_deletes_expired_inputs_and_outputs(tmp_path):
    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, retention_days=2)
    with Harness(settings, tiny.TinyEngine()) as h:
        sub = h.client.post("/queue/instantid", json={"face_image": b64(png_bytes()), "num_inference_steps": 1},
                            headers=h.headers).json()
        h.wait(sub["status_url"])
        img = h.client.get(sub["response_url"], headers=h.headers).json()["images"][0]
        url = _path(img["url"])
        stored = [p for p in h.service.files.root.rglob("*") if p.is_file()]
        assert len(stored) == 2  # one input, one output
        assert h.service.cleanup_expired(now=time.time() + 1.9 * 86400) == []  # not yet
        assert h.client.get(url, headers=h.headers).status_code == 200
        gone = h.service.cleanup_expired(now=time.time() + 2.1 * 86400)
        assert sorted(gone) == sorted(p.name for p in stored)
        assert not any(p.exists() for p in stored)
        assert h.client.get(url, headers=h.headers).status_code == 404


def test_the_studio_job_list_is_the_owners(t):
    """GET /v1/jobs (the web studio's history) lists the key's and its tenant's jobs only."""
    sub = _job(t, t.a)
    _wait(t, sub, t.a)
    ids = lambda headers: [j["request_id"] for j in t.client.get("/v1/jobs", headers=headers).json()["jobs"]]  # noqa: E731
    assert sub["request_id"] in ids(t.a) and sub["request_id"] in ids(t.a2)
    assert sub["request_id"] not in ids(t.b)
