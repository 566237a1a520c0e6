"""Per-generation caches (and torch.compile): per-step time against the official per-step recomputation.

The caches: cross-attention keys/values (``cache_cross_attention``) and, for InstantID, the
ControlNets' condition-image embeddings (``cache_control_condition``). Both sides are the same
loaded modules; only those two switches differ, and the runs
alternate (cached, uncached, cached, ...) in ABBA order, so that machine load and warm-up hit both alike. Prints the
median seconds per denoising step of each, their ratio (target ≤ 0.7 on CPU 512² bf16) and
whether the images are identical (they must be: the cache changes no arithmetic).

``--compile unet|all``: the fast side also runs the modules ``torch.compile``-d in place
(``speed_compile``); the baseline side runs the very same modules uncompiled (their compiled
call switched off for its runs), so both sides still share one copy of the weights. The images
then differ by compiled-kernel rounding only (max |Δ| printed; bf16 ~1e-2 on 0-1 images).

Arithmetic (``--flops``, on by default): one more generation per side under
``torch.utils.flop_counter.FlopCounterMode`` (uncompiled) counts the denoiser's FLOPs per step (UNet
+ ControlNets), so the output shows how much arithmetic the cache removes (``flop ratio``: the
best cached/uncached time ratio a compute-bound step can reach) and each side's achieved
TFLOP/s (compare it with the machine's matrix-multiply peak: a side at the peak can only get
faster by doing less arithmetic).

    python benchmarks/kv_cache.py --weights tiny --size 64                  # seconds; checks the script
    python benchmarks/kv_cache.py --weights dummy --size 512 --dtype bf16   # CPU target (needs AVX-512 BF16 to be quick)
    python benchmarks/kv_cache.py --weights dummy --size 512 --dtype bf16 --steps 2 --compile all   # CPU target with compile
    python benchmarks/kv_cache.py --weights dummy --size 1024 --steps 30 --device cuda --dtype fp16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "tests" / "data" / "faces" / "obama.jpg"


def compiled_modules(pipe) -> list[tuple]:
    """(module, its compiled call) for every module ``speed_compile`` compiled in place."""
    dp = pipe.pipe if hasattr(pipe, "pipe") and hasattr(pipe.pipe, "unet") else pipe
    net = getattr(dp, "controlnet", None)
    mods = [getattr(dp, "unet", None), *(getattr(net, "nets", [net]) if net is not None else []), getattr(getattr(dp, "vae", None), "decoder", None)]
    return [(m, m._compiled_call_impl) for m in mods if m is not None and getattr(m, "_compiled_call_impl", None) is not None]


def set_caches(pipe, on: bool) -> None:
    """The per-generation caches: cross-attention keys/values and (InstantID) ControlNet condition embeddings."""
    pipe.cache_cross_attention = on
    if hasattr(pipe, "cache_control_condition"):
        pipe.cache_control_condition = on


DENOISERS = ("UNet2DConditionModel", "ControlNetModel", "MultiControlNetModel", "ControlNetUnionModel")


def denoiser_flops(engine, req) -> float:
    """FLOPs of the denoising networks (UNet and ControlNets) over one generation of ``req``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, depth=1) as counter:
        engine.generate(req)
    counts = counter.get_flop_counts()
    tops = [k for k in counts if k in DENOISERS]  # top-level modules only (children are "Parent.child")
    if not tops:
        raise RuntimeError(f"no denoiser among the counted modules: {sorted(k for k in counts if '.' not in k)}")
    return float(sum(sum(counts[k].values()) for k in tops))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", choices=["dummy", "tiny"], default="dummy")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="alternating pairs of runs per method")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default=None)
    ap.add_argument("--methods", nargs="+", default=["instantid", "faceid"])
    ap.add_argument("--compile", choices=["off", "unet", "all"], default="off", help="torch.compile on the fast (cached) side")
    ap.add_argument("--no-flops", dest="flops", action="store_false", help="skip the FLOP count (one more generation per side)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from faceanchor.config import Settings, resolve_device
    from faceanchor.engine import Engine
    from faceanchor.types import GenerationRequest

    device = resolve_device(args.device)
    dtype_name = args.dtype or ("bf16" if device == "cpu" else "fp16")
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    engine = Engine(Settings(home=Path(tempfile.mkdtemp(prefix="faceanchor-bench-")), device=device, speed_compile=args.compile),
                    weights=args.weights, face_pack="dlib", device=device, dtype=dtype)
    print(f"# kv-cache benchmark: weights={args.weights} size={args.size}² steps={args.steps} device={device} "
          f"dtype={dtype_name} compile={args.compile} torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"{'method':<12}{'cached s/step':>15}{'uncached s/step':>17}{'ratio':>8}{'identical':>11}{'max|Δ|':>9}{'warm-up s':>11}"
          + (f"{'TFLOP/step c/u':>18}{'flop ratio':>12}{'TFLOP/s c/u':>15}" if args.flops else ""))
    failed = False
    for method in args.methods:
        m = engine.method(method)
        req = GenerationRequest(method=method, face_image=str(FACE), face_images=[str(FACE)] if m.separate_references else [],
                                prompt="a portrait photo", width=args.size, height=args.size,
                                num_inference_steps=args.steps, seed=0)
        t0 = time.perf_counter()
        engine.generate(req)  # loads the models (and compiles them)
        warm = time.perf_counter() - t0
        family = m.family_for(req)
        loaded = next(v for k, v in engine._loaded.items() if k[1] == family and k[0] == m.pipeline_key)
        compiled = compiled_modules(loaded.pipe)
        times: dict[bool, list[float]] = {True: [], False: []}
        images: dict[bool, np.ndarray] = {}
        for r in range(args.repeat):
            for cached in ((True, False) if r % 2 == 0 else (False, True)):  # ABBA: drift hits both alike
                set_caches(loaded.pipe, cached)
                for mod, impl in compiled:  # the baseline runs the same modules uncompiled
                    mod._compiled_call_impl = impl if cached else None
                marks: list[float] = []
                res = engine.generate(req, on_progress=lambda e: marks.append(time.perf_counter()) if e.stage == "denoise" and e.total else None)
                if len(marks) >= 2:
                    times[cached].append((marks[-1] - marks[0]) / (len(marks) - 1))
                images[cached] = np.asarray(res.images[0].image)
        flops: dict[bool, float] = {}
        if args.flops:  # the math is the same compiled or not: count it uncompiled
            for mod, _ in compiled:
                mod._compiled_call_impl = None
            for cached in (True, False):
                set_caches(loaded.pipe, cached)
                flops[cached] = denoiser_flops(engine, req) / args.steps
        set_caches(loaded.pipe, True)
        for mod, impl in compiled:
            mod._compiled_call_impl = impl
        c, u = statistics.median(times[True]), statistics.median(times[False])
        same = bool(np.array_equal(images[True], images[False]))
        delta = float(np.abs(images[True].astype(np.float32) - images[False].astype(np.float32)).max()) / 255.0
        failed |= (not same) if not compiled else delta > 0.1  # compiled kernels round differently; a wrong graph does not stay this close
        extra = ""
        if flops:
            fc, fu = flops[True] / 1e12, flops[False] / 1e12
            extra = f"{f'{fc:.3f}/{fu:.3f}':>18}{fc / fu:>12.3f}{f'{fc / c:.3f}/{fu / u:.3f}':>15}"
        print(f"{method:<12}{c:>15.4f}{u:>17.4f}{c / u:>8.2f}{str(same):>11}{delta:>9.4f}{warm:>11.1f}{extra}")
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
