"""Cancellation lands within a second at every stage: a tiny engine is made slow on purpose at
one stage (a module or a call that sleeps and never looks at the cancel flag), a cancel is sent
while it is there, and the time until :class:`Cancelled` comes out is measured."""

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanchor import cancel as cancellation
from faceanchor.character.edit import edit_face
from faceanchor.config import Settings
from faceanchor.engine import Engine
from faceanchor.errors import Cancelled
from faceanchor.types import GenerationRequest

sys.path.insert(0, str(Path(__file__).parent))
from photos import small_copy  # noqa: E402

FACE = small_copy("obama.jpg", 200)
FIELDS = dict(prompt="a portrait", width=64, height=64, num_inference_steps=3, seed=1)
BOUND = 1.0  # seconds from the cancel to Cancelled


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = Engine(Settings(home=tmp_path_factory.mktemp("home"), device="cpu"), weights="tiny", face_pack="dlib")
    e.generate(GenerationRequest(face_image=FACE, **FIELDS))  # load once
    return e


class Slow:
    """Makes calls slow: each sleeps ``delay`` (never checking any flag), then runs the original."""

    def __init__(self, monkeypatch, delay: float):
        self.mp, self.delay = monkeypatch, delay
        self.entered = threading.Event()
        self.calls = 0

    def wrap(self, fn, result=None):
        def slow(*a, **k):
            self.entered.set()
            self.calls += 1
            time.sleep(self.delay)
            return fn(*a, **k) if result is None else result()
        return slow

    def modules(self, root, cls_name: str) -> "Slow":
        n = 0
        for m in root.modules():
            if type(m).__name__ == cls_name:
                self.mp.setattr(m, "forward", self.wrap(m.forward))
                n += 1
        assert n, f"no {cls_name} in {type(root).__name__}"
        return self

    def detector(self, engine) -> "Slow":  # the face detector finds nothing, slowly, at every scale
        an = engine.analyzer("dlib")
        self.mp.setattr(an.detector, "detect", self.wrap(an.detector.detect, result=list))
        return self


def cancel_while(slow: Slow, call) -> tuple[float, BaseException | None, float]:
    """Run ``call(cancel)`` in a thread, cancel once the slow part is entered; (seconds to
    Cancelled, the exception, seconds the slow part alone would have taken at least)."""
    flag = threading.Event()
    out: dict = {}

    def target():
        try:
            call(flag.is_set)
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        out["t"] = time.perf_counter()

    th = threading.Thread(target=target, daemon=True)
    th.start()
    assert slow.entered.wait(60), "the slow stage was never reached"
    time.sleep(0.05)
    t0 = time.perf_counter()
    flag.set()
    th.join(30)
    assert not th.is_alive()
    return out["t"] - t0, out.get("error"), slow.calls * slow.delay


def pipe(engine):
    (loaded,) = engine._loaded.values()
    return loaded.pipe


def assert_cancelled(took, err, where):
    assert isinstance(err, Cancelled), f"expected Cancelled, got {err!r}"
    assert took <= BOUND, f"cancel during {where} took {took:.2f} s"
    print(f"{where}: cancel landed in {took * 1000:.0f} ms")


def test_cancel_during_face_analysis(engine, monkeypatch):
    slow = Slow(monkeypatch, 0.4).detector(engine)  # 2 photos x 3 scales x 0.4 s uncancelled
    req = GenerationRequest(face_images=[FACE, small_copy("obama2.jpg", 200)], **FIELDS)
    took, err, _ = cancel_while(slow, lambda c: engine.generate(req, cancel=c))
    assert_cancelled(took, err, "face analysis")
    assert slow.calls < 6  # it stopped between two detection scales


@pytest.mark.parametrize("stage, component, cls", [
    ("prompt encoding", "text_encoder", "CLIPEncoderLayer"),
    ("a denoising step", "unet", "ResnetBlock2D"),
    ("VAE decode", "vae.decoder", "ResnetBlock2D"),
])
def test_cancel_inside_a_model_call(engine, monkeypatch, stage, component, cls):
    root = pipe(engine)
    for part in component.split("."):
        root = getattr(root, part)
    slow = Slow(monkeypatch, 0.3).modules(root, cls)
    steps = []
    req = GenerationRequest(face_image=FACE, **FIELDS)
    took, err, _ = cancel_while(slow, lambda c: engine.generate(req, on_progress=lambda e: steps.append(e), cancel=c))
    assert_cancelled(took, err, stage)
    if stage == "a denoising step":  # inside the first step: not even one step finished
        assert not [e for e in steps if e.stage == "denoise" and e.step]


def test_cancel_during_vae_encode_of_an_edit(engine, monkeypatch):
    slow = Slow(monkeypatch, 0.3).modules(pipe(engine).vae.encoder, "ResnetBlock2D")
    req = GenerationRequest(face_image=FACE, **FIELDS)
    target = Image.open(FACE).convert("RGB")
    took, err, _ = cancel_while(slow, lambda c: edit_face(engine, req, target, cancel=c))
    assert_cancelled(took, err, "VAE encode")


def test_cancel_during_scoring(engine, monkeypatch):
    ident = engine.identity(GenerationRequest(face_image=FACE, **FIELDS))
    req = GenerationRequest(face_embedding=ident.reference.tolist(), face_kps=ident.kps.tolist(),
                            face_image_size=list(ident.image_size), face_embedding_space="dlib", samples=3, **FIELDS)
    slow = Slow(monkeypatch, 0.4).detector(engine)  # only the scoring detects faces here
    took, err, _ = cancel_while(slow, lambda c: engine.generate(req, cancel=c))
    assert_cancelled(took, err, "scoring")
    assert slow.calls < 6


def test_the_scope_reaches_code_without_a_cancel_argument():
    flag = threading.Event()
    with cancellation.scope(flag.is_set):
        cancellation.checkpoint("nothing yet")
        flag.set()
        with pytest.raises(Cancelled, match="during encoding"):
            cancellation.checkpoint("encoding")
        with cancellation.scope(lambda: False):  # an inner scope keeps the outer one's check
            assert cancellation.requested()
    cancellation.checkpoint("outside any scope")  # no scope: never raises


def test_hooks_are_removed_after_the_call(engine):
    engine.generate(GenerationRequest(face_image=FACE, **FIELDS))
    unet = pipe(engine).unet
    assert not any(m._forward_pre_hooks for m in unet.modules())


def test_the_worker_marks_the_job_cancelled_inside_a_model_call_and_takes_the_next_at_once(engine, monkeypatch, tmp_path):
    from faceanchor.service.runtime import Service
    from faceanchor.types import JobStatus

    slow = Slow(monkeypatch, 0.3).modules(pipe(engine).vae.decoder, "ResnetBlock2D")
    svc = Service(Settings(home=tmp_path, job_lease_seconds=5), engine=engine)
    svc.start(background=False)
    photo = Path(FACE).read_bytes()

    def finished(job_id):
        deadline = time.time() + 30
        while time.time() < deadline:
            j = svc.jobs.get(job_id)
            if j.status.finished:
                return j
            time.sleep(0.01)
        raise AssertionError("the job never finished")

    try:
        job, _ = svc.submit("instantid", {"face_image": photo, **FIELDS})
        nxt, _ = svc.submit("instantid", {"face_image": photo, **FIELDS, "num_inference_steps": 1})
        assert slow.entered.wait(60)
        t0 = time.perf_counter()
        assert svc.cancel(job.id) == "CANCELLATION_REQUESTED"
        done = finished(job.id)
        took = time.perf_counter() - t0
        assert done.status == JobStatus.CANCELLED and done.result is None and took <= BOUND, took
        monkeypatch.undo()  # the next job runs at normal speed
        assert finished(nxt.id).status == JobStatus.COMPLETED
    finally:
        svc.stop()
