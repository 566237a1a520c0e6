"""Batched worker benchmark: separate requests as one pipeline call, measured interleaved.

Two measurements on one engine (tiny or dummy full-size seeded weights, no downloads):

* ``engine``: ``n`` separate InstantID requests (own seeds, prompts, adapter strengths) run one
  by one with ``Engine.generate`` vs once as ``Engine.generate_many`` (one pipeline call):
  images/s of each, their ratio (issue 14 target on a GPU at batch 4: >= 1.5x) and the largest
  difference between a batched image and the same request alone (float tolerance);
* ``queue``: ``--jobs`` jobs queued at once, drained by one worker with ``worker_batch_max`` 1
  (off) vs ``--cap`` (on): queue throughput (images/s, first submit to last result) and per-job
  latency (submit to result: median and worst), in ``--rounds`` rounds alternating the order.

:func:`engine_batch_case` is this benchmark's engine-level case; ``benchmarks/gpu.py``'s ``batched_b4`` case measures the same on a GPU.

    python benchmarks/batching.py --weights tiny --device cpu --size 64 --steps 2
    python benchmarks/batching.py --weights dummy --device cuda --size 1024 --steps 30 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("obama.jpg", "biden.jpg", "obama2.jpg", "obama3.jpg")


def photos(width: int = 360) -> list[Path]:
    """The test photos, reduced to ``width`` pixels wide (0: the originals): face analysis is
    per request either way, and the full-size photos make it most of a tiny-weights run."""
    from PIL import Image

    src = ROOT / "tests" / "data" / "faces"
    if not width:
        return [src / n for n in NAMES]
    out = []
    for n in NAMES:
        dst = Path(tempfile.gettempdir()) / f"faceanchor-bench-{width}-{n}"
        if not dst.exists():
            im = Image.open(src / n).convert("RGB")
            im.resize((width, round(im.height * width / im.width))).save(dst)
        out.append(dst)
    return out


def requests_for(n: int, size: int, steps: int, photo_width: int = 360, **kw: Any) -> list[Any]:
    """``n`` separate requests that share a batch key: own face, seed, prompt and adapter strength."""
    from faceanchor.types import GenerationRequest

    faces = photos(photo_width)
    prompts = ["a portrait photo, studio light", "an oil painting of a person", "a pencil sketch", "a photo at the beach"]
    return [
        GenerationRequest(face_image=str(faces[i % len(faces)]), prompt=prompts[i % len(prompts)], seed=100 + i, width=size,
                          height=size, num_inference_steps=steps, adapter_strength=round(0.6 + 0.1 * (i % 4), 2), **kw)
        for i in range(n)
    ]


def _sync(engine: Any) -> None:
    import torch

    if str(engine.device).startswith("cuda"):
        torch.cuda.synchronize()


def engine_batch_case(engine: Any, *, size: int, steps: int, n: int = 4, repeat: int = 2, photo_width: int = 360,
                      **kw: Any) -> dict[str, Any]:
    """``n`` requests one by one vs one ``generate_many`` call, interleaved ``repeat`` times after a
    warm-up of each; medians, images/s, the ratio and max |Δ| (pixels in [0, 1])."""
    import numpy as np

    reqs = requests_for(n, size, steps, photo_width, **kw)
    for r in reqs:  # warm-up: models, face analysis caches, kernels
        engine.generate(r)
    engine.generate_many(reqs)
    times: dict[str, list[float]] = {"one_by_one": [], "batch": []}
    denoise: dict[str, list[float]] = {"one_by_one": [], "batch": []}
    last: dict[str, list[Any]] = {}
    for k in range(repeat):
        for side in (("one_by_one", "batch") if k % 2 == 0 else ("batch", "one_by_one")):
            _sync(engine)
            t0 = time.perf_counter()
            if side == "one_by_one":
                out = [engine.generate(r) for r in reqs]
            else:
                out = engine.generate_many(reqs)
                bad = [o for o in out if isinstance(o, Exception)]
                if bad:
                    raise bad[0]
            _sync(engine)
            times[side].append(time.perf_counter() - t0)
            # the denoising loops' time: the sum of the separate calls, the one shared call
            denoise[side].append(sum(o.timings.get("denoise", 0.0) for o in out) if side == "one_by_one" else out[0].timings.get("denoise", 0.0))
            last[side] = out
    delta = max(
        float(np.abs(np.asarray(a.image, np.float32) - np.asarray(b.image, np.float32)).max()) / 255.0
        for ra, rb in zip(last["one_by_one"], last["batch"]) for a, b in zip(ra.images, rb.images)
    )
    one, bat = statistics.median(times["one_by_one"]), statistics.median(times["batch"])
    images = sum(len(r.images) for r in last["batch"])
    return {"requests": n, "size": size, "steps": steps, "one_by_one_s": one, "batch_s": bat,
            "images_per_s_one_by_one": images / one, "images_per_s_batch": images / bat, "ratio": one / bat,
            "max_abs_diff": delta, "denoise_one_by_one_s": statistics.median(denoise["one_by_one"]),
            "denoise_batch_s": statistics.median(denoise["batch"]),
            "denoise_ratio": statistics.median(denoise["one_by_one"]) / max(statistics.median(denoise["batch"]), 1e-9), "runs": times}


def _drain(engine: Any, settings_kw: dict[str, Any], reqs: list[Any], cap: int) -> dict[str, Any]:
    """Queue every request at once, start one worker with ``worker_batch_max=cap``, wait for all."""
    from faceanchor.config import Settings
    from faceanchor.service.runtime import Service

    home = Path(tempfile.mkdtemp(prefix="faceanchor-batching-"))
    svc = Service(Settings(home=home, worker_batch_max=cap, **settings_kw), engine=engine)
    ids = []
    for r in reqs:
        body = r.model_dump(exclude_defaults=True)
        body["face_image"] = Path(r.face_image).read_bytes()
        ids.append(svc.submit("instantid", body)[0].id)
    t0 = time.time()
    svc.start(background=False)
    try:
        while True:
            views = [svc.jobs.get(i) for i in ids]
            if all(v.status.finished for v in views):
                break
            time.sleep(0.01)
    finally:
        svc.stop()
    failed = [v.error for v in views if v.result is None]
    if failed:
        raise RuntimeError(f"jobs failed: {failed[0]}")
    end = max(v.finished_at for v in views)
    latencies = [v.finished_at - v.created_at for v in views]
    batched = sum(1 for v in views if (v.result["timings"].get("batch_requests") or 1) > 1)
    images = sum(len(v.result["images"]) for v in views)
    return {"wall_s": end - t0, "images_per_s": images / (end - t0),
            "latency_p50_s": statistics.median(latencies), "latency_max_s": max(latencies), "jobs_batched": batched}


def queue_case(engine: Any, *, size: int, steps: int, jobs: int, cap: int, rounds: int, trust: bool = False,
               photo_width: int = 360) -> dict[str, Any]:
    """Queue throughput and per-job latency, batching off (cap 1) vs on (``cap``), interleaved."""
    settings_kw = dict(device=str(engine.device), watermark=trust)
    reqs = requests_for(jobs, size, steps, photo_width)
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    _drain(engine, settings_kw, reqs[:1], 1)  # warm-up
    for k in range(rounds):
        for side in (("off", "on") if k % 2 == 0 else ("on", "off")):
            runs[side].append(_drain(engine, settings_kw, reqs, 1 if side == "off" else cap))
    med = {side: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for side, rs in runs.items()}
    return {"jobs": jobs, "cap": cap, "off": med["off"], "on": med["on"],
            "throughput_ratio": med["on"]["images_per_s"] / med["off"]["images_per_s"],
            "latency_p50_ratio": med["on"]["latency_p50_s"] / med["off"]["latency_p50_s"], "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", choices=["tiny", "dummy"], default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default=None, help="default: fp16 on CUDA, fp32 elsewhere")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--requests", type=int, default=4, help="engine case: requests in the batch")
    ap.add_argument("--repeat", type=int, default=3, help="engine case: interleaved pairs")
    ap.add_argument("--jobs", type=int, default=8, help="queue case: jobs queued at once")
    ap.add_argument("--cap", type=int, default=4, help="queue case: worker_batch_max when batching is on")
    ap.add_argument("--rounds", type=int, default=2, help="queue case: interleaved rounds")
    ap.add_argument("--trust", action="store_true", help="queue case: keep the outputs' watermark (same cost per image either way)")
    ap.add_argument("--photo-width", type=int, default=360, help="reference photos reduced to this width (0: originals)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--skip-queue", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)

    import torch

    from faceanchor.config import Settings
    from faceanchor.engine import Engine

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("fp16" if cuda else "fp32")]
    home = Path(tempfile.mkdtemp(prefix="faceanchor-batching-"))
    engine = Engine(Settings(home=home, device=args.device), weights=args.weights, face_pack="dlib", device=args.device, dtype=dtype)
    print(f"# batching on {torch.cuda.get_device_name(0) if cuda else args.device} ({args.weights} weights, {args.size}², "
          f"{args.steps} steps, torch threads {torch.get_num_threads()})")
    results: dict[str, Any] = {"device": args.device, "weights": args.weights, "size": args.size, "steps": args.steps}
    e = engine_batch_case(engine, size=args.size, steps=args.steps, n=args.requests, repeat=args.repeat, photo_width=args.photo_width)
    results["engine"] = e
    print(f"engine  {args.requests} requests one by one {e['one_by_one_s']:.3f} s ({e['images_per_s_one_by_one']:.2f} img/s)  "
          f"one batch {e['batch_s']:.3f} s ({e['images_per_s_batch']:.2f} img/s)  ratio {e['ratio']:.2f}x  max|Δ| {e['max_abs_diff']:.4f}")
    print(f"engine  denoising only: one by one {e['denoise_one_by_one_s']:.3f} s, one batch {e['denoise_batch_s']:.3f} s, "
          f"ratio {e['denoise_ratio']:.2f}x")
    if not args.skip_queue:
        q = queue_case(engine, size=args.size, steps=args.steps, jobs=args.jobs, cap=args.cap, rounds=args.rounds, trust=args.trust,
                       photo_width=args.photo_width)
        results["queue"] = q
        for side in ("off", "on"):
            r = q[side]
            print(f"queue   batching {side:<3} (cap {1 if side == 'off' else args.cap}) {r['images_per_s']:.2f} img/s  "
                  f"latency p50 {r['latency_p50_s']:.2f} s  max {r['latency_max_s']:.2f} s  jobs batched {r['jobs_batched']:.0f}/{args.jobs}")
        print(f"queue   throughput ratio on/off {q['throughput_ratio']:.2f}x  latency p50 ratio {q['latency_p50_ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
