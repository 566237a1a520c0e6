"""Worker liveness (setting ``worker_processes``): a job stuck in native code past its time limit
or its cancel is found by the supervisor, the worker process is killed and replaced, the job is
retried once (never two runs at once) and then failed; the next job completes."""

import io
import os
import time

import pytest
import stuck_engine
from PIL import Image

from faceanchor.config import Settings
from faceanchor.service.runtime import Service
from faceanchor.types import JobStatus


def face() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def finished(svc, job_id, timeout=90.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        j = svc.jobs.get(job_id)
        if j.status.finished:
            return j
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never finished: {svc.jobs.get(job_id)}")


@pytest.fixture
def service(tmp_path, monkeypatch):
    log, lock = tmp_path / "runs.log", tmp_path / "run.lock"
    monkeypatch.setenv("STUCK_LOG", str(log))
    monkeypatch.setenv("STUCK_LOCK", str(lock))
    settings = Settings(home=tmp_path / "home", worker_processes=True, job_timeout_seconds=1.0,
                        job_stuck_grace_seconds=1.0, job_lease_seconds=5)
    svc = Service(settings, engine_factory=stuck_engine.factory, poll_interval=0.05)
    svc.start(background=False)
    assert svc.state == "ready"
    yield svc, log
    svc.stop()


def runs(log):
    return [line.split(" ", 1) for line in log.read_text().splitlines()] if log.exists() else []


def test_a_job_stuck_in_native_code_recycles_the_worker_is_retried_once_then_failed(service):
    svc, log = service
    engine = svc.workers[0].engine
    first_pid = engine.pid
    t0 = time.time()
    stuck, _ = svc.submit("instantid", {"face_image": face(), "prompt": "stuck", "num_inference_steps": 2})
    nxt, _ = svc.submit("instantid", {"face_image": face(), "prompt": "fine", "num_inference_steps": 2})
    done = finished(svc, stuck.id)
    assert done.status == JobStatus.FAILED and done.error["type"] == "timeout", done.error
    assert "recycled" in done.error["message"] and done.attempts == 2
    assert time.time() - t0 < 60  # two tries of (1 s limit + 1 s grace + a fresh process), not 2 x 30 s
    assert engine.recycled == 2 and engine.pid != first_pid
    after = finished(svc, nxt.id)
    assert after.status == JobStatus.COMPLETED and len(after.result["images"]) == 1
    lines = runs(log)
    assert not [x for x in lines if x[1] == "CONCURRENT"]  # never two runs at once
    starts = [pid for pid, what in lines if what == "start stuck"]
    assert len(starts) == 2 and starts[0] != starts[1]  # retried once, in a fresh process
    assert not any(what == "end stuck" for _, what in lines)
    with pytest.raises(ProcessLookupError):
        os.kill(int(starts[0]), 0)  # the stuck process is gone


def test_a_cancelled_job_stuck_in_native_code_ends_cancelled_and_the_worker_moves_on(tmp_path, monkeypatch):
    monkeypatch.setenv("STUCK_LOG", str(tmp_path / "runs.log"))
    monkeypatch.setenv("STUCK_LOCK", str(tmp_path / "run.lock"))
    settings = Settings(home=tmp_path / "home", worker_processes=True, job_stuck_grace_seconds=1.0, job_lease_seconds=5)
    svc = Service(settings, engine_factory=stuck_engine.factory, poll_interval=0.05)
    svc.start(background=False)
    try:
        stuck, _ = svc.submit("instantid", {"face_image": face(), "prompt": "stuck", "num_inference_steps": 2})
        deadline = time.time() + 30
        while "start stuck" not in (tmp_path / "runs.log").read_text() if (tmp_path / "runs.log").exists() else True:
            assert time.time() < deadline
            time.sleep(0.05)
        svc.cancel(stuck.id)
        done = finished(svc, stuck.id)
        assert done.status == JobStatus.CANCELLED and done.attempts == 1
        nxt, _ = svc.submit("instantid", {"face_image": face(), "prompt": "fine", "num_inference_steps": 2})
        assert finished(svc, nxt.id).status == JobStatus.COMPLETED
        assert svc.workers[0].engine.recycled == 1
    finally:
        svc.stop()


def test_without_worker_processes_a_stuck_job_still_ends_and_its_late_result_is_discarded(tmp_path):
    engine = stuck_engine.StuckEngine(str(tmp_path / "runs.log"), str(tmp_path / "run.lock"), stuck_seconds=4.0)
    settings = Settings(home=tmp_path / "home", job_timeout_seconds=0.5, job_stuck_grace_seconds=0.5, job_lease_seconds=5)
    svc = Service(settings, engine=engine, poll_interval=0.05)
    svc.start(background=False)
    try:
        t0 = time.time()
        stuck, _ = svc.submit("instantid", {"face_image": face(), "prompt": "stuck", "num_inference_steps": 2})
        nxt, _ = svc.submit("instantid", {"face_image": face(), "prompt": "fine", "num_inference_steps": 2})
        done = finished(svc, stuck.id)
        assert time.time() - t0 < 3.5  # limit + grace, not the 4 s the engine stays stuck
        assert done.status == JobStatus.FAILED and done.error["type"] == "timeout" and "did not stop" in done.error["message"]
        assert svc.health()["status"] == "busy"  # the thread is still inside the engine
        assert finished(svc, nxt.id).status == JobStatus.COMPLETED  # once it returns, the next job runs
        final = svc.jobs.get(stuck.id)
        assert final.status == JobStatus.FAILED and final.result is None  # the late result was discarded
    finally:
        svc.stop()
