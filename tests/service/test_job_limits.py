"""Bounded jobs in the queue: a cancel frees the worker within a second at any stage (the job ends
CANCELLED, its partial outputs are discarded, the next job starts at once); a job past its time
limit (setting, request ``timeout``, fal's ``X-Fal-Request-Timeout``) ends FAILED with ``timeout``."""

import base64
import io
import threading
import time

import pytest
from PIL import Image
from tiny_engine import TinyEngine

from faceanchor.config import Settings
from faceanchor.service import results
from faceanchor.service.runtime import Service
from faceanchor.types import JobStatus


def face() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def wait_for(pred, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("condition never became true")


def finished(svc, job_id):
    return wait_for(lambda: (j := svc.jobs.get(job_id)) and j.status.finished and j)


def output_files(settings):
    root = settings.data_dir / "files" / "outputs"
    return sorted(p.name for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path, job_lease_seconds=5)


def test_cancel_during_encoding_discards_the_written_outputs_and_the_next_job_runs(settings, monkeypatch):
    entered = threading.Event()
    orig = results.encode_image

    def slow_encode(*a, **k):  # a slow encoder that never looks at the cancel flag
        entered.set()
        time.sleep(0.4)
        return orig(*a, **k)

    monkeypatch.setattr(results, "encode_image", slow_encode)
    svc = Service(settings, engine=TinyEngine())
    svc.start(background=False)
    try:
        job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 1, "samples": 4, "seed": 3})
        assert entered.wait(10)
        time.sleep(0.5)  # the first image is encoded and stored by now
        t0 = time.perf_counter()
        assert svc.cancel(job.id) == "CANCELLATION_REQUESTED"
        done = finished(svc, job.id)
        took = time.perf_counter() - t0
        assert done.status == JobStatus.CANCELLED and took <= 1.0, took
        assert output_files(settings) == []  # the image(s) stored before the cancel are gone
        monkeypatch.setattr(results, "encode_image", orig)
        nxt, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 1, "seed": 4})
        assert finished(svc, nxt.id).status == JobStatus.COMPLETED
        assert len(output_files(settings)) == 1
    finally:
        svc.stop()


def test_a_job_past_its_request_timeout_fails_with_timeout_and_the_worker_moves_on(settings):
    engine = TinyEngine(step_delay=0.05)
    svc = Service(settings, engine=engine)
    svc.start(background=False)
    try:
        t0 = time.perf_counter()
        job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 100, "samples": 2, "seed": 1}, timeout=0.5)
        nxt, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 2, "seed": 2})
        done = finished(svc, job.id)
        assert time.perf_counter() - t0 < 5.0  # 2 x 100 steps x 0.05 s would take 10 s
        assert done.status == JobStatus.FAILED and done.error["type"] == "timeout" and done.error["status"] == 504
        assert "0.5 s" in done.error["message"]
        assert finished(svc, nxt.id).status == JobStatus.COMPLETED
        assert engine.completed == 1
    finally:
        svc.stop()


def test_the_setting_bounds_every_job_and_a_request_cannot_raise_it(tmp_path):
    settings = Settings(home=tmp_path, job_timeout_seconds=0.4)
    svc = Service(settings, engine=TinyEngine(step_delay=0.05))
    svc.start(background=False)
    try:
        job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 100}, timeout=3600)
        done = finished(svc, job.id)
        assert done.error["type"] == "timeout" and "0.4 s" in done.error["message"]
    finally:
        svc.stop()


def test_fal_request_timeout_header_and_queue_timeout_parameter(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "api"))
    from api_helpers import Harness

    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, job_lease_seconds=5)
    with Harness(settings, TinyEngine(step_delay=0.05)) as h:
        uri = "data:image/png;base64," + base64.b64encode(face()).decode()
        r = h.client.post("/queue/fal-ai/instantid", json={"face_image_url": uri, "prompt": "man", "num_inference_steps": 60},
                          headers={**h.headers, "X-Fal-Request-Timeout": "0.5"})
        assert r.status_code == 200, r.text
        body = h.wait(r.json()["status_url"])
        assert body["status"] == "FAILED"
        res = h.client.get(r.json()["response_url"], headers=h.headers)
        assert res.status_code == 504 and res.json()["error"]["type"] == "timeout"
        r = h.client.post("/queue/instantid?timeout=0.5", json={"face_image": uri, "num_inference_steps": 60}, headers=h.headers)
        assert h.wait(r.json()["status_url"])["status"] == "FAILED"
        assert h.service.jobs.get(r.json()["request_id"]).error["type"] == "timeout"
        assert h.client.post("/queue/instantid?timeout=-1", json={"face_image": uri}, headers=h.headers).status_code in (400, 422)
        r = h.client.post("/v1/faceid?timeout=0.5", json={"face_image": uri, "num_inference_steps": 60}, headers=h.headers)
        assert r.status_code == 504 and r.json()["error"]["type"] == "timeout"  # the sync routes take it too
