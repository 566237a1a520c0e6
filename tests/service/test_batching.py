"""The batched worker (setting worker_batch_max): queued jobs with one batch key run as one engine
call, each with its own lease, heartbeats, progress, cancel and outcome; a failed batch runs its
jobs one by one — on SQLite and on PostgreSQL (``db_url``)."""

import io
import time

import pytest
from PIL import Image
from tiny_engine import BatchingTinyEngine, TinyEngine

from faceanchor.config import Settings
from faceanchor.service.runtime import Service
from faceanchor.store.db import Database
from faceanchor.store.jobs import JobStore
from faceanchor.types import GenerationRequest, JobStatus


def face(colour: bool = False) -> bytes:
    buf = io.BytesIO()
    (Image.new("RGB", (32, 32), (90, 90, 90)) if colour else Image.effect_noise((32, 32), 60).convert("RGB")).save(buf, "PNG")
    return buf.getvalue()


def settings_for(tmp_path, db_url, **kw):
    return Settings(home=tmp_path, job_lease_seconds=0.4, database_url=db_url, **kw)


def wait_done(svc, ids, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        views = [svc.jobs.get(i) for i in ids]
        if all(v.status.finished for v in views):
            return views
        time.sleep(0.02)
    raise AssertionError(f"jobs never finished: {[svc.jobs.get(i).status for i in ids]}")


def submit(svc, n, **kw):
    return [svc.submit("instantid", dict({"face_image": face(), "num_inference_steps": 3, "seed": 10 + i}, **kw))[0].id
            for i in range(n)]


def test_jobs_with_one_key_run_as_one_batch(tmp_path, db_url):
    engine = BatchingTinyEngine()
    svc = Service(settings_for(tmp_path, db_url, worker_batch_max=3), engine=engine)
    same = submit(svc, 4)
    alone = svc.submit("instantid", {"face_image": face(), "prompt": "alone please", "seed": 1})[0].id
    other = submit(svc, 1, num_inference_steps=5)
    svc.start(background=False)
    try:
        views = wait_done(svc, same + [alone] + other)
    finally:
        svc.stop()
    assert all(v.status == JobStatus.COMPLETED for v in views), [v.error for v in views]
    assert engine.batches == [3]  # the first three; the fourth found no partner left, the others differ
    by_id = {v.id: v for v in views}
    for i, jid in enumerate(same):
        r = by_id[jid].result
        assert r["seed"] == 10 + i and by_id[jid].attempts == 1
        assert r["timings"].get("batch_requests") == (3.0 if i < 3 else None)
        assert by_id[jid].progress["step"] == 3
    # each image is its own request's (the tiny engine's colour comes from the seed)
    solo = TinyEngine().generate(GenerationRequest(face_image=face(), num_inference_steps=3, seed=11))
    assert by_id[same[1]].result["images"][0]["seed"] == solo.images[0].seed
    assert by_id[same[1]].result["identity_scores"] == [solo.images[0].identity_score]


def test_batch_max_one_never_batches(tmp_path, db_url):
    engine = BatchingTinyEngine()
    svc = Service(settings_for(tmp_path, db_url), engine=engine)
    ids = submit(svc, 3)
    svc.start(background=False)
    try:
        views = wait_done(svc, ids)
    finally:
        svc.stop()
    assert all(v.status == JobStatus.COMPLETED for v in views)
    assert engine.batches == [] and engine.calls == 3


def test_cancelling_one_job_of_a_batch_leaves_the_others(tmp_path, db_url):
    engine = BatchingTinyEngine(step_delay=0.05)
    svc = Service(settings_for(tmp_path, db_url, worker_batch_max=4), engine=engine)
    ids = submit(svc, 3, num_inference_steps=40)
    svc.start(background=False)
    try:
        assert engine.started.wait(10)
        deadline = time.time() + 10
        while (svc.jobs.get(ids[1]).progress or {}).get("step", 0) < 3 and time.time() < deadline:
            time.sleep(0.02)
        # every claimed job holds its own lease, renewed by its own heartbeat past the lease time
        time.sleep(0.6)
        now = time.time()
        running = [svc.jobs.get(i) for i in ids]
        assert all(v.status == JobStatus.IN_PROGRESS and v.lease_expires_at > now and v.attempts == 1 for v in running)
        assert svc.cancel(ids[1]) is not None
        views = wait_done(svc, ids)
    finally:
        svc.stop()
    by_id = {v.id: v for v in views}
    assert by_id[ids[1]].status == JobStatus.CANCELLED
    assert by_id[ids[0]].status == JobStatus.COMPLETED and by_id[ids[2]].status == JobStatus.COMPLETED
    assert engine.batches == [3]
    # the cancelled job ended at once, while its batch went on for the others
    assert by_id[ids[1]].finished_at < by_id[ids[0]].finished_at - 0.3
    assert by_id[ids[0]].progress["step"] == 40 and by_id[ids[1]].progress["step"] < 40
    assert all(v.attempts == 1 for v in views)


def test_a_failed_batch_runs_its_jobs_one_by_one(tmp_path, db_url):
    engine = BatchingTinyEngine(fail_batches=True)
    svc = Service(settings_for(tmp_path, db_url, worker_batch_max=4), engine=engine)
    ids = submit(svc, 3)
    svc.start(background=False)
    try:
        views = wait_done(svc, ids)
        logs = [m["message"] for m in svc.get(ids[0], with_logs=True).logs]
    finally:
        svc.stop()
    assert engine.batches == [3] and engine.calls == 3
    assert all(v.status == JobStatus.COMPLETED and v.attempts == 1 for v in views)
    assert [v.result["seed"] for v in views] == [10, 11, 12]
    assert any("batch failed" in m for m in logs)


def test_a_job_whose_own_input_fails_fails_alone(tmp_path, db_url):
    engine = BatchingTinyEngine()
    svc = Service(settings_for(tmp_path, db_url, worker_batch_max=4), engine=engine)
    ids = submit(svc, 1) + [svc.submit("instantid", {"face_image": face(colour=True), "num_inference_steps": 3})[0].id] + submit(svc, 1)
    svc.start(background=False)
    try:
        views = wait_done(svc, ids)
    finally:
        svc.stop()
    assert engine.batches == [3]
    assert [v.status for v in views] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]
    assert views[1].error["type"] == "no_face"


def test_claim_matching_takes_only_matching_queued_jobs_up_to_the_limit(tmp_path, db_url):
    db = Database(db_url)
    db.create_all()
    jobs = JobStore(db)
    made = [jobs.submit("instantid", {"request": {"seed": i}}) for i in range(5)]
    made.append(jobs.submit("faceid", {"request": {"seed": 2}}))
    ids = [j.id for j, _ in made]
    first = jobs.claim("w", 5.0)
    assert first.id == ids[0]
    got = jobs.claim_matching("w", 5.0, lambda v: v.request["request"]["seed"] % 2 == 0, limit=5, apps=["instantid"])
    assert [v.id for v in got] == [ids[2], ids[4]]
    assert all(v.status == JobStatus.IN_PROGRESS and v.lease_owner == "w" and v.attempts == 1 for v in got)
    nxt = jobs.claim_matching("w2", 5.0, lambda v: True, limit=1)
    assert [v.id for v in nxt] == [ids[1]] and nxt[0].lease_owner == "w2"
    assert jobs.get(ids[3]).status == JobStatus.IN_QUEUE and jobs.get(ids[5]).status == JobStatus.IN_QUEUE
    # a job whose request the key cannot read is left to claim()
    assert jobs.claim_matching("w", 5.0, lambda v: v.request["missing"], limit=5) == []



def test_a_job_past_its_time_limit_or_missing_its_input_ends_alone(tmp_path, db_url):
    engine = BatchingTinyEngine(step_delay=0.05)
    svc = Service(settings_for(tmp_path, db_url, worker_batch_max=4), engine=engine)
    ids = submit(svc, 1, num_inference_steps=30)
    ids.append(svc.submit("instantid", {"face_image": face(), "num_inference_steps": 30, "seed": 50}, timeout=0.4)[0].id)
    gone = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 30, "seed": 60})[0]
    svc.files.delete(gone.request["request"]["face_image"]["$file"], "inputs")
    ids += [gone.id] + submit(svc, 1, num_inference_steps=30)
    svc.start(background=False)
    try:
        views = wait_done(svc, ids)
    finally:
        svc.stop()
    assert engine.batches == [3]  # the job without its input never reached the engine
    assert [v.status for v in views] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.FAILED, JobStatus.COMPLETED]
    assert views[1].error["type"] == "timeout" and views[2].error["type"] == "input_missing"
    assert views[1].finished_at < views[0].finished_at - 0.3 and views[2].finished_at < views[0].finished_at
