"""faceanchor.client against a live server on loopback (uvicorn, the tiny engine) and, for
retries, against a scripted misbehaving HTTP server (real sockets both)."""

import asyncio
import base64
import email.utils
import io
import subprocess
import sys
import threading
import time

import pytest
from client_helpers import face_jpeg, noise_png
from PIL import Image

from faceanchor import client as fc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
QUEUED = {"request_id": "r1", "status": "IN_QUEUE", "status_url": "u/status", "response_url": "u", "cancel_url": "u/cancel",
          "queue_position": 0}
FAST = fc.RetryPolicy(backoff=0.01, max_backoff=0.05)


@pytest.fixture
def c(live):
    with fc.Client(live.url, live.key, poll_interval=0.05) as client:
        yield client


def _decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# =========================================================================== live server


def test_importing_the_client_loads_nothing_of_the_server():
    code = ("import sys, faceanchor.client;"
            "print(','.join(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'fastapi', 'sqlalchemy', 'numpy')"
            " or m.startswith(('faceanchor.api', 'faceanchor.service', 'faceanchor.engine', 'faceanchor.store'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_health_and_methods(c):
    h = c.health()
    assert h.status == "ready" and h.workers >= 1
    m = c.methods()
    assert "instantid" in m.apps and any(x.name == "instantid" and x.app == "instantid" for x in m.methods)


def test_sync_generate_returns_image_bytes_seeds_scores(c, live, tmp_path):
    face = tmp_path / "face.png"
    face.write_bytes(noise_png())
    out = c.generate(prompt="a portrait", face_image=face, seed=11, samples=2, num_inference_steps=2, width=64, height=128)
    assert isinstance(out, fc.GenerateResult)
    assert len(out.images) == 2 and out.image.startswith(PNG_MAGIC) and out.content_type == "image/png"
    assert _decode(out.image).size == (64, 128)
    assert out.seed == 11 and out.seeds == [11, 12]
    # the tiny engine's score is 0.5 + seed % 7 / 20
    assert out.identity_scores == [round(0.5 + 11 % 7 / 20, 4), round(0.5 + 12 % 7 / 20, 4)]
    assert "denoise" in out.timings and out.request_id
    assert live.service.get(out.request_id).idempotency_key.startswith("fa-")  # every sync call is keyed


@pytest.mark.parametrize("kind", ["bytes", "pil", "data-uri", "base64"])
def test_image_inputs_of_every_kind_reach_the_server(c, kind):
    png = noise_png()
    value = {"bytes": png, "pil": _decode(png), "data-uri": "data:image/png;base64," + base64.b64encode(png).decode(),
             "base64": base64.b64encode(png).decode()}[kind]
    out = c.generate(prompt="p", face_image=value, seed=1, num_inference_steps=1)
    assert out.seed == 1 and out.image.startswith(PNG_MAGIC)


def test_image_ref_conversions(tmp_path):
    png = noise_png()
    p = tmp_path / "f.png"
    p.write_bytes(png)
    assert base64.b64decode(fc.image_ref(p)) == png
    assert base64.b64decode(fc.image_ref(str(p))) == png
    assert base64.b64decode(fc.image_ref(png)) == png
    assert base64.b64decode(fc.image_ref(io.BytesIO(png))) == png
    assert _decode(base64.b64decode(fc.image_ref(_decode(png)))).size == (48, 48)
    for passthrough in ("https://example.com/f.jpg", "http://x/y.png", "data:image/png;base64,AAAA"):
        assert fc.image_ref(passthrough) == passthrough
    with pytest.raises(FileNotFoundError):
        fc.image_ref(str(tmp_path / "missing.jpg"))
    with pytest.raises(TypeError):
        fc.image_ref(12)


def test_submit_status_result_and_files(c, live):
    h = c.submit("instantid", {"prompt": "p", "face_image": noise_png(), "seed": 5, "num_inference_steps": 2})
    assert h.app == "instantid" and h.status in ("IN_QUEUE", "IN_PROGRESS") and h.request_id
    deadline = time.time() + 20
    while not (s := c.status("instantid", h.request_id, with_logs=True)).finished:
        assert time.time() < deadline
        time.sleep(0.02)
    assert s.status == "COMPLETED" and s.request_id == h.request_id
    r = c.result("instantid", h.request_id)
    assert r.status == "COMPLETED" and r.seed == 5 and r.seeds == [5] and len(r.images) == 1
    img = r.images[0]
    assert img.content_type == "image/png" and img.url.startswith(live.url)
    by_url, by_id, by_image = c.file(img.url), c.file(img.file_id), c.file(img)
    assert by_url == by_id == by_image and by_url.startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="not on this server"):
        c.file("https://elsewhere.example/files/" + img.file_id)  # the key is never sent elsewhere


def test_result_of_a_running_job_is_not_finished(c, live):
    live.engine.step_delay = 0.05
    try:
        h = c.submit("instantid", {"prompt": "p", "face_image": noise_png(), "num_inference_steps": 20})
        with pytest.raises(fc.NotFinishedError) as e:
            c.result("instantid", h.request_id)
        assert e.value.status.status in ("IN_QUEUE", "IN_PROGRESS") and e.value.status.request_id == h.request_id
        assert c.cancel("instantid", h.request_id) == "CANCELLATION_REQUESTED"
    finally:
        live.engine.step_delay = 0.02


def test_the_same_idempotency_key_gives_the_same_job(c):
    args = {"prompt": "p", "face_image": noise_png(), "seed": 2, "num_inference_steps": 1}
    a = c.submit("instantid", args, idempotency_key="same-key-1")
    b = c.submit("instantid", args, idempotency_key="same-key-1")
    other = c.submit("instantid", args)
    assert a.request_id == b.request_id and other.request_id != a.request_id


def test_subscribe_reports_queue_updates_in_order(c, live):
    live.engine.step_delay = 0.1  # the worker records progress every 0.25 s (a quarter of the 1 s lease)
    try:
        # a job ahead keeps the one worker busy, so the subscribed job is seen IN_QUEUE first
        ahead = c.submit("instantid", {"prompt": "p", "face_image": noise_png(), "num_inference_steps": 8})
        updates, enqueued = [], []
        r = c.subscribe("instantid", {"prompt": "p", "face_image": noise_png(), "seed": 9, "num_inference_steps": 10},
                        on_queue_update=updates.append, with_logs=True, on_enqueue=enqueued.append)
    finally:
        live.engine.step_delay = 0.02
    assert r.status == "COMPLETED" and r.seed == 9 and enqueued == [r.request_id]
    names = [u.status for u in updates]
    assert names[0] == "IN_QUEUE" and updates[0].queue_position is not None
    assert names[-1] == "COMPLETED" and "IN_PROGRESS" in names
    assert names == sorted(names, key=["IN_QUEUE", "IN_PROGRESS", "COMPLETED"].index)  # never back
    steps = [u.progress.step for u in updates if u.status == "IN_PROGRESS" and u.progress and u.progress.stage == "denoise"]
    assert len(steps) >= 2 and steps == sorted(steps) and max(steps) <= 10
    assert all(u.request_id == r.request_id for u in updates)
    assert any(line.message.startswith("denoise") for u in updates for line in u.logs)  # with_logs=True
    assert c.status("instantid", ahead.request_id).status in ("IN_PROGRESS", "COMPLETED")


def test_stream_ends_with_the_final_status(c):
    h = c.submit("instantid", {"prompt": "p", "face_image": noise_png(), "num_inference_steps": 5})
    seen = list(c.stream("instantid", h.request_id))
    assert seen and seen[-1].status == "COMPLETED" and all(not s.finished for s in seen[:-1])


def test_cancel_a_running_job(c, live):
    live.engine.step_delay = 0.05
    try:
        h = c.submit("instantid", {"prompt": "p", "face_image": noise_png(), "num_inference_steps": 60})
        for s in c.stream("instantid", h.request_id):
            if s.status == "IN_PROGRESS":
                break
        assert c.cancel("instantid", h.request_id) == "CANCELLATION_REQUESTED"
        final = [s for s in c.stream("instantid", h.request_id)][-1]
    finally:
        live.engine.step_delay = 0.02
    assert final.status == "CANCELLED" and final.error.type == "cancelled"
    with pytest.raises(fc.ConflictError) as e:
        c.result("instantid", h.request_id)
    assert e.value.type == "cancelled" and e.value.status_code == 409
    assert c.cancel("instantid", h.request_id) == "ALREADY_COMPLETED"


def test_typed_errors_carry_the_servers_json(c, live):
    with fc.Client(live.url, "not-a-key") as bad:
        with pytest.raises(fc.AuthError) as e:
            bad.submit("instantid", {"prompt": "p", "face_image": noise_png()})
    assert e.value.status_code == 401 and e.value.type == "unauthorized" and "not valid" in e.value.message
    with pytest.raises(fc.ValidationError) as e:
        c.generate(prompt="p", face_image=noise_png(), num_inference_steps=0)
    assert e.value.status_code == 400 and e.value.type == "validation_error"  # /v1/instantid answers Segmind's 400
    assert e.value.message.startswith("num_inference_steps:") and e.value.body["error"]["message"] == e.value.message
    with pytest.raises(fc.ValidationError) as e:
        c.generate(prompt="p", face_image=noise_png(), bogus_field=1)
    assert "bogus_field" in e.value.message
    with pytest.raises(fc.NotFoundError) as e:
        c.status("instantid", "0" * 32)
    assert e.value.type == "not_found"
    with pytest.raises(fc.NotFoundError):
        c.submit("no-such-app", {"prompt": "p"})
    grey = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 120, 120)).save(grey, "PNG")
    with pytest.raises(fc.ValidationError) as e:  # the job fails in the engine: the result call raises its typed error
        c.generate(prompt="p", face_image=grey.getvalue(), num_inference_steps=1)
    assert e.value.type == "no_face" and e.value.status_code == 400  # Segmind-shaped /v1/instantid
    assert isinstance(e.value, fc.FaceAnchorClientError)


def test_revoked_key_is_an_auth_error(live):
    key, info = live.service.keys.create("to-revoke")
    live.service.keys.revoke(info.id)
    with fc.Client(live.url, key) as c:
        with pytest.raises(fc.AuthError) as e:
            c.status("instantid", "x")
    assert e.value.status_code == 403 and e.value.type == "forbidden"


def test_characters_round_trip(c, tmp_path):
    photo = tmp_path / "obama.jpg"
    photo.write_bytes(face_jpeg())
    ch = c.create_character("Barack", photo)
    assert isinstance(ch, fc.Character) and ch.name == "Barack" and ch.spaces == ["dlib"] and len(ch.photos) == 1
    two = c.create_character("Barack twice", [face_jpeg(), face_jpeg("obama2.jpg")])
    assert len(two.photos) == 2
    ids = [x.id for x in c.list_characters()]
    assert ch.id in ids and two.id in ids
    assert c.get_character(ch.id).name == "Barack"
    assert _decode(c.character_file(ch.id, ch.photos[0])).format == "PNG"

    r = c.character_generate("a portrait in a garden", ch.id, seed=4, num_inference_steps=2)
    assert r.status == "COMPLETED" and r.seed == 4 and len(r.images) == 1
    assert c.file(r.images[0]).startswith(PNG_MAGIC)
    hist = c.character_history(ch.id)
    assert hist.character_id == ch.id and [e.kind for e in hist.entries] == ["generate"]
    assert hist.entries[0].outputs[0]["seed"] == 4
    assert c.get_character(ch.id).generations == 1

    q = c.submit_character("generate", ch.id, prompt="queued", seed=6, num_inference_steps=1)
    assert q.app == "character/generate"
    deadline = time.time() + 20
    while not c.status(q.app, q.request_id).finished:
        assert time.time() < deadline
        time.sleep(0.02)
    assert c.result(q.app, q.request_id).seed == 6

    with pytest.raises(fc.ValidationError) as e:
        grey = io.BytesIO()
        Image.new("RGB", (100, 100), (120, 120, 120)).save(grey, "PNG")
        c.create_character("Nobody", grey.getvalue())
    assert e.value.type == "no_face"

    gone = c.delete_character(ch.id)
    assert gone.deleted and gone.id == ch.id and gone.files_deleted >= 1
    with pytest.raises(fc.NotFoundError):
        c.get_character(ch.id)


def test_subscribe_on_a_character_app_polls(c):
    ch = c.create_character("Polled", face_jpeg())
    updates = []
    r = c.subscribe("character/generate", {"character_id": ch.id, "prompt": "p", "seed": 8, "num_inference_steps": 3},
                    on_queue_update=updates.append)
    assert r.seed == 8 and updates[-1].status == "COMPLETED"
    assert c.character_history(ch.id).entries[0].kind == "generate"


@pytest.fixture(scope="module")
def real_engine_server(tmp_path_factory):
    """id-photo and edit need the full engine (the tiny engine above only generates): the real
    engine with its tiny seeded weights and the dlib face pack, 64x64, one step."""
    import torch

    from client_helpers import LiveServer

    from faceanchor.config import Settings
    from faceanchor.engine import Engine

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = Settings(home=tmp_path_factory.mktemp("home-real"), device="cpu", rate_limit_per_minute=0, job_lease_seconds=30)
    with LiveServer(settings, Engine(settings, weights="tiny", face_pack="dlib")) as server:
        yield server
    torch.set_num_threads(n)


def test_character_id_photo_and_edit_with_the_real_tiny_engine(real_engine_server):
    opts = dict(width=64, height=64, num_inference_steps=1, seed=3)
    with fc.Client(real_engine_server.url, real_engine_server.key) as c:
        ch = c.create_character("Barack", face_jpeg())
        sheet = c.id_photo(ch.id, **opts)
        assert len(sheet.images) == 5  # the sheet, then front, left, right, smiling
        assert all(c.file(im).startswith(PNG_MAGIC) for im in sheet.images)
        got = c.get_character(ch.id)
        assert got.sheet_file and len(got.views) == 4
        assert _decode(c.character_file(ch.id, got.sheet_file)).format == "PNG"
        edited = c.edit("on a beach", face_jpeg(width=160), ch.id, mode="background", **opts)
        assert len(edited.images) == 1 and edited.params["edit"]["mode"] == "background"
        assert [e.kind for e in c.character_history(ch.id).entries] == ["edit", "id-photo"]
        with pytest.raises(fc.ValidationError) as e:  # the server's own shape check: an edit needs a target
            c.submit_character("edit", ch.id, prompt="p")
        assert "images.target" in e.value.message


def test_async_client_core_calls(live):
    async def main():
        async with fc.AsyncClient(live.url, live.key, poll_interval=0.05) as ac:
            assert (await ac.health()).status == "ready"
            out = await ac.generate(prompt="p", face_image=noise_png(), seed=3, num_inference_steps=1)
            assert out.seed == 3 and out.image.startswith(PNG_MAGIC)
            h = await ac.submit("instantid", {"prompt": "p", "face_image": noise_png(), "seed": 4, "num_inference_steps": 3})
            seen = [s async for s in ac.stream("instantid", h.request_id)]
            assert seen[-1].status == "COMPLETED"
            r = await ac.result("instantid", h.request_id)
            assert r.seed == 4 and (await ac.file(r.images[0])).startswith(PNG_MAGIC)
            updates = []

            async def on_update(s):  # a coroutine callback is awaited
                updates.append(s.status)

            r2 = await ac.subscribe("instantid", {"prompt": "p", "face_image": noise_png(), "seed": 7, "num_inference_steps": 3},
                                    on_queue_update=on_update)
            assert r2.seed == 7 and updates[-1] == "COMPLETED"
            ch = await ac.create_character("Async", face_jpeg())
            assert ch.id in [x.id for x in await ac.list_characters()]
            g = await ac.character_generate("p", ch.id, seed=2, num_inference_steps=1)
            assert g.seed == 2 and (await ac.character_history(ch.id)).entries[0].kind == "generate"
            assert (await ac.delete_character(ch.id)).deleted
            with pytest.raises(fc.ValidationError) as e:
                await ac.generate(prompt="p", face_image=noise_png(), num_inference_steps=0)
            assert e.value.type == "validation_error"
        async with fc.AsyncClient(live.url, "wrong") as bad:
            with pytest.raises(fc.AuthError):
                await bad.status("instantid", "x")

    asyncio.run(main())


# =========================================================================== retries (scripted server)


def test_503_with_retry_after_waits_then_succeeds(scripted):
    s = scripted((503, {"Retry-After": "1"}, {"error": {"type": "unavailable", "message": "loading"}}),
                 (200, {}, {"methods": [], "apps": {"instantid": ["instantid"]}}))
    with fc.Client(s.url, "k") as c:
        t0 = time.monotonic()
        m = c.methods()
        elapsed = time.monotonic() - t0
    assert m.apps == {"instantid": ["instantid"]}
    assert len(s.requests) == 2 and elapsed >= 1.0 and s.times[1] - s.times[0] >= 1.0


def test_429_is_retried_honouring_an_http_date(scripted):
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # second resolution: 1-2 s from now
    s = scripted((429, {"Retry-After": when}, {"error": {"type": "rate_limited", "message": "slow down"}}),
                 (200, {}, {"request_id": "x", "status": "COMPLETED", "response_url": "u"}))
    with fc.Client(s.url, "k") as c:
        st = c.status("instantid", "x")
    assert st.status == "COMPLETED" and len(s.requests) == 2
    assert s.times[1] - s.times[0] >= 0.9


@pytest.mark.parametrize("status,cls", [(500, fc.ServerError), (422, fc.ValidationError), (400, fc.ValidationError),
                                        (404, fc.NotFoundError), (401, fc.AuthError)])
def test_other_errors_are_not_retried(scripted, status, cls):
    s = scripted((status, {"Retry-After": "0"}, {"error": {"type": "boom", "message": "it broke"}}),
                 (200, {}, QUEUED))
    with fc.Client(s.url, "k", retry=FAST) as c:
        with pytest.raises(cls) as e:
            c.submit("instantid", {"prompt": "p"})
    assert len(s.requests) == 1
    assert (e.value.status_code, e.value.type, e.value.message) == (status, "boom", "it broke")


def test_a_retried_submit_carries_the_same_idempotency_key(scripted):
    s = scripted((503, {"Retry-After": "0"}, {"error": {"type": "unavailable", "message": "busy"}}),
                 (504, {}, {"error": {"type": "gateway_timeout", "message": "proxy"}}),
                 (200, {}, QUEUED), (200, {}, QUEUED))
    with fc.Client(s.url, "k", retry=FAST) as c:
        h = c.submit("instantid", {"prompt": "p", "face_image": b"\x89PNG..."})
        c.submit("instantid", {"prompt": "p"})
    assert h.request_id == "r1" and len(s.requests) == 4
    keys = [r["headers"].get("idempotency-key") for r in s.requests]
    assert keys[0] and keys[0] == keys[1] == keys[2]  # one logical submit, three tries
    assert keys[3] and keys[3] != keys[0]  # the next submit is another job
    assert all(r["headers"]["x-api-key"] == "k" for r in s.requests)
    assert s.requests[0]["body"] == s.requests[2]["body"]


def test_after_the_servers_own_deadline_504_the_retry_takes_a_fresh_key(scripted):
    ok = {"request_id": "r", "image": "", "images": [], "content_type": "image/png", "seed": 1, "seeds": [1],
          "identity_scores": [None], "timings": {}}
    s = scripted((504, {}, {"error": {"type": "deadline_exceeded", "message": "the job did not start before its start deadline"}}),
                 (200, {}, ok))
    with fc.Client(s.url, "k", retry=FAST) as c:
        out = c.generate(prompt="p", face_image=b"x")
    assert out.seed == 1 and len(s.requests) == 2
    k1, k2 = (r["headers"]["idempotency-key"] for r in s.requests)
    assert k1 and k2 and k1 != k2
    assert b'"base64": true' in s.requests[0]["body"] or b'"base64":true' in s.requests[0]["body"]


def test_retries_stop_at_max_attempts(scripted):
    s = scripted(*[(503, {}, {"error": {"type": "unavailable", "message": "queue full"}})] * 5)
    with fc.Client(s.url, "k", retry=fc.RetryPolicy(max_attempts=3, backoff=0.01)) as c:
        with pytest.raises(fc.UnavailableError) as e:
            c.submit("instantid", {"prompt": "p"})
    assert len(s.requests) == 3 and e.value.message == "queue full"


def test_a_retry_after_over_the_cap_is_not_waited_for(scripted):
    s = scripted((429, {"Retry-After": "3600"}, {"error": {"type": "rate_limited", "message": "later"}}))
    with fc.Client(s.url, "k", retry=fc.RetryPolicy(max_retry_after=10)) as c:
        t0 = time.monotonic()
        with pytest.raises(fc.RateLimitedError) as e:
            c.submit("instantid", {"prompt": "p"})
    assert time.monotonic() - t0 < 2 and e.value.retry_after == 3600 and len(s.requests) == 1


def test_backoff_grows_and_is_capped():
    p = fc.RetryPolicy(max_attempts=10, backoff=0.5, max_backoff=3.0, jitter=False)
    assert [p.delay(n, None) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert p.delay(10, None) is None and p.delay(2, 7.0) == 7.0
    assert fc.parse_retry_after("5") == 5.0 and fc.parse_retry_after("nonsense") is None
    assert fc.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


def test_connection_errors_retried_only_on_idempotent_calls(scripted):
    s = scripted(None, (200, {}, {"status": "ready", "workers": 1, "busy_workers": 0, "queue_depth": 0}))
    with fc.Client(s.url, "k", retry=FAST) as c:
        assert c.health().status == "ready"
    assert len(s.requests) == 2
    s2 = scripted(None, (201, {}, {}))
    with fc.Client(s2.url, "k", retry=FAST) as c:
        with pytest.raises(fc.FaceAnchorConnectionError) as e:
            c.create_character("x", b"photo")  # POST without an idempotency key: never repeated blindly
    assert len(s2.requests) == 1 and e.value.status_code is None


def test_nothing_listening_is_a_connection_error():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with fc.Client(f"http://127.0.0.1:{port}", "k", retry=FAST) as c:
        with pytest.raises(fc.FaceAnchorConnectionError):
            c.methods()


def test_timeouts_are_configurable(scripted):
    gate = threading.Event()
    s = scripted()
    # a handler that never answers in time: script a slow answer by holding the first request
    orig = s.httpd.RequestHandlerClass._any

    def slow(handler):
        gate.wait(3)
        return orig(handler)

    s.httpd.RequestHandlerClass.do_GET = slow
    with fc.Client(s.url, "k", timeout=0.3, retry=fc.RetryPolicy(max_attempts=1)) as c:
        t0 = time.monotonic()
        with pytest.raises(fc.FaceAnchorConnectionError, match="Timeout"):
            c.methods()
    gate.set()
    assert time.monotonic() - t0 < 2.5


def test_async_retry_over_a_real_socket(scripted):
    s = scripted((503, {"Retry-After": "1"}, {"error": {"type": "unavailable", "message": "x"}}), (200, {}, QUEUED))

    async def main():
        async with fc.AsyncClient(s.url, "k") as ac:
            t0 = time.monotonic()
            h = await ac.submit("instantid", {"prompt": "p"})
            return h, time.monotonic() - t0

    h, elapsed = asyncio.run(main())
    assert h.request_id == "r1" and elapsed >= 1.0
    assert s.requests[0]["headers"]["idempotency-key"] == s.requests[1]["headers"]["idempotency-key"]
