"""ComfyUI's progress bar and interrupt, through a stand-in ``comfy`` package in sys.modules
with the same names and behaviour as ComfyUI's (ProgressBar.update_absolute; the interrupt flag
read by processing_interrupted and cleared by throw_exception_if_processing_interrupted)."""

from __future__ import annotations

import sys
import threading
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from photos import small_copy  # noqa: E402

from faceanchor.comfyui.nodes import FaceAnalysis, Generate, LoadEngine  # noqa: E402
from faceanchor.comfyui.widgets import request_widgets  # noqa: E402
from faceanchor.errors import Cancelled  # noqa: E402


class FakeComfy:
    def __init__(self):
        self.updates: list[tuple[int, int]] = []
        self.flag = False
        self.lock = threading.RLock()
        self.on_update = None
        fake = self

        class InterruptProcessingException(Exception):
            pass

        class ProgressBar:
            def __init__(self, total, node_id=None):
                self.total, self.current = total, 0

            def update_absolute(self, value, total=None, preview=None):
                if total is not None:
                    self.total = total
                self.current = value
                fake.updates.append((value, self.total))
                if fake.on_update:
                    fake.on_update(value, self.total)

        def processing_interrupted():
            with fake.lock:
                return fake.flag

        def throw_exception_if_processing_interrupted():
            with fake.lock:
                if fake.flag:
                    fake.flag = False
                    raise InterruptProcessingException()

        self.Interrupt = InterruptProcessingException
        self.comfy = types.ModuleType("comfy")
        self.comfy.__path__ = []
        self.utils = types.ModuleType("comfy.utils")
        self.utils.ProgressBar = ProgressBar
        self.mm = types.ModuleType("comfy.model_management")
        self.mm.InterruptProcessingException = InterruptProcessingException
        self.mm.processing_interrupted = processing_interrupted
        self.mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
        self.comfy.utils, self.comfy.model_management = self.utils, self.mm


@pytest.fixture
def comfy(monkeypatch):
    fake = FakeComfy()
    monkeypatch.setitem(sys.modules, "comfy", fake.comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", fake.utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", fake.mm)
    return fake


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    from faceanchor.comfyui.images import to_images
    from faceanchor.imageio import load_image

    (engine,) = LoadEngine().load("local", "tiny", "dlib", "cpu", str(tmp_path_factory.mktemp("home")), "", "")
    (identity, *_) = FaceAnalysis().analyse(engine, to_images([load_image(small_copy("obama.jpg"))]), 0, "instantid")
    return engine, identity


def generate(engine, identity, **kw):
    widgets = {k: v[1]["default"] for k, v in request_widgets().items()}
    widgets.update(dict(prompt="a portrait", width=64, height=64, seed=5), **kw)
    return Generate().generate(engine, identity, "instantid", **widgets)


def test_each_denoising_step_updates_comfyuis_progress_bar(comfy, graph):
    images, *_ = generate(*graph, num_inference_steps=3)
    assert images.shape[0] == 1
    assert [u for u in comfy.updates if u[1] == 3] == [(1, 3), (2, 3), (3, 3)]


def test_comfyuis_interrupt_cancels_the_job_and_raises_its_exception(comfy, graph):
    def press_cancel(value, total):
        if value == 1:
            with comfy.lock:
                comfy.flag = True  # what ComfyUI's /interrupt sets

    comfy.on_update = press_cancel
    with pytest.raises(comfy.Interrupt):
        generate(*graph, num_inference_steps=6)
    assert max(v for v, t in comfy.updates if t == 6) < 6  # stopped between steps, not run to the end
    assert comfy.flag is False  # cleared, as ComfyUI's throw_exception_if_processing_interrupted does
    comfy.on_update = None
    comfy.updates.clear()
    images, *_ = generate(*graph, num_inference_steps=2)  # the engine is free again
    assert images.shape[0] == 1 and comfy.updates[-1] == (2, 2)


def test_an_interrupt_set_before_the_job_stops_it_before_any_step(comfy, graph):
    comfy.flag = True
    with pytest.raises(comfy.Interrupt):
        generate(*graph, num_inference_steps=2)
    assert not [u for u in comfy.updates if u[1] == 2 and u[0] > 0]


def test_without_comfyui_progress_is_a_no_op_and_a_cancel_stays_cancelled(monkeypatch, graph):
    from faceanchor.comfyui.progress import Progress, comfy_job, interrupted

    monkeypatch.setitem(sys.modules, "comfy", None)  # `import comfy.utils` raises ImportError
    assert Progress(5).bar is None and interrupted() is False
    with pytest.raises(Cancelled):
        with comfy_job(3):
            raise Cancelled("cancelled during test")


def test_best_of_n_steps_the_bar_per_scored_image_and_honours_the_interrupt(comfy, graph):
    from faceanchor.comfyui.images import to_images
    from faceanchor.comfyui.nodes import BestOfN
    from faceanchor.imageio import load_image

    engine, identity = graph
    face = load_image(small_copy("obama.jpg"))
    batch = to_images([face, face, face])
    best, score, _ = BestOfN().best_of(engine, identity, batch, 1, "instantid")
    assert comfy.updates == [(1, 3), (2, 3), (3, 3)] and best.shape[0] == 1
    comfy.updates.clear()
    comfy.on_update = lambda v, t: setattr(comfy, "flag", True)  # Cancel pressed after the first image
    with pytest.raises(comfy.Interrupt):
        BestOfN().best_of(engine, identity, batch, 1, "instantid")
    assert comfy.updates == [(1, 3)]
