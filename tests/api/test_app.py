"""Every endpoint and error code of the API, through TestClient with the tiny engine."""

import base64
import hashlib
import io
import json
import threading
import time

from api_helpers import Harness, b64, png_bytes, tiny, wait_ready
from fastapi.testclient import TestClient
from PIL import Image

from faceanchor.api.app import create_app
from faceanchor.errors import ModelNotFoundError
from faceanchor.imageio import read_metadata


class GateEngine(tiny.TinyEngine):
    """Blocks at its first step until ``gate`` is set (keeps the single worker busy)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.gate = threading.Event()
        self.in_step = threading.Event()

    def generate(self, request, on_progress=None, cancel=None):
        def progress(ev):
            if on_progress:
                on_progress(ev)
            self.in_step.set()
            while not self.gate.is_set():
                if cancel is not None and cancel():
                    return
                time.sleep(0.01)

        return super().generate(request, progress, cancel)


def err(resp):
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message"}, body
    return body["error"]


# ---------------------------------------------------------------- health, auth, web


def test_health_needs_no_key_and_reports_ready(harness):
    r = harness.client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["workers"] == 1


def test_health_loading_then_ready_and_sync_503_while_loading(settings, face_b64):
    release = threading.Event()

    def slow_factory(_settings):
        release.wait(10)
        return tiny.TinyEngine()

    app = create_app(settings, engine_factory=slow_factory)
    key, _ = app.state.service.keys.create()
    with TestClient(app) as c:
        r = c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "loading" and r.headers["Retry-After"]
        r = c.post("/v1/instantid", json={"face_image": face_b64}, headers={"x-api-key": key})
        assert r.status_code == 502 and err(r)["type"] == "unavailable" and "Retry-After" in r.headers  # Segmind's 502
        r = c.post("/v1/faceid", json={"face_image": face_b64}, headers={"x-api-key": key})
        assert r.status_code == 503 and err(r)["type"] == "unavailable" and "Retry-After" in r.headers
        # queued work is accepted while loading and runs once the model is there
        q = c.post("/queue/instantid", json={"face_image": face_b64, "num_inference_steps": 1}, headers={"x-api-key": key})
        assert q.status_code == 200 and q.json()["status"] == "IN_QUEUE"
        release.set()
        wait_ready(c)
        deadline = time.time() + 10
        while c.get(q.json()["status_url"], headers={"x-api-key": key}).json()["status"] != "COMPLETED":
            assert time.time() < deadline
            time.sleep(0.02)


def test_health_busy_while_worker_runs(settings, face_b64):
    with Harness(settings, GateEngine()) as h:
        h.client.post("/queue/instantid", json={"face_image": face_b64}, headers=h.headers)
        assert h.engine.in_step.wait(5)
        assert h.client.get("/health").json()["status"] == "busy"
        h.engine.gate.set()


def test_model_load_failure_is_503(settings, face_b64):
    def broken(_settings):
        raise ModelNotFoundError("weights missing: put ip-adapter.bin in ~/models")

    app = create_app(settings, engine_factory=broken)
    key, _ = app.state.service.keys.create()
    with TestClient(app) as c:
        deadline = time.time() + 5
        while c.get("/health").json()["status"] != "error":
            assert time.time() < deadline
            time.sleep(0.02)
        assert c.get("/health").status_code == 503 and "ip-adapter.bin" in c.get("/health").json()["error"]
        r = c.post("/queue/instantid", json={"face_image": face_b64}, headers={"x-api-key": key})
        assert r.status_code == 503 and "ip-adapter.bin" in err(r)["message"]


def test_key_headers_401_403(harness, face_b64):
    c = harness.client
    body = {"face_image": face_b64, "num_inference_steps": 1}
    assert c.post("/v1/instantid", json=body).status_code == 401
    assert err(c.post("/v1/instantid", json=body))["type"] == "unauthorized"
    assert c.post("/v1/instantid", json=body, headers={"x-api-key": "fa_000000000000_" + "x" * 43}).status_code == 401
    assert c.post("/v1/instantid", json=body, headers={"x-api-key": harness.key + "x"}).status_code == 401
    assert c.post("/v1/instantid", json=body, headers={"Authorization": f"Key {harness.key}"}).status_code == 200
    assert c.post("/v1/instantid", json=body, headers={"Authorization": f"Bearer {harness.key}"}).status_code == 200
    assert c.post("/v1/instantid", json=body, headers={"Authorization": f"Basic {harness.key}"}).status_code == 401
    for path in ("/metrics", "/files/" + "0" * 64, "/queue/instantid/requests/" + "0" * 32):
        assert c.get(path).status_code == 401
    harness.service.keys.revoke(harness.key_info.id)
    r = c.post("/v1/instantid", json=body, headers=harness.headers)
    assert r.status_code == 403 and err(r)["type"] == "forbidden"


def test_web_page_is_served_without_key(harness):
    r = harness.client.get("/web/")
    assert r.status_code == 200 and "faceanchor" in r.text and "text/html" in r.headers["content-type"]
    assert harness.client.get("/web/app.js").status_code == 200
    assert harness.client.get("/", follow_redirects=False).status_code in (302, 307)


def test_openapi_lists_routes(harness):
    paths = harness.client.get("/openapi.json").json()["paths"]
    for p in ("/v1/instantid", "/v1/faceid", "/queue/{app}", "/queue/{app}/requests/{request_id}/status",
              "/queue/{app}/requests/{request_id}/status/stream", "/queue/{app}/requests/{request_id}",
              "/queue/{app}/requests/{request_id}/cancel", "/files/{file_id}", "/health", "/metrics"):
        assert p in paths


# ---------------------------------------------------------------- synchronous


def test_sync_bytes_json_list_and_base64(harness, face_b64):
    c, h = harness.client, harness.headers
    r = c.post("/v1/instantid", json={"face_image": face_b64, "seed": 7, "num_inference_steps": 2, "prompt": "hi"}, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-seed"] == "7" and r.headers["x-content-type-options"] == "nosniff"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (32, 32)
    assert read_metadata(r.content)["seed"] == 7
    # several samples without base64: a JSON list of image links
    r = c.post("/v1/instantid", json={"face_image": face_b64, "seed": 7, "samples": 3, "num_inference_steps": 1}, headers=h)
    items = r.json()
    assert r.status_code == 200 and isinstance(items, list) and [i["seed"] for i in items] == [7, 8, 9]
    f = c.get(items[1]["url"], headers=h)
    assert f.status_code == 200 and f.headers["content-type"] == "image/png"
    assert hashlib.sha256(f.content).hexdigest() == items[1]["file_id"]
    # base64: JSON with images, seed, scores
    r = c.post("/v1/faceid", json={"face_image": "data:image/png;base64," + face_b64, "seed": 3, "samples": 2,
                                   "base64": True, "output_format": "jpeg", "num_inference_steps": 1}, headers=h)
    body = r.json()
    assert r.status_code == 200 and body["seed"] == 3 and body["seeds"] == [3, 4] and len(body["identity_scores"]) == 2
    assert body["content_type"] == "image/jpeg" and body["image"] == body["images"][0]
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][1]))).format == "JPEG"


def test_sync_method_per_route(harness, face_b64):
    c, h = harness.client, harness.headers
    r = c.post("/v1/instantid", json={"face_image": face_b64, "method": "faceid"}, headers=h)
    assert r.status_code == 400 and "method" in err(r)["message"]  # Segmind-shaped route: 400 for invalid parameters
    r = c.post("/v1/faceid", json={"face_image": face_b64, "method": "faceid-plusv2", "num_inference_steps": 1, "base64": True}, headers=h)
    assert r.status_code == 200


def test_no_face_is_422(harness):
    flat = b64(png_bytes(noise=False))
    r = harness.client.post("/v1/faceid", json={"face_image": flat, "num_inference_steps": 1}, headers=harness.headers)
    assert r.status_code == 422 and err(r)["type"] == "no_face"
    r = harness.client.post("/v1/instantid", json={"face_image": flat, "num_inference_steps": 1}, headers=harness.headers)
    assert r.status_code == 400 and err(r)["type"] == "no_face"  # Segmind's code, the same type


def test_400_errors(harness):
    c, h = harness.client, harness.headers
    r = c.post("/v1/instantid", json={"face_image": "not base64 at all!"}, headers=h)
    assert r.status_code == 400 and err(r)["type"] == "invalid_request"
    r = c.post("/v1/instantid", json={"face_image": b64(png_bytes()), "model_name": "/etc/models/x.safetensors"}, headers=h)
    assert r.status_code == 400 and "model_name" in err(r)["message"]
    r = c.post("/v1/instantid", json={"face_image": "file:///etc/passwd"}, headers=h)
    assert r.status_code == 400 and err(r)["type"] == "url_refused"
    r = c.post("/v1/instantid", json={"face_image": "/etc/passwd"}, headers=h)  # never opened as a path
    assert r.status_code == 400


def test_422_validation(harness, face_b64, settings):
    c, h = harness.client, harness.headers
    cases = [
        {"face_image": face_b64, "samples": 5},
        {"face_image": face_b64, "samples": 0},
        {"face_image": face_b64, "num_inference_steps": 101},
        {"face_image": face_b64, "prompt": "x" * (settings.max_prompt_chars + 1)},
        {"face_image": face_b64, "unknown_field": 1},
        {"face_image": face_b64, "face_embedding": [1.0, "NaN"]},
        {"face_image": face_b64, "control_guidance_start": 0.9, "control_guidance_end": 0.1},
        {"prompt": "no face"},
        {"face_image": 5},
    ]
    for path, status in (("/v1/faceid", 422), ("/v1/instantid", 400)):  # /v1/instantid: Segmind's 400
        for body in cases:
            r = c.post(path, json=body, headers=h)
            assert r.status_code == status, (path, body, r.text)
            assert err(r)["type"] == "validation_error"
        r = c.post(path, content=b"{not json", headers={**h, "content-type": "application/json"})
        assert r.status_code == status and err(r)["type"] == "validation_error"
        r = c.post(path, content=b"[1,2]", headers={**h, "content-type": "application/json"})
        assert r.status_code == status


def test_max_steps_setting(settings, face_b64):
    with Harness(settings.model_copy(update={"max_steps": 10}), tiny.TinyEngine()) as hz:
        r = hz.client.post("/v1/instantid", json={"face_image": face_b64, "num_inference_steps": 11}, headers=hz.headers)
        assert r.status_code == 400 and "at most 10" in err(r)["message"]
        r = hz.client.post("/queue/instantid", json={"face_image": face_b64, "num_inference_steps": 11}, headers=hz.headers)
        assert r.status_code == 422 and "at most 10" in err(r)["message"]


def test_413_body_declared_and_streamed(settings, face_b64):
    with Harness(settings.model_copy(update={"max_body_bytes": 2000}), tiny.TinyEngine()) as hz:
        big = json.dumps({"face_image": "A" * 5000}).encode()
        r = hz.client.post("/v1/instantid", content=big, headers={**hz.headers, "content-type": "application/json"})
        assert r.status_code == 413 and err(r)["type"] == "body_too_large"

        def chunks():
            for _ in range(10):
                yield b" " * 500

        r = hz.client.post("/queue/instantid", content=chunks(), headers={**hz.headers, "content-type": "application/json"})
        assert r.status_code == 413 and err(r)["type"] == "body_too_large"
        assert hz.service.jobs.counts()["IN_QUEUE"] == 0


def test_413_pixels_and_415_type(settings):
    with Harness(settings.model_copy(update={"max_image_pixels": 100 * 100}), tiny.TinyEngine()) as hz:
        r = hz.client.post("/v1/instantid", json={"face_image": b64(png_bytes((200, 200)))}, headers=hz.headers)
        assert r.status_code == 413 and err(r)["type"] == "image_too_large"
        r = hz.client.post("/queue/instantid", json={"face_image": b64(png_bytes(fmt="GIF"))}, headers=hz.headers)
        assert r.status_code == 415 and err(r)["type"] == "unsupported_image"


def test_404_405(harness):
    c, h = harness.client, harness.headers
    r = c.get("/no/such/path", headers=h)
    assert r.status_code == 404 and err(r)["type"] == "not_found"
    r = c.get("/v1/instantid", headers=h)
    assert r.status_code == 405 and err(r)["type"] == "method_not_allowed"
    r = c.post("/queue/nosuchapp", json={}, headers=h)
    assert r.status_code == 404
    assert c.get("/files/" + "a" * 64, headers=h).status_code == 404
    assert c.get("/files/../../etc/passwd", headers=h).status_code == 404
    assert c.get("/files/not-an-id", headers=h).status_code == 404


def test_429_rate_limit_with_retry_after(settings, face_b64):
    with Harness(settings.model_copy(update={"rate_limit_per_minute": 2}), tiny.TinyEngine()) as hz:
        body = {"face_image": face_b64, "num_inference_steps": 1}
        assert hz.client.post("/queue/instantid", json=body, headers=hz.headers).status_code == 200
        assert hz.client.post("/queue/instantid", json=body, headers=hz.headers).status_code == 200
        r = hz.client.post("/queue/instantid", json=body, headers=hz.headers)
        assert r.status_code == 429 and err(r)["type"] == "rate_limited" and int(r.headers["Retry-After"]) >= 1
        # per-key override: another key with its own higher limit is unaffected
        other, _ = hz.service.keys.create("other", rate_limit_per_minute=100)
        assert hz.client.post("/queue/instantid", json=body, headers={"x-api-key": other}).status_code == 200


def test_503_queue_full(settings, face_b64):
    with Harness(settings.model_copy(update={"max_queue_size": 1}), GateEngine()) as hz:
        body = {"face_image": face_b64}
        hz.client.post("/queue/instantid", json=body, headers=hz.headers)
        assert hz.engine.in_step.wait(5)
        assert hz.client.post("/queue/instantid", json=body, headers=hz.headers).status_code == 200
        r = hz.client.post("/queue/instantid", json=body, headers=hz.headers)
        assert r.status_code == 503 and "Retry-After" in r.headers and "queue is full" in err(r)["message"]
        # a fresh Idempotency-Key is a new job: it does not get past the limit
        r = hz.client.post("/queue/instantid", json=body, headers={**hz.headers, "Idempotency-Key": "fresh-1"})
        assert r.status_code == 503 and "queue is full" in err(r)["message"]
        hz.engine.gate.set()


def test_504_start_deadline_queue_and_sync(settings, face_b64):
    with Harness(settings.model_copy(update={"sync_timeout_seconds": 0.3}), GateEngine()) as hz:
        c, h = hz.client, hz.headers
        first = c.post("/queue/instantid", json={"face_image": face_b64}, headers=h).json()
        assert hz.engine.in_step.wait(5)
        late = c.post("/queue/instantid?start_timeout=0.2", json={"face_image": face_b64, "seed": 1}, headers=h).json()
        r = c.post("/v1/instantid", json={"face_image": face_b64, "seed": 2}, headers=h)
        assert r.status_code == 504 and err(r)["type"] == "deadline_exceeded"
        st = hz.wait(late["status_url"], statuses=("FAILED",))
        assert st["error"]["type"] == "deadline_exceeded"
        r = c.get(late["response_url"], headers=h)
        assert r.status_code == 504 and err(r)["type"] == "deadline_exceeded"
        hz.engine.gate.set()
        assert hz.wait(first["status_url"])["status"] == "COMPLETED"


# ---------------------------------------------------------------- queue


def test_queue_lifecycle_position_progress_logs_result(settings, face_b64):
    with Harness(settings, GateEngine()) as hz:
        c, h = hz.client, hz.headers
        a = c.post("/queue/instantid", json={"face_image": face_b64, "num_inference_steps": 4, "seed": 11}, headers=h)
        assert a.status_code == 200
        a = a.json()
        assert set(a) >= {"request_id", "status_url", "response_url", "cancel_url"}
        assert hz.engine.in_step.wait(5)
        b = c.post("/queue/instantid", json={"face_image": face_b64, "seed": 12, "num_inference_steps": 1}, headers=h).json()
        d = c.post("/queue/instantid", json={"face_image": face_b64, "seed": 13, "num_inference_steps": 1}, headers=h).json()
        assert b["queue_position"] == 0 and d["queue_position"] == 1
        st = c.get(d["status_url"], headers=h).json()
        assert st["status"] == "IN_QUEUE" and st["queue_position"] == 1
        # in progress: progress and (on request) logs
        deadline = time.time() + 5
        while True:
            st = c.get(a["status_url"] + "?logs=1", headers=h).json()
            if st.get("progress") and st.get("logs"):
                break
            assert time.time() < deadline, st
            time.sleep(0.05)
        assert st["status"] == "IN_PROGRESS" and st["progress"]["stage"] == "denoise" and st["progress"]["total"] == 4
        assert any("denoise 1/4" in line["message"] for line in st["logs"])
        assert "logs" not in c.get(a["status_url"], headers=h).json()
        r = c.get(a["response_url"], headers=h)
        assert r.status_code == 202 and r.json()["status"] == "IN_PROGRESS"
        hz.engine.gate.set()
        for job in (a, b, d):
            assert hz.wait(job["status_url"])["status"] == "COMPLETED"
        res = c.get(a["response_url"], headers=h).json()
        assert res["seed"] == 11 and res["status"] == "COMPLETED" and {"queue", "inference", "denoise"} <= set(res["timings"])
        f = c.get(res["images"][0]["url"], headers=h)
        assert f.headers["x-content-type-options"] == "nosniff" and f.headers["content-type"] == "image/png"
        assert hashlib.sha256(f.content).hexdigest() == res["images"][0]["file_id"]


def test_queue_failed_job_result_carries_error(harness):
    c, h = harness.client, harness.headers
    job = c.post("/queue/faceid", json={"face_image": b64(png_bytes(noise=False))}, headers=h).json()
    st = harness.wait(job["status_url"])
    assert st["status"] == "FAILED" and st["error"]["type"] == "no_face"
    r = c.get(job["response_url"], headers=h)
    assert r.status_code == 422 and err(r)["type"] == "no_face"


def test_engine_crash_is_failed_not_lost(settings, face_b64):
    with Harness(settings, tiny.TinyEngine(crash=True)) as hz:
        job = hz.client.post("/queue/instantid", json={"face_image": face_b64}, headers=hz.headers).json()
        st = hz.wait(job["status_url"])
        assert st["status"] == "FAILED" and st["error"]["type"] == "internal_error"


def test_cancel_queued_running_finished_unknown(settings, face_b64):
    with Harness(settings, GateEngine()) as hz:
        c, h = hz.client, hz.headers
        running = c.post("/queue/instantid", json={"face_image": face_b64, "num_inference_steps": 50}, headers=h).json()
        assert hz.engine.in_step.wait(5)
        queued = c.post("/queue/instantid", json={"face_image": face_b64}, headers=h).json()
        r = c.put(queued["cancel_url"], headers=h)
        assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
        assert c.get(queued["status_url"], headers=h).json()["status"] == "CANCELLED"
        r = c.put(running["cancel_url"], headers=h)
        assert r.status_code == 202 and r.json()["status"] == "CANCELLATION_REQUESTED"
        st = hz.wait(running["status_url"])
        assert st["status"] == "CANCELLED" and st["error"]["type"] == "cancelled"
        assert hz.engine.completed == 0
        r = c.put(running["cancel_url"], headers=h)
        assert r.status_code == 202 and r.json()["status"] == "ALREADY_COMPLETED"
        r = c.put("/queue/instantid/requests/" + "f" * 32 + "/cancel", headers=h)
        assert r.status_code == 404 and err(r)["type"] == "not_found"
        assert c.get(running["response_url"], headers=h).status_code == 409


def test_jobs_are_private_to_their_key(harness, face_b64):
    c = harness.client
    job = c.post("/queue/instantid", json={"face_image": face_b64, "num_inference_steps": 1}, headers=harness.headers).json()
    other, _ = harness.service.keys.create("other")
    oh = {"x-api-key": other}
    assert c.get(job["status_url"], headers=oh).status_code == 404
    assert c.get(job["response_url"], headers=oh).status_code == 404
    assert c.put(job["cancel_url"], headers=oh).status_code == 404
    assert c.get(job["status_url"].replace("/instantid/", "/faceid/"), headers=harness.headers).status_code == 404


def test_idempotency_key(harness, face_b64):
    c, h = harness.client, harness.headers
    body = {"face_image": face_b64, "num_inference_steps": 1, "seed": 5}
    a = c.post("/queue/instantid", json=body, headers={**h, "Idempotency-Key": "abc"}).json()
    b = c.post("/queue/instantid", json=body, headers={**h, "Idempotency-Key": "abc"}).json()
    assert a["request_id"] == b["request_id"]
    counts = harness.service.jobs.counts()  # one snapshot: the job may move on between calls
    assert counts["IN_QUEUE"] + counts["IN_PROGRESS"] + counts["COMPLETED"] == 1
    r = c.post("/queue/instantid", json=dict(body, seed=6), headers={**h, "Idempotency-Key": "abc"})
    assert r.status_code == 422 and err(r)["type"] == "idempotency_conflict"
    # another key may use the same idempotency key for its own job
    other, _ = harness.service.keys.create()
    d = c.post("/queue/instantid", json=body, headers={"x-api-key": other, "Idempotency-Key": "abc"}).json()
    assert d["request_id"] != a["request_id"]
    # sync repeats return the same job's result
    r1 = c.post("/v1/instantid", json=dict(body, seed=9), headers={**h, "Idempotency-Key": "s1"})
    r2 = c.post("/v1/instantid", json=dict(body, seed=9), headers={**h, "Idempotency-Key": "s1"})
    assert r1.headers["x-request-id"] == r2.headers["x-request-id"] and r1.content == r2.content
    assert harness.engine.calls == 3  # a, the other key's job, and s1 once


def test_sse_stream_events_and_keepalive(settings, face_b64):
    with Harness(settings, GateEngine()) as hz:
        c, h = hz.client, hz.headers
        job = c.post("/queue/instantid", json={"face_image": face_b64, "num_inference_steps": 3}, headers=h).json()
        assert hz.engine.in_step.wait(5)
        threading.Timer(0.8, hz.engine.gate.set).start()
        events, keepalives = [], 0
        with c.stream("GET", job["status_url"] + "/stream?logs=1", headers=h) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith(": keep-alive"):
                    keepalives += 1
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        assert events[-1]["status"] == "COMPLETED"
        assert any(e["status"] == "IN_PROGRESS" for e in events)
        assert keepalives >= 1
        assert c.get(job["status_url"].replace(job["request_id"], "0" * 32) + "/stream", headers=h).status_code == 404


def test_metrics_count_requests_and_jobs(harness, face_b64):
    c, h = harness.client, harness.headers
    job = c.post("/queue/instantid", json={"face_image": face_b64, "num_inference_steps": 1}, headers=h).json()
    harness.wait(job["status_url"])
    finished = 'faceanchor_jobs_finished_total{app="instantid",status="COMPLETED"} 1.0'
    deadline = time.time() + 5  # the worker counts a job just after it writes COMPLETED
    while finished not in (text := c.get("/metrics", headers=h).text) and time.time() < deadline:
        time.sleep(0.05)
    assert 'faceanchor_jobs_submitted_total{app="instantid"} 1.0' in text
    assert finished in text
    assert 'route="/queue/{app}"' in text and "faceanchor_model_ready 1.0" in text


def test_out_of_range_identity_fields_offsets_and_hosts_are_4xx(harness, face_b64):
    """Values that used to reach the engine (or SQLite) and end in a 500 are refused up front."""
    c, h = harness.client, harness.headers
    kps = [[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]]
    bodies = [
        {"face_embedding": [0.1] * 8, "face_kps": [[1e30, 1]] + kps[1:]},  # cv2 int overflow drawing the control
        {"face_embedding": [0.1] * 8, "face_kps": kps, "face_bbox": [1e308, 0, 0, 0]},
        {"face_embedding": [0.1] * 8, "face_kps": kps, "face_image_size": [10**12, 1]},
        {"face_embedding": [0.1] * 8, "face_embedding_space": "../../models/x"},  # a pack name, never a path
        {"face_embedding": [0.1] * 8, "face_embedding_space": "x" * 300},
    ]
    for body in bodies:
        for path in ("/v1/instantid", "/queue/instantid", "/queue/character/generate"):
            r = c.post(path, json=body, headers=h)
            status = 400 if path == "/v1/instantid" else 422  # /v1/instantid: Segmind's 400
            assert r.status_code == status and err(r)["type"] == "validation_error", (path, body, r.text)
    r = c.post("/queue/instantid", json={"face_image": "http://xn--/x.png"}, headers=h)  # malformed IDNA label
    assert r.status_code == 400 and err(r)["type"] == "url_refused"
    r = c.post("/v1/characters", json={"name": "a", "images": {"face": face_b64}, "spaces": [".."]}, headers=h)
    assert r.status_code == 422
    for path in ("/v1/characters?offset=99999999999999999999", "/v1/characters/abc/history?offset=9223372036854775808"):
        r = c.get(path, headers=h)
        assert r.status_code == 422 and err(r)["type"] == "validation_error", r.text


def test_character_operations_on_a_generation_only_engine_are_501(harness):
    """An ``--engine`` plug-in that only generates (the tiny stub) gets a clear 501 for an ID photo
    or an edit, not a 500 from an AttributeError inside the job."""
    face = b64(png_bytes())
    for route, body in (("/v1/character/id-photo", {"images": {"face": face}}),
                        ("/v1/character/edit", {"prompt": "x", "images": {"target": face, "face": face}})):
        r = harness.client.post(route, json=body, headers=harness.headers)
        assert r.status_code == 501, (route, r.text)
        assert err(r)["type"] == "not_implemented" and "character support" in err(r)["message"]
