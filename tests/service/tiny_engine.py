"""A tiny engine for service and API tests (no model): solid-colour images from the seed.

It validates its references with faceanchor.imageio.load_image, treats a single-colour photo as
"no face" (NoFaceError), reports progress per step and honours cancel between steps.
``factory(settings)`` is importable for ``faceanchor serve --engine path/to/tiny_engine.py:factory``;
TINY_STEP_DELAY (seconds per step) and TINY_RUN_LOG (a file each finished run appends a line to)
come from the environment there.
"""

from __future__ import annotations

import os
import random
import threading
import time

from PIL import Image

from faceanchor.errors import Cancelled, InvalidInputError, NoFaceError
from faceanchor.imageio import load_image
from faceanchor.types import GeneratedImage, GenerationRequest, GenerationResult, ProgressEvent


class TinyEngine:
    def __init__(self, step_delay: float = 0.0, size: int = 32, run_log: str | None = None, crash: bool = False):
        self.step_delay = step_delay
        self.size = size
        self.run_log = run_log
        self.crash = crash
        self.calls = 0
        self.completed = 0
        self.started = threading.Event()
        self._lock = threading.Lock()

    def generate(self, request: GenerationRequest, on_progress=None, cancel=None) -> GenerationResult:
        with self._lock:
            self.calls += 1
        self.started.set()
        t0 = time.perf_counter()
        refs = request.references
        if not refs and request.face_embedding is None:
            raise InvalidInputError("a face photo or an embedding is required")
        for i, ref in enumerate(refs):
            img = load_image(ref, name=f"reference {i}")
            lo, hi = img.convert("L").getextrema()
            if lo == hi:
                raise NoFaceError(f"no face found in reference {i}")
        if self.crash:
            raise RuntimeError("the tiny engine was told to crash")
        seed = request.seed if request.seed != -1 else random.randrange(2**31)
        steps = request.steps
        images = []
        for s in range(request.samples):
            for step in range(steps):
                if cancel is not None and cancel():
                    raise Cancelled("cancelled between steps")
                if self.step_delay:
                    time.sleep(self.step_delay)
                if on_progress is not None:
                    on_progress(ProgressEvent("denoise", step + 1, steps, sample=s))
            rng = random.Random(seed + s)
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            w = request.width or self.size
            h = request.height or self.size
            images.append(GeneratedImage(Image.new("RGB", (w, h), colour), seed + s, identity_score=round(0.5 + (seed + s) % 7 / 20, 4)))
        with self._lock:
            self.completed += 1
        if self.run_log:
            with open(self.run_log, "a") as f:
                f.write(f"{os.getpid()} {seed}\n")
        return GenerationResult(images=images, seed=seed, params=request.public_params(), models={"tiny": "1"},
                                timings={"denoise": time.perf_counter() - t0})


def factory(settings) -> TinyEngine:  # noqa: ANN001
    return TinyEngine(step_delay=float(os.environ.get("TINY_STEP_DELAY", "0")), run_log=os.environ.get("TINY_RUN_LOG"))


class BatchingTinyEngine(TinyEngine):
    """The tiny engine with the batched worker's calls: ``batch_key`` (steps and size; a prompt
    starting with "alone" runs alone) and ``generate_many``, which steps every request of a batch
    together (per-request progress and cancel; all cancelled stops the call) and gives each the
    image its own ``generate`` would. ``fail_batches``: the shared call raises (the worker must
    then run the jobs one by one). ``batches`` records each call's size."""

    def __init__(self, *args, fail_batches: bool = False, **kw):
        super().__init__(*args, **kw)
        self.fail_batches = fail_batches
        self.batches: list[int] = []

    def batch_key(self, request: GenerationRequest):
        return None if request.prompt.startswith("alone") else (request.steps, request.width, request.height)

    def generate_many(self, requests, on_progress=None, cancel=None):
        n = len(requests)
        on_progress = on_progress or [None] * n
        cancel = [c or (lambda: False) for c in (cancel or [None] * n)]
        with self._lock:
            self.batches.append(n)
        self.started.set()
        if self.fail_batches:
            raise RuntimeError("the tiny engine's batch failed")
        out: list = [None] * n
        for i, request in enumerate(requests):
            try:
                for k, ref in enumerate(request.references):
                    lo, hi = load_image(ref, name=f"reference {k}").convert("L").getextrema()
                    if lo == hi:
                        raise NoFaceError(f"no face found in reference {k}")
            except (InvalidInputError, NoFaceError) as e:
                out[i] = e
        live = [i for i in range(n) if out[i] is None]
        steps = max((requests[i].steps for i in live), default=0)
        for step in range(steps):
            if all(cancel[i]() for i in live):
                raise Cancelled("every request of the batch was cancelled")
            if self.step_delay:
                time.sleep(self.step_delay)
            for i in live:
                if not cancel[i]() and on_progress[i] is not None:
                    on_progress[i](ProgressEvent("denoise", step + 1, steps))
        for i in live:
            if cancel[i]():
                out[i] = Cancelled("cancelled while its batch ran")
                continue
            res = TinyEngine.generate(self, requests[i])
            res.timings["batch_requests"] = float(len(live))
            out[i] = res
        return out
