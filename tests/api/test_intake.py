"""Fast, bounded intake: a submit reads headers only, at most ``intake_concurrency`` submits work
at once, and ``/health`` never waits behind them."""

import io
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from api_helpers import Harness, b64, png_bytes, tiny
from PIL import Image, ImageFile

from faceanchor.config import Settings
from faceanchor.errors import ImageInputError
from faceanchor.imageio import probe_image


def encoded(fmt: str, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def corrupt_inside_png() -> bytes:
    """A PNG whose chunk structure is whole but whose compressed pixels are garbage."""
    data = bytearray(png_bytes((64, 64)))
    start = data.index(b"IDAT") + 4
    for i in range(start + 20, start + 400):
        data[i] ^= 0x5A
    return bytes(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_probe_reads_whole_files_without_decoding(fmt, monkeypatch):
    data = encoded(fmt)

    def no_decode(self):  # noqa: ANN001
        raise AssertionError("probe_image decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    assert probe_image(data) == (fmt, (64, 64))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_probe_refuses_truncated_files(fmt, keep):
    data = encoded(fmt)
    with pytest.raises(ImageInputError, match="truncated|not a readable"):
        probe_image(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def hz(tmp_path_factory):
    settings = Settings(home=tmp_path_factory.mktemp("intake"), rate_limit_per_minute=0, intake_concurrency=2)
    with Harness(settings, tiny.TinyEngine()) as h:
        yield h


def test_corrupt_pixels_fail_the_job_in_the_worker(hz):
    bad = corrupt_inside_png()
    with pytest.raises(Exception):  # the full decode does find it
        Image.open(io.BytesIO(bad)).load()
    r = hz.client.post("/queue/instantid", json={"face_image": b64(bad), "num_inference_steps": 1}, headers=hz.headers)
    assert r.status_code == 200, r.text  # the header and structure are fine: accepted cheaply
    done = hz.wait(r.json()["status_url"])
    assert done["status"] == "FAILED" and "corrupt" in done["error"]["message"], done
    r = hz.client.get(r.json()["response_url"], headers=hz.headers)
    assert r.status_code == 415 and set(r.json()["error"]) == {"type", "message"}, r.text
    sync = hz.client.post("/v1/faceid", json={"face_image": b64(bad), "num_inference_steps": 1}, headers=hz.headers)
    assert sync.status_code == 415, sync.text


def test_submits_are_bounded_and_health_stays_free(hz):
    service = hz.service
    inside, most = [0], [0]
    lock, release = threading.Lock(), threading.Event()
    real_submit = service.submit

    def slow_submit(*a, **kw):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            release.wait(20)
            return real_submit(*a, **kw)
        finally:
            with lock:
                inside[0] -= 1

    service.submit = slow_submit
    body = {"face_image": b64(png_bytes()), "num_inference_steps": 1}
    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(hz.client.post, "/queue/instantid", json={**body, "seed": i}, headers=hz.headers)
                       for i in range(8)]
            deadline = time.time() + 10
            while inside[0] < 2 and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(0.3)  # had the lane more places, the other submits would be inside by now
            assert inside[0] == 2
            t0 = time.perf_counter()
            health = hz.client.get("/health")
            assert health.status_code == 200 and time.perf_counter() - t0 < 2.0
            release.set()
            answers = [f.result(30) for f in futures]
    finally:
        release.set()
        service.submit = real_submit
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.json()["request_id"] for a in answers}) == 8
    assert most[0] == 2


def test_queue_body_is_parsed_in_one_pass_with_fastapi_errors(hz):
    """The queue submit reads its body itself (raw, parsed by pydantic-core in its intake thread):
    bad JSON, a wrong content type, an empty body, unknown fields and bad values still answer 422
    naming the field, and the body's schema is still documented."""
    c, h = hz.client, hz.headers
    good = {"face_image": b64(png_bytes()), "num_inference_steps": 1}

    def err(r):  # noqa: ANN001, ANN202
        assert r.status_code == 422, r.text
        return r.json()["error"]["message"]

    assert "json" in err(c.post("/queue/instantid", content=b'{"face_image": ', headers={**h, "content-type": "application/json"})).lower()
    assert "application/json" in err(c.post("/queue/instantid", content=b"face_image=x", headers={**h, "content-type": "application/x-www-form-urlencoded"}))
    assert "required" in err(c.post("/queue/instantid", content=b"", headers={**h, "content-type": "application/json"})).lower()
    assert err(c.post("/queue/instantid", json={**good, "nonsense": 1}, headers=h)).startswith("nonsense:")
    assert err(c.post("/queue/instantid", json={**good, "num_inference_steps": "many"}, headers=h)).startswith("num_inference_steps:")
    assert err(c.post("/queue/instantid", json=[good], headers=h)).startswith("body:")
    # a +json type and a charset are JSON too; the job is queued with the parsed fields
    r = c.post("/queue/instantid", content=json.dumps({**good, "seed": 7}).encode(),
               headers={**h, "content-type": "application/vnd.api+json; charset=utf-8"})
    assert r.status_code == 200, r.text
    assert hz.service.get(r.json()["request_id"]).request["request"]["seed"] == 7
    # 401 before the body is looked at, as before
    assert c.post("/queue/instantid", content=b"{", headers={"content-type": "application/json"}).status_code == 401
    spec = c.get("/openapi.json").json()
    body = spec["paths"]["/queue/{app}"]["post"]["requestBody"]
    assert body["required"] and body["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/GenerateBody"
    assert "GenerateBody" in spec["components"]["schemas"]


def test_read_body_fills_one_buffer_and_checks_its_length():
    """:func:`read_body` takes the body into one buffer of its Content-Length, and refuses a
    body longer or shorter than it declared."""
    import asyncio

    from fastapi.exceptions import RequestValidationError
    from starlette.requests import Request

    from faceanchor.api.intake import read_body

    def request(chunks, length):  # noqa: ANN001, ANN202
        headers = [(b"content-type", b"application/json")] + ([(b"content-length", str(length).encode())] if length is not None else [])
        msgs = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

        async def receive():  # noqa: ANN202
            return msgs.pop(0)

        return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}, receive)

    parts = [b'{"a": ', b"12", b"3}"]
    got = asyncio.run(read_body(request(parts, 10)))
    assert bytes(got) == b'{"a": 123}' and isinstance(got, bytearray)
    assert bytes(asyncio.run(read_body(request(parts, None)))) == b'{"a": 123}'  # no length: the chunks joined
    for length in (9, 11):
        with pytest.raises(RequestValidationError, match="Content-Length"):
            asyncio.run(read_body(request(list(parts), length)))


def test_health_answers_from_memory_while_counting_is_slow(hz):
    """/health takes the queue depth the service's own thread counted (at most DEPTH_MAX_AGE old):
    no query and no thread per call, so a slow database does not slow it; the count catches up."""
    svc = hz.service
    deadline = time.time() + 5
    while svc.cached_health() is None and time.time() < deadline:
        time.sleep(0.05)
    assert svc.cached_health() is not None
    real = svc.jobs.queue_depth
    slow = threading.Event()

    def slow_depth(**kw):  # noqa: ANN003, ANN202
        slow.set()
        time.sleep(1.5)
        return real(**kw)

    svc.jobs.queue_depth = slow_depth
    try:
        for _ in range(3):
            t0 = time.perf_counter()
            r = hz.client.get("/health")
            assert r.status_code == 200 and time.perf_counter() - t0 < 1.0, r.text
    finally:
        svc.jobs.queue_depth = real
    assert svc.health()["queue_depth"] == real()  # without the cache it counts
    deadline = time.time() + 5  # and the service's own count carries on
    while (svc.cached_health() or {}).get("queue_depth") != real() and time.time() < deadline:
        time.sleep(0.05)
    assert svc.cached_health()["queue_depth"] == real()
