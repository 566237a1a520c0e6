"""One GPU benchmark run (dummy full-size weights, no downloads), results as JSON, ≤ ~8 minutes.

Two engines on the same seeded random weights, measured interleaved (A B B A ...):

* ``baseline`` — the official-equivalent path: cross-attention K/V recomputed every step, no
  TF32, no channels-last, no fused QKV, no compile;
* ``fast`` — faceanchor's defaults plus the GPU options (``--compile`` adds torch.compile of the
  UNet, which costs a minute or two of compilation first).

Cases: InstantID SDXL 1024² 30 steps Euler (batch 1 and 4), InstantID 1024² 5 steps LCM,
FaceID SD1.5 512² 30 steps. Each case prints and records the median wall time per
generation, seconds per step, the fast/baseline ratio, identity of outputs (fast must equal
baseline up to TF32 rounding) and peak GPU memory. Then, on the fast engine, 4 separate
InstantID requests one by one vs one batched call (``benchmarks/batching.py``'s
``engine_batch_case``; ``--batch-steps``, 0 skips it). Targets (issue 14): 1024² 30-step ratio
≤ 0.6, LCM 5 steps ≤ 0.5 s, batched requests ≥ 1.5× the images/s of one by one.

    python benchmarks/gpu.py --out gpu.json                      # on a CUDA machine
    python benchmarks/gpu.py --weights tiny --device cpu --size 64 --out /tmp/g.json   # checks the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACE = ROOT / "tests" / "data" / "faces" / "obama.jpg"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", choices=["dummy", "tiny"], default="dummy")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--size", type=int, default=1024, help="SDXL size (SD1.5 runs at half)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved pairs per case")
    ap.add_argument("--compile", action="store_true", help="also torch.compile the fast side's UNet")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip remaining cases past this many seconds")
    ap.add_argument("--batch-steps", type=int, default=30, help="steps of the batched-requests case (0: skip it)")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.types import GenerationRequest

    start = time.perf_counter()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    cuda = args.device.startswith("cuda")

    def engine(fast: bool) -> Engine:
        home = Path(tempfile.mkdtemp(prefix="faceanchor-gpu-"))
        opts = dict(speed_cross_attention_cache=fast, speed_channels_last=fast and cuda, speed_fuse_qkv=fast,
                    speed_tf32=fast, speed_compile="unet" if (fast and args.compile) else "off")
        return Engine(Settings(home=home, device=args.device, **opts), weights=args.weights, face_pack="dlib",
                      device=args.device, dtype=dtype)

    sides = {"baseline": engine(False), "fast": engine(True)}
    s = args.size
    cases = [
        ("instantid_sdxl_30_euler_b1", dict(method="instantid", width=s, height=s, num_inference_steps=30, samples=1)),
        ("instantid_sdxl_5_lcm_b1", dict(method="instantid", width=s, height=s, num_inference_steps=5, scheduler="lcm", guidance_scale=1.5, samples=1)),
        ("instantid_sdxl_30_euler_b4", dict(method="instantid", width=s, height=s, num_inference_steps=30, samples=4)),
        ("faceid_sd15_30_euler_b1", dict(method="faceid", width=max(64, s // 2), height=max(64, s // 2), num_inference_steps=30, samples=1)),
    ]
    results: dict = {"device": torch.cuda.get_device_name(0) if cuda else args.device, "dtype": args.dtype,
                     "weights": args.weights, "torch": torch.__version__, "compile": args.compile, "cases": {}}
    print(f"# gpu benchmark on {results['device']} ({args.dtype}, {args.weights} weights, compile={args.compile})")
    print(f"{'case':<30}{'baseline s':>11}{'fast s':>9}{'ratio':>7}{'fast s/step':>12}{'max|Δ|':>9}{'peak GiB':>10}")
    failed = False
    for name, kw in cases:
        if time.perf_counter() - start > args.budget_s:
            results["cases"][name] = {"skipped": "time budget"}
            print(f"{name:<30} skipped (time budget)")
            continue
        region = {"enhance_face_region": False} if "enhance_face_region" in Engine.method(kw["method"]).honoured() else {}
        req = GenerationRequest(face_image=str(FACE), prompt="a portrait photo, studio light", seed=0, **region, **kw)
        times: dict[str, list[float]] = {"baseline": [], "fast": []}
        images: dict[str, np.ndarray] = {}
        peaks = {}
        for side, eng in sides.items():  # warm-up (load, compile)
            torch.backends.cuda.matmul.allow_tf32 = side == "fast"
            eng.generate(req)
        for r in range(args.repeat):
            for side in (("baseline", "fast") if r % 2 == 0 else ("fast", "baseline")):
                torch.backends.cuda.matmul.allow_tf32 = side == "fast"
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                res = sides[side].generate(req)
                if cuda:
                    torch.cuda.synchronize()
                    peaks[side] = torch.cuda.max_memory_allocated() / 2**30
                times[side].append(time.perf_counter() - t0)
                images[side] = np.asarray(res.images[0].image, dtype=np.float32) / 255.0
        b, f = statistics.median(times["baseline"]), statistics.median(times["fast"])
        delta = float(np.abs(images["fast"] - images["baseline"]).max())
        row = {"baseline_s": b, "fast_s": f, "ratio": f / b, "fast_s_per_step": f / kw["num_inference_steps"],
               "max_abs_diff": delta, "peak_gib": peaks.get("fast"), "baseline_peak_gib": peaks.get("baseline")}
        results["cases"][name] = row
        print(f"{name:<30}{b:>11.3f}{f:>9.3f}{f / b:>7.2f}{row['fast_s_per_step']:>12.4f}{delta:>9.4f}"
              f"{(peaks.get('fast') or 0):>10.2f}", flush=True)
        failed |= delta > 0.05  # fp16 + TF32 rounding stays far below this; a wrong fast path does not
    if args.batch_steps and time.perf_counter() - start > args.budget_s:
        results["cases"]["instantid_sdxl_batched_requests_x4"] = {"skipped": "time budget"}
        print("instantid_sdxl_batched_requests_x4 skipped (time budget)")
    elif args.batch_steps:
        import importlib.util

        spec = importlib.util.spec_from_file_location("faceanchor_bench_batching", Path(__file__).with_name("batching.py"))
        batching = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(batching)
        torch.backends.cuda.matmul.allow_tf32 = True
        row = batching.engine_batch_case(sides["fast"], size=s, steps=args.batch_steps, n=4, repeat=1, enhance_face_region=False)
        row.pop("runs", None)
        results["cases"]["instantid_sdxl_batched_requests_x4"] = row
        print(f"batched requests x4 ({args.batch_steps} steps): one by one {row['one_by_one_s']:.3f} s, one call {row['batch_s']:.3f} s, "
              f"{row['ratio']:.2f}x images/s, max|Δ| {row['max_abs_diff']:.4f}", flush=True)
        failed |= row["max_abs_diff"] > 0.05
    results["wall_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(results, indent=2))
    print(f"# wrote {args.out} in {results['wall_s']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
