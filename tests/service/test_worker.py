"""Workers and the durable queue: leases, recovery after a dead worker, exactly-once results,
cancel through the database flag, deadlines, poison jobs, restart, webhooks — on SQLite and on
PostgreSQL (``db_url``)."""

import io
import json
import threading
import time

import pytest
from local_server import LocalServer
from PIL import Image
from sqlalchemy import update
from tiny_engine import TinyEngine

from faceanchor.config import Settings
from faceanchor.service.runtime import Service
from faceanchor.service.webhook import WebhookSender, verify_signature
from faceanchor.service.worker import Worker
from faceanchor.store.db import Database
from faceanchor.store.files import FileStore
from faceanchor.store.jobs import Job, JobStore
from faceanchor.types import JobStatus


def face() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def settings(tmp_path, db_url):
    return Settings(home=tmp_path, job_lease_seconds=0.4, webhook_backoff_seconds=0.01, allow_private_urls=True,
                    database_url=db_url)


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("condition never became true")


def test_dead_workers_job_is_leased_again_and_finishes_once(settings):
    svc = Service(settings, engine=TinyEngine())
    job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 2, "seed": 4})
    # a worker claims it and dies without heartbeats
    dead = svc.jobs.claim("dead-worker", lease_seconds=0.3)
    assert dead.id == job.id and dead.attempts == 1
    svc.start(background=False)
    try:
        done = wait_for(lambda: (j := svc.jobs.get(job.id)) and j.status.finished and j)
        assert done.status == JobStatus.COMPLETED and done.attempts == 2
        assert not done.lease_owner.startswith("dead")
        # the dead worker's late write is refused: clients keep seeing the first outcome
        assert svc.jobs.complete(job.id, "dead-worker", {"images": []}) is False
        assert svc.jobs.fail(job.id, "dead-worker", {"type": "x", "message": "y", "status": 500}) is False
        assert svc.jobs.get(job.id).result == done.result
    finally:
        svc.stop()


def test_stalled_worker_loses_lease_and_its_result_is_discarded(tmp_path, db_url):
    db = Database(db_url)
    db.create_all()
    jobs, files = JobStore(db), FileStore(tmp_path / "files")
    svc_settings = Settings(home=tmp_path, database_url=db_url)
    svc = Service(svc_settings, engine=TinyEngine(), database=db, files=files)
    job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 40, "seed": 1})
    slow = TinyEngine(step_delay=0.05)
    w1 = Worker("slow", slow, jobs, files, lease_seconds=5)
    t = threading.Thread(target=w1.run_once)
    t.start()
    assert slow.started.wait(5)
    # The lease runs out (as if w1's heartbeats stalled) and another worker takes the job.
    with db.write() as s:
        s.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=time.time() - 1))
    fast = TinyEngine()
    w2 = Worker("fast", fast, jobs, files, lease_seconds=5)
    assert w2.run_once().id == job.id
    t.join(10)
    final = jobs.get(job.id)
    assert final.status == JobStatus.COMPLETED and final.lease_owner.startswith("fast:")
    assert fast.completed == 1 and slow.completed == 0  # w1 noticed the lost lease and stopped
    assert final.attempts == 2


def test_cancel_mid_run_through_the_database_flag(settings):
    engine = TinyEngine(step_delay=0.02)
    svc = Service(settings, engine=engine)
    svc.start(background=False)
    try:
        job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 100})
        wait_for(lambda: engine.started.is_set())
        # another process would only see the database: use a separate JobStore on the same file
        other = JobStore(Database(settings.resolved_database_url()))
        assert other.request_cancel(job.id) == "CANCELLATION_REQUESTED"
        done = wait_for(lambda: (j := svc.jobs.get(job.id)) and j.status.finished and j)
        assert done.status == JobStatus.CANCELLED and engine.completed == 0
    finally:
        svc.stop()


def test_poison_job_fails_after_max_attempts(db_url):
    db = Database(db_url)
    db.create_all()
    jobs = JobStore(db)
    job, _ = jobs.submit("instantid", {"request": {}})
    for i in range(3):
        claimed = jobs.claim(f"w{i}", lease_seconds=0.01, max_attempts=3)
        assert claimed.id == job.id
        time.sleep(0.02)
    assert jobs.claim("w9", lease_seconds=1, max_attempts=3) is None
    final = jobs.get(job.id)
    assert final.status == JobStatus.FAILED and final.error["type"] == "worker_crashed"


def test_restart_loses_nothing_accepted(settings):
    first = Service(settings, engine=TinyEngine())
    ids = [first.submit("instantid", {"face_image": face(), "num_inference_steps": 1, "seed": i})[0].id for i in range(5)]
    first.stop()  # never started: the jobs only exist in the database
    second = Service(settings, engine=TinyEngine())
    second.start(background=False)
    try:
        for job_id in ids:
            assert wait_for(lambda: second.jobs.get(job_id).status == JobStatus.COMPLETED)
        assert second.jobs.counts()["COMPLETED"] == 5
    finally:
        second.stop()


def test_graceful_stop_hands_running_job_back(settings):
    engine = TinyEngine(step_delay=0.02)
    svc = Service(settings, engine=engine)
    svc.start(background=False)
    job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 100})
    wait_for(lambda: engine.started.is_set())
    svc.stop()
    back = JobStore(Database(settings.resolved_database_url())).get(job.id)
    assert back.status == JobStatus.IN_QUEUE and back.attempts == 0


def test_inputs_are_stored_content_addressed_not_inline(settings):
    svc = Service(settings, engine=TinyEngine())
    data = face()
    job, _ = svc.submit("instantid", {"face_image": data, "face_images": [data]})
    ref = job.request["request"]["face_image"]
    assert set(ref) == {"$file"} and svc.files.get(ref["$file"], "inputs") == data
    assert job.request["request"]["face_images"] == [ref]
    assert "iVBOR" not in json.dumps(job.request)


def test_webhook_signed_retried_on_503_then_delivered(settings):
    with LocalServer() as server:
        server.post_statuses = [503, 429]
        svc = Service(settings, engine=TinyEngine())
        svc.start(background=False)
        try:
            job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 1, "seed": 3},
                                webhook_url=server.url + "/hook", base_url="http://api.test")
            wait_for(lambda: svc.jobs.get(job.id).webhook_state == "delivered")
            assert len(server.posts) == 3 and svc.jobs.get(job.id).webhook_attempts == 3
            _path, headers, body = server.posts[-1]
            secret = (settings.data_dir / "webhook_secret").read_text().strip()
            assert verify_signature(secret, headers["X-Faceanchor-Timestamp"], body, headers["X-Faceanchor-Signature"])
            assert not verify_signature(secret, headers["X-Faceanchor-Timestamp"], body + b" ", headers["X-Faceanchor-Signature"])
            payload = json.loads(body)
            assert payload["request_id"] == job.id and payload["status"] == "OK"
            assert payload["payload"]["images"][0]["url"].startswith("http://api.test/files/")
        finally:
            svc.stop()


def test_webhook_not_retried_on_4xx_and_retried_on_network_errors(db_url):
    db = Database(db_url)
    db.create_all()
    jobs = JobStore(db)
    with LocalServer() as server:
        server.post_statuses = [400]
        job, _ = jobs.submit("instantid", {"request": {}}, webhook_url=server.url + "/hook")
        jobs.claim("w", 10)
        jobs.fail(job.id, jobs.get(job.id).lease_owner, {"type": "no_face", "message": "no face", "status": 422})
        sender = WebhookSender(jobs, "s3cret", max_attempts=4, backoff_seconds=0.0, allow_private=True)
        assert sender.deliver(job.id) == "failed"
        assert len(server.posts) == 1 and json.loads(server.posts[0][2])["error"]["type"] == "no_face"
    calls = []

    def flaky(url, body, headers, **kw):
        from faceanchor.service.fetch import UrlFetchError

        calls.append(url)
        raise UrlFetchError("connection refused")

    job2, _ = jobs.submit("instantid", {"request": {}}, webhook_url="http://127.0.0.1:9/hook")
    jobs.claim("w2", 10)
    jobs.complete(job2.id, jobs.get(job2.id).lease_owner, {"images": []})
    sender = WebhookSender(jobs, "s3cret", max_attempts=3, backoff_seconds=0.0, post=flaky)
    assert sender.deliver(job2.id) == "failed" and len(calls) == 3
    # refused addresses are never retried
    job3, _ = jobs.submit("instantid", {"request": {}}, webhook_url="http://169.254.169.254/hook")
    jobs.claim("w3", 10)
    jobs.complete(job3.id, jobs.get(job3.id).lease_owner, {"images": []})
    assert WebhookSender(jobs, "s", max_attempts=3, backoff_seconds=0.0).deliver(job3.id) == "failed"
