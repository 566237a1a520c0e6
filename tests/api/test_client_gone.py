"""Client gone = job cancelled, for sync calls only (a real uvicorn on loopback, the tiny engine made slow).

A sync request whose client disconnects cancels the job it submitted; a sync request that only
reused another request's job (same Idempotency-Key) leaves it running; a queued job runs to the
end with nobody connected.
"""

import threading
import time

import httpx
import uvicorn
from api_helpers import b64, png_bytes, tiny

from faceanchor.api.app import create_app
from faceanchor.config import Settings
from faceanchor.store.job_history import jobs_of_key
from faceanchor.types import JobStatus

STEPS = 60  # × 0.05 s: a 3 s job, far longer than the clients below wait


class ServerThread:
    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            assert time.time() < deadline
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        deadline = time.time() + 15
        while httpx.get(self.url + "/health").json()["status"] not in ("ready", "busy"):
            assert time.time() < deadline
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)


def _wait(pred, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("condition never became true")


def _hang_up(url, json, headers, after=0.6):
    """POST and drop the connection after ``after`` seconds without reading the answer."""
    try:
        httpx.post(url, json=json, headers=headers, timeout=after)
    except httpx.TimeoutException:
        return
    raise AssertionError("the request finished before the client hung up")


def test_sync_client_gone_cancels_its_job_and_queued_jobs_keep_running(tmp_path):
    engine = tiny.TinyEngine(step_delay=0.05)
    app = create_app(Settings(home=tmp_path, rate_limit_per_minute=0), engine)
    service = app.state.service
    key, info = service.keys.create("gone")
    headers = {"x-api-key": key}
    body = {"face_image": b64(png_bytes()), "num_inference_steps": STEPS, "seed": 7}

    def only_job():
        views, total = jobs_of_key(service.db, info.id, owner=info.owner)
        return views[0] if total else None

    with ServerThread(app) as srv:
        # 1. a sync call whose client hangs up mid-run: its job is cancelled between steps
        _hang_up(srv.url + "/v1/faceid", body, headers)
        job = _wait(only_job)
        done = _wait(lambda: (j := service.jobs.get(job.id)).status.finished and j)
        assert done.status == JobStatus.CANCELLED and done.cancel_requested
        assert engine.completed == 0
        assert done.finished_at - done.created_at < STEPS * 0.05  # well before the run would have ended

        # 2. a sync call reusing another sync call's job (same Idempotency-Key) leaves it running
        idem = {**headers, "Idempotency-Key": "shared-1"}
        answers = []
        waiter = threading.Thread(target=lambda: answers.append(httpx.post(srv.url + "/v1/faceid", json=body, headers=idem, timeout=30)))
        waiter.start()
        _wait(lambda: engine.calls >= 2)
        _hang_up(srv.url + "/v1/faceid", body, idem, after=0.4)
        waiter.join(30)
        assert answers and answers[0].status_code == 200 and answers[0].headers["content-type"] == "image/png"
        assert engine.completed == 1

        # 3. a queued job runs to the end with nobody connected
        r = httpx.post(srv.url + "/queue/faceid", json={**body, "seed": 8}, headers=headers, timeout=10)
        assert r.status_code == 200
        queued = r.json()["request_id"]
        done = _wait(lambda: (j := service.jobs.get(queued)).status.finished and j, timeout=30)
        assert done.status == JobStatus.COMPLETED and not done.cancel_requested and engine.completed == 2
