"""Queue throughput with results written in the background vs before the next job starts.

    python benchmarks/writes.py [--weights tiny|dummy] [--size 512] [--steps 2] [--jobs 6] [--rounds 3]
    python benchmarks/writes.py --engine gpu-like --gen-seconds 0.5 --size 1024   # a GPU's time profile

``--engine real`` (default): one :class:`~faceanchor.engine.Engine` (loaded once, dlib face
pack, ``--weights``) serves every round. ``--engine gpu-like``: an engine whose generation
waits ``--gen-seconds`` with the CPU idle (as a CUDA run waits on the device) and returns the
face photo resized to ``--size`` with per-seed noise (a photo-like PNG to encode), to show the
overlap a GPU server gets; the encoding, trust steps and file writes are the real ones. Each round runs ``--jobs`` queued generation jobs through the in-process service twice,
interleaved: ``worker_write_queue=0`` (each result encoded — PNG with metadata, watermark — and
stored before the worker claims the next job, the old behaviour) and ``worker_write_queue=1``
(the background writer stores a result while the engine runs the next job). Time runs from
the workers' start to the last job COMPLETED. Prints images/s of both, the median ratio, the
encode+store time of one image measured alone, and each round's figures.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


class GpuLikeEngine:
    """Generation = ``seconds`` of waiting (the GPU's time; the CPU is free), then a photo-like image."""

    def __init__(self, settings, photo: bytes, size: int, seconds: float):  # noqa: ANN001
        import numpy as np
        from PIL import Image

        self.settings, self.seconds = settings, seconds
        self.base = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB").resize((size, size)), dtype=np.int16)

    def generate(self, request, on_progress=None, cancel=None):  # noqa: ANN001
        import numpy as np
        from PIL import Image

        from faceanchor.types import GeneratedImage, GenerationResult

        t0 = time.perf_counter()
        time.sleep(self.seconds)
        rng = np.random.default_rng(request.seed)
        img = np.clip(self.base + rng.integers(-6, 7, self.base.shape), 0, 255).astype(np.uint8)
        return GenerationResult(images=[GeneratedImage(Image.fromarray(img), request.seed, identity_score=0.8)], seed=request.seed,
                                params=request.public_params(), models={"gpu-like": "1"}, timings={"denoise": time.perf_counter() - t0})


def run_queue(engine, home: Path, write_queue: int, photo: bytes, fields: dict, jobs: int) -> float:  # noqa: ANN001
    """Seconds from the worker's start until ``jobs`` queued jobs are COMPLETED."""
    from faceanchor.config import Settings
    from faceanchor.service.runtime import Service
    from faceanchor.types import JobStatus

    settings = Settings(home=home, device=engine.settings.device, worker_write_queue=write_queue)
    svc = Service(settings, engine=engine, poll_interval=0.01)
    ids = [svc.submit("instantid", dict(fields, face_image=photo, seed=i))[0].id for i in range(jobs)]
    t0 = time.perf_counter()
    svc.start(background=False)
    try:
        while True:
            views = [svc.jobs.get(i) for i in ids]
            if all(v.status.finished for v in views):
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
    finally:
        svc.stop()
    bad = [v.status for v in views if v.status != JobStatus.COMPLETED]
    if bad:
        raise SystemExit(f"write_queue={write_queue}: jobs ended {bad}: {[v.error for v in views if v.error]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="real", choices=["real", "gpu-like"])
    ap.add_argument("--gen-seconds", type=float, default=0.5, help="gpu-like: seconds one generation waits")
    ap.add_argument("--weights", default="tiny", choices=["tiny", "dummy"])
    ap.add_argument("--size", type=int, default=512, help="output width and height (multiple of 64)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--photo", default=str(ROOT / "tests" / "data" / "faces" / "obama.jpg"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.service.results import store_result
    from faceanchor.store.files import FileStore
    from faceanchor.types import GenerationRequest

    base = Path(tempfile.mkdtemp(prefix="faceanchor-writes-"))
    settings = Settings(home=base / "engine", device=args.device)
    photo = Path(args.photo).read_bytes()
    if args.engine == "real":
        engine = Engine(settings, weights=args.weights, face_pack="dlib")
    else:
        engine = GpuLikeEngine(settings, photo, args.size, args.gen_seconds)
    fields = dict(prompt="a portrait", width=args.size, height=args.size, num_inference_steps=args.steps)
    t0 = time.perf_counter()
    warm = engine.generate(GenerationRequest(face_image=photo, seed=0, **fields))  # loads every model
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = engine.generate(GenerationRequest(face_image=photo, seed=1, **fields))
    t_gen = time.perf_counter() - t0
    files = FileStore(base / "probe")
    store_result(warm, files, "png", settings)  # the trust steps' first call loads them
    t0 = time.perf_counter()
    store_result(one, files, "png", settings)
    t_store = time.perf_counter() - t0

    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(args.rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)  # interleaved, alternating which goes first
        for wq in order:
            times[wq].append(run_queue(engine, base / f"r{r}-q{wq}", wq, photo, fields, args.jobs))
    print(f"engine={args.engine}{f' ({args.gen_seconds} s per generation)' if args.engine != 'real' else ''} weights={args.weights} size={args.size} steps={args.steps} jobs={args.jobs} rounds={args.rounds} "
          f"device={args.device} threads={args.threads}")
    print(f"first call (loads) {t_load:.2f} s; one generation {t_gen * 1000:.0f} ms; "
          f"encode + trust + store of its image {t_store * 1000:.0f} ms ({t_store / (t_gen + t_store):.0%} of a job)")
    for wq, label in ((0, "stored before the next job (write_queue=0)"), (1, "background writer     (write_queue=1)")):
        med = statistics.median(times[wq])
        print(f"{label}: median {med:.2f} s for {args.jobs} jobs = {args.jobs / med:.2f} images/s   "
              f"rounds {', '.join(f'{t:.2f}' for t in times[wq])}")
    ratios = [a / b for a, b in zip(times[0], times[1])]
    print(f"throughput gain (background / inline): median {statistics.median(ratios):.2f}x   "
          f"per round {', '.join(f'{x:.2f}' for x in ratios)}   "
          f"(upper bound with perfect overlap: {(t_gen + t_store) / max(t_gen, t_store):.2f}x)")


if __name__ == "__main__":
    main()
