"""Cross-attention K/V cache: per-step time with the cache vs the official per-step recomputation.

Both sides are the same loaded modules; only ``cache_cross_attention`` differs, and the runs
alternate (cached, uncached, cached, ...) in ABBA order, so that machine load and warm-up hit both alike. Prints the
median seconds per denoising step of each, their ratio (target ≤ 0.7 on CPU 512² bf16) and
whether the images are identical (they must be: the cache changes no arithmetic).

    python benchmarks/kv_cache.py --weights tiny --size 64                  # seconds; checks the script
    python benchmarks/kv_cache.py --weights dummy --size 512 --dtype bf16   # CPU target (needs AVX-512 BF16 to be quick)
    python benchmarks/kv_cache.py --weights dummy --size 1024 --steps 30 --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "tests" / "data" / "faces" / "obama.jpg"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", choices=["dummy", "tiny"], default="dummy")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="alternating pairs of runs per method")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None)
    ap.add_argument("--methods", nargs="+", default=["instantid", "faceid"])
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from faceanchor.config import Settings, resolve_device
    from faceanchor.engine import Engine
    from faceanchor.types import GenerationRequest

    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bf16" if device == "cpu" else "fp16")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    engine = Engine(Settings(home=Path(tempfile.mkdtemp(prefix="faceanchor-bench-")), device=device),
                    weights=args.weights, face_pack="dlib", device=device, dtype=dtype)
    print(f"# kv-cache benchmark: weights={args.weights} size={args.size}² steps={args.steps} device={device} "
          f"dtype={dtype_name} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'method':<12}{'cached s/step':>15}{'uncached s/step':>17}{'ratio':>8}{'identical':>11}")
    failed = False
    for method in args.methods:
        m = engine.method(method)
        req = GenerationRequest(method=method, face_image=str(FACE), face_images=[str(FACE)] if m.separate_references else [],
                                prompt="a portrait photo", width=args.size, height=args.size,
                                num_inference_steps=args.steps, seed=0)
        engine.generate(req)  # loads the models
        family = m.family_for(req)
        loaded = next(v for k, v in engine._loaded.items() if k[1] == family and k[0] == m.pipeline_key)
        times: dict[bool, list[float]] = {True: [], False: []}
        images: dict[bool, np.ndarray] = {}
        for r in range(args.repeat):
            for cached in ((True, False) if r % 2 == 0 else (False, True)):  # ABBA: drift hits both alike
                loaded.pipe.cache_cross_attention = cached
                marks: list[float] = []
                res = engine.generate(req, on_progress=lambda e: marks.append(time.perf_counter()) if e.stage == "denoise" and e.total else None)
                if len(marks) >= 2:
                    times[cached].append((marks[-1] - marks[0]) / (len(marks) - 1))
                images[cached] = np.asarray(res.images[0].image)
        loaded.pipe.cache_cross_attention = True
        c, u = statistics.median(times[True]), statistics.median(times[False])
        same = bool(np.array_equal(images[True], images[False]))
        failed |= not same
        print(f"{method:<12}{c:>15.4f}{u:>17.4f}{c / u:>8.2f}{str(same):>11}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
