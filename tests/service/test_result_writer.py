"""Results encoded and stored off the critical path: the worker starts the next job while the
previous one's images are written; a job is COMPLETED only once its files are stored."""

import io
import random
import threading
import time

import pytest
from PIL import Image
from tiny_engine import TinyEngine

from faceanchor.config import Settings
from faceanchor.imageio import read_metadata
from faceanchor.service import results
from faceanchor.service.result_writer import ResultWriter
from faceanchor.service.runtime import Service
from faceanchor.types import JobStatus


def face() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def wait_for(pred, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("condition never became true")


def tiny_colour(seed: int) -> tuple[int, int, int]:
    rng = random.Random(seed)  # TinyEngine's colour of the image with this seed
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


class GatedEncoder:
    """encode_image that waits for ``gate`` (a slow encoder) and can fail chosen calls."""

    def __init__(self, fail_seeds=()):
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail_seeds = set(fail_seeds)
        self.real = results.encode_image

    def __call__(self, img, fmt="png", metadata=None, **kw):
        self.entered.set()
        assert self.gate.wait(20)
        if metadata["seed"] in self.fail_seeds:
            raise OSError("no space left on device")
        return self.real(img, fmt, metadata, **kw)


@pytest.fixture
def settings(tmp_path):
    return Settings(home=tmp_path, job_lease_seconds=0.4, watermark=False)


def submit(svc, seed, steps=2):
    job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": steps, "seed": seed})
    return job.id


def outputs(svc) -> list:
    return [p for p in (svc.files.root / "outputs").rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]


def test_next_job_denoises_while_the_previous_result_is_written(settings, monkeypatch):
    enc = GatedEncoder()
    monkeypatch.setattr(results, "encode_image", enc)
    engine = TinyEngine()
    svc = Service(settings, engine=engine)
    first, second = submit(svc, 11), submit(svc, 22)
    svc.start(background=False)
    try:
        assert enc.entered.wait(10)
        # job 1's encoding is held; the engine has already run job 2 (both generate() calls done)
        wait_for(lambda: engine.completed == 2)
        assert svc.jobs.get(first).status == JobStatus.IN_PROGRESS  # not COMPLETED before its file exists
        assert outputs(svc) == []
        time.sleep(0.6)  # past the 0.4 s lease: heartbeats keep the waiting job's lease
        assert svc.jobs.get(first).status == JobStatus.IN_PROGRESS and svc.jobs.get(first).attempts == 1
        enc.gate.set()
        done = [wait_for(lambda j=j: (v := svc.jobs.get(j)) and v.status.finished and v) for j in (first, second)]
    finally:
        enc.gate.set()
        svc.stop()
    assert [d.status for d in done] == [JobStatus.COMPLETED, JobStatus.COMPLETED]
    for d, seed in zip(done, (11, 22)):
        (img,) = d.result["images"]
        data = svc.files.get(img["file_id"], "outputs")
        assert data is not None and read_metadata(data)["seed"] == seed
        assert Image.open(io.BytesIO(data)).convert("RGB").getpixel((0, 0)) == tiny_colour(seed)
        assert d.attempts == 1


def test_a_failed_write_fails_that_job_only(settings, monkeypatch):
    enc = GatedEncoder(fail_seeds={11})
    enc.gate.set()
    monkeypatch.setattr(results, "encode_image", enc)
    svc = Service(settings, engine=TinyEngine())
    first, second = submit(svc, 11), submit(svc, 22)
    svc.start(background=False)
    try:
        done = [wait_for(lambda j=j: (v := svc.jobs.get(j)) and v.status.finished and v) for j in (first, second)]
    finally:
        svc.stop()
    assert done[0].status == JobStatus.FAILED
    assert done[0].error["type"] == "output_write_failed" and "OSError" in done[0].error["message"]
    assert done[1].status == JobStatus.COMPLETED
    assert [read_metadata(svc.files.get(i["file_id"], "outputs"))["seed"] for i in done[1].result["images"]] == [22]
    assert len(outputs(svc)) == 1  # nothing of the failed job was kept


def test_shutdown_drains_the_pending_writes(settings, monkeypatch):
    enc = GatedEncoder()
    monkeypatch.setattr(results, "encode_image", enc)
    engine = TinyEngine()
    svc = Service(settings, engine=engine)
    first = submit(svc, 11)
    svc.start(background=False)
    assert enc.entered.wait(10)
    threading.Timer(0.3, enc.gate.set).start()
    svc.stop()  # the worker stops while job 1's result waits in the writer
    final = svc.jobs.get(first)
    assert final.status == JobStatus.COMPLETED and svc.files.get(final.result["images"][0]["file_id"], "outputs")


def test_cancel_while_writing_cancels_that_job(settings, monkeypatch):
    enc = GatedEncoder()
    monkeypatch.setattr(results, "encode_image", enc)
    svc = Service(settings, engine=TinyEngine())
    job, _ = svc.submit("instantid", {"face_image": face(), "num_inference_steps": 1, "seed": 5, "samples": 2})
    svc.start(background=False)
    try:
        assert enc.entered.wait(10)
        assert svc.jobs.request_cancel(job.id) == "CANCELLATION_REQUESTED"
        time.sleep(0.3)  # the cancel poll sees the flag
        enc.gate.set()
        final = wait_for(lambda: (v := svc.jobs.get(job.id)) and v.status.finished and v)
    finally:
        enc.gate.set()
        svc.stop()
    assert final.status == JobStatus.CANCELLED and outputs(svc) == []


def test_zero_write_queue_stores_before_the_next_job(tmp_path, monkeypatch):
    enc = GatedEncoder()
    monkeypatch.setattr(results, "encode_image", enc)
    engine = TinyEngine()
    svc = Service(Settings(home=tmp_path, watermark=False, worker_write_queue=0), engine=engine)
    submit(svc, 11), submit(svc, 22)
    svc.start(background=False)
    try:
        assert enc.entered.wait(10)
        time.sleep(0.3)
        assert engine.calls == 1  # job 2 waits for job 1's write
    finally:
        enc.gate.set()
        svc.stop()


def test_writer_is_bounded_ordered_and_drains_on_close():
    order, gate = [], threading.Event()
    w = ResultWriter("t", capacity=1)
    w.submit(lambda: (gate.wait(5), order.append(1)))
    wait_for(lambda: w._queue.empty())  # the first is being written
    w.submit(lambda: order.append(2))  # waits in the queue (capacity 1)
    third = threading.Thread(target=w.submit, args=(lambda: order.append(3),))
    third.start()
    time.sleep(0.1)
    assert third.is_alive() and w.pending == 3  # the third submit blocks: the queue is full
    gate.set()
    third.join(5)
    assert w.close(5) and order == [1, 2, 3] and w.pending == 0
    with pytest.raises(RuntimeError):
        w.submit(lambda: None)


def test_a_write_that_raises_does_not_stop_the_writer():
    done = []
    w = ResultWriter("t", capacity=2)
    w.submit(lambda: 1 / 0)
    w.submit(lambda: done.append("after"))
    assert w.wait_idle(5) and done == ["after"]
    assert w.close(5)
