"""One GPU benchmark run (dummy full-size weights, no downloads, no face models), results as JSON.

Sides measured interleaved on the same seeded random weights (A B B A ...):

* ``baseline`` — the official-equivalent path: cross-attention K/V recomputed every step, no
  TF32, no channels-last, no fused QKV, no compile;
* ``fast`` — faceanchor's cache plus the GPU options (channels-last, fused QKV, TF32);
  ``--compile unet|all`` adds torch.compile (the warm-up generation pays the compilation and is
  reported apart as ``warmup_s``).

SD cases (``--cases``): InstantID SDXL 1024² 30 steps Euler (batch 1 and 4), InstantID 1024² 5
steps LCM, FaceID SD1.5 512² 30 steps, and ``batched_b4``: four *separate* InstantID requests one
after another vs one engine batch of the four (``Engine.generate_many``; images/s ratio). Each
prints the median wall time, s/step, the fast/baseline ratio, max |Δ| between the two sides'
images (fp16/TF32 rounding only) and peak GPU memory.

``--flux``: InfiniteYou on dummy FLUX.1-dev (+ InfuseNet, T5, CLIP): per-step time and peak GPU
memory for bf16, bf16 + model CPU offload and 8-bit (optimum-quanto), at 864 × 1152 and 1024².

The identity is a seeded precomputed embedding + keypoints in each method's space, so no face
models are needed (the face stack has its own benchmark, benchmarks/face.py); identity scores
are therefore null. Results are written after every case.

    python benchmarks/gpu.py --out gpu.json --compile all --flux        # on a CUDA machine
    python benchmarks/gpu.py --weights tiny --device cpu --size 64 --flux --out /tmp/g.json   # checks the script
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import tempfile
import time
from pathlib import Path

SD_CASES = ("instantid_sdxl_30_euler_b1", "instantid_sdxl_5_lcm_b1", "instantid_sdxl_30_euler_b4",
            "faceid_sd15_30_euler_b1", "batched_b4")


def identity_fields(space: str, size: int, seed: int = 0) -> dict:
    """A precomputed identity in ``space``: a seeded 512-d embedding and five face keypoints
    (eyes, nose, mouth corners) of a centred face in a ``size`` × ``size`` photo."""
    import numpy as np

    rng = np.random.default_rng(seed)
    emb = rng.standard_normal(512).astype(np.float32)
    emb *= 20.0 / float(np.linalg.norm(emb))  # raw ArcFace norms are ~15-25; methods normalise as they must
    unit = np.array([[0.38, 0.42], [0.62, 0.42], [0.50, 0.55], [0.41, 0.67], [0.59, 0.67]])
    return dict(face_embedding=emb.tolist(), face_embedding_space=space, face_kps=(unit * size).tolist(),
                face_image_size=(size, size))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--weights", choices=["dummy", "tiny"], default="dummy")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    ap.add_argument("--size", type=int, default=1024, help="SDXL size (SD1.5 runs at half)")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved pairs per case")
    ap.add_argument("--steps", type=int, default=30, help="steps of the Euler cases (CPU: 2); LCM keeps min(5, steps)")
    ap.add_argument("--compile", choices=["off", "unet", "all"], default="off", help="torch.compile on the fast side")
    ap.add_argument("--cases", nargs="*", default=list(SD_CASES), choices=SD_CASES, help="SD cases to run (none: --cases)")
    ap.add_argument("--flux", action="store_true", help="also the FLUX (InfiniteYou) memory/speed table")
    ap.add_argument("--flux-steps", type=int, default=4)
    ap.add_argument("--flux-configs", nargs="+", default=["bf16", "offload", "8bit"], choices=["bf16", "offload", "8bit"])
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip remaining cases past this many seconds")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.types import GenerationRequest

    start = time.perf_counter()
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    cuda = args.device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def peak_reset() -> None:
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak() -> float | None:
        return torch.cuda.max_memory_allocated() / 2**30 if cuda else None

    def engine(fast: bool, **extra) -> Engine:
        home = Path(tempfile.mkdtemp(prefix="faceanchor-gpu-"))
        opts = dict(speed_cross_attention_cache=fast, speed_channels_last=fast and cuda, speed_fuse_qkv=fast,
                    speed_tf32=fast, speed_compile=args.compile if fast else "off")
        opts.update(extra)
        return Engine(Settings(home=home, device=args.device, **opts), weights=args.weights, device=args.device, dtype=dtype)

    results: dict = {"device": torch.cuda.get_device_name(0) if cuda else args.device, "dtype": args.dtype,
                     "weights": args.weights, "torch": torch.__version__, "compile": args.compile, "cases": {}, "flux": {}}

    def save() -> None:
        results["wall_s"] = time.perf_counter() - start
        args.out.write_text(json.dumps(results, indent=2))

    def over_budget(name: str, table: dict) -> bool:
        if time.perf_counter() - start > args.budget_s:
            table[name] = {"skipped": "time budget"}
            print(f"{name:<30} skipped (time budget)", flush=True)
            return True
        return False

    print(f"# gpu benchmark on {results['device']} ({args.dtype}, {args.weights} weights, compile={args.compile}, torch {torch.__version__})")
    failed = False
    s = args.size
    if args.cases:
        sides = {"baseline": engine(False), "fast": engine(True)}

        def request(method: str, **kw) -> GenerationRequest:
            space = Engine.method(method).space
            kw.setdefault("prompt", "a portrait photo, studio light")
            kw.setdefault("seed", 0)
            if method == "instantid":  # the whole-image identity (no face-region mask), as the official demo's default
                kw["enhance_face_region"] = False
            return GenerationRequest(method=method, **identity_fields(space, 1024), **kw)

        specs = {
            "instantid_sdxl_30_euler_b1": dict(method="instantid", width=s, height=s, num_inference_steps=args.steps, samples=1),
            "instantid_sdxl_5_lcm_b1": dict(method="instantid", width=s, height=s, num_inference_steps=min(5, args.steps), scheduler="lcm", guidance_scale=1.5, samples=1),
            "instantid_sdxl_30_euler_b4": dict(method="instantid", width=s, height=s, num_inference_steps=args.steps, samples=4),
            "faceid_sd15_30_euler_b1": dict(method="faceid", width=max(64, s // 2), height=max(64, s // 2), num_inference_steps=args.steps, samples=1),
        }
        print(f"{'case':<30}{'baseline s':>11}{'fast s':>9}{'ratio':>7}{'base s/step':>12}{'fast s/step':>12}{'step ratio':>11}"
              f"{'max|Δ|':>9}{'peak GiB':>10}{'warmup s':>10}")
        for name in [c for c in SD_CASES if c in args.cases and c in specs]:
            if over_budget(name, results["cases"]):
                continue
            kw = specs[name]
            req = request(**kw)
            times: dict[str, list[float]] = {"baseline": [], "fast": []}
            steps: dict[str, list[float]] = {"baseline": [], "fast": []}  # s/step between step ends (set-up excluded)
            images: dict[str, np.ndarray] = {}
            peaks: dict[str, float | None] = {}
            warm = {}
            for side, eng in sides.items():  # warm-up (load, compile)
                torch.backends.cuda.matmul.allow_tf32 = side == "fast"
                t0 = time.perf_counter()
                eng.generate(req)
                sync()
                warm[side] = time.perf_counter() - t0
            for r in range(args.repeat):
                for side in (("baseline", "fast") if r % 2 == 0 else ("fast", "baseline")):
                    torch.backends.cuda.matmul.allow_tf32 = side == "fast"
                    peak_reset()
                    t0 = time.perf_counter()
                    marks: list[float] = []
                    res = sides[side].generate(req, on_progress=lambda e: (sync(), marks.append(time.perf_counter()))
                                               if e.stage == "denoise" and e.total else None)
                    sync()
                    times[side].append(time.perf_counter() - t0)
                    if len(marks) >= 2:
                        steps[side].append((marks[-1] - marks[0]) / (len(marks) - 1))
                    peaks[side] = peak()
                    images[side] = np.asarray(res.images[0].image, dtype=np.float32) / 255.0
            b, f = statistics.median(times["baseline"]), statistics.median(times["fast"])
            delta = float(np.abs(images["fast"] - images["baseline"]).max())
            bs = statistics.median(steps["baseline"]) if steps["baseline"] else float("nan")
            fs = statistics.median(steps["fast"]) if steps["fast"] else float("nan")
            row = {"baseline_s": b, "fast_s": f, "ratio": f / b, "baseline_s_per_step": bs, "fast_s_per_step": fs,
                   "per_step_ratio": fs / bs,
                   "max_abs_diff": delta, "peak_gib": peaks.get("fast"), "baseline_peak_gib": peaks.get("baseline"),
                   "warmup_s": warm, "times": times}
            results["cases"][name] = row
            print(f"{name:<30}{b:>11.3f}{f:>9.3f}{f / b:>7.2f}{bs:>12.4f}{fs:>12.4f}{fs / bs:>11.2f}{delta:>9.4f}"
                  f"{(peaks.get('fast') or 0):>10.2f}{warm['fast']:>10.1f}", flush=True)
            failed |= delta > 0.05  # fp16 + TF32 rounding stays far below this; a wrong fast path does not
            save()
        if "batched_b4" in args.cases and not over_budget("batched_b4", results["cases"]):
            eng = sides["fast"]
            if not hasattr(eng, "generate_many"):
                results["cases"]["batched_b4"] = {"skipped": "this tree has no Engine.generate_many"}
                print("batched_b4 skipped (no Engine.generate_many)", flush=True)
            else:
                reqs = [request("instantid", width=s, height=s, num_inference_steps=args.steps, seed=i,
                                prompt=p) for i, p in enumerate(["a portrait photo", "a photo in a cafe", "an oil painting", "a photo at the beach"])]
                eng.generate_many(reqs)  # warm-up at batch 4
                one, many = [], []
                for r in range(args.repeat):
                    for mode in (("one", "many") if r % 2 == 0 else ("many", "one")):
                        sync()
                        t0 = time.perf_counter()
                        if mode == "one":
                            singles = [eng.generate(q) for q in reqs]
                        else:
                            batched = eng.generate_many(reqs)
                        sync()
                        (one if mode == "one" else many).append(time.perf_counter() - t0)
                d = max(float(np.abs(np.asarray(a.images[0].image, np.float32) - np.asarray(b_.images[0].image, np.float32)).max()) / 255.0
                        for a, b_ in zip(singles, batched))
                o, m = statistics.median(one), statistics.median(many)
                results["cases"]["batched_b4"] = {"one_by_one_s": o, "batched_s": m, "images_per_s_ratio": o / m, "max_abs_diff": d,
                                                  "peak_gib": peak()}
                print(f"{'batched_b4':<30} 4 separate {o:.3f} s, one batch {m:.3f} s: {o / m:.2f}x images/s (max|Δ| {d:.4f})", flush=True)
                save()
        del sides
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()

    if args.flux:
        sizes = [(864, 1152), (1024, 1024)] if args.weights == "dummy" else [(64, 64), (64, 96)]
        print(f"# FLUX (InfiniteYou) dummy, {args.flux_steps} steps: per-step s, peak GiB")
        print(f"{'config':<10}{'size':>11}{'build s':>9}{'s/step':>9}{'wall s':>9}{'peak GiB':>10}")
        extra = {"bf16": {}, "offload": {"speed_cpu_offload": True}, "8bit": {"flux_quantize": "8bit"}}
        for cfg in args.flux_configs:
            if over_budget(f"flux_{cfg}", results["flux"]):
                continue
            try:
                peak_reset()
                eng = Engine(Settings(home=Path(tempfile.mkdtemp(prefix="faceanchor-gpu-")), device=args.device, **extra[cfg]),
                             weights=args.weights, device=args.device, dtype=torch.bfloat16)
                rows = {}
                for w, h in sizes:
                    req = GenerationRequest(method="infiniteyou", prompt="a portrait photo, studio light", seed=0, width=w, height=h,
                                            num_inference_steps=args.flux_steps, **identity_fields("facexlib", 1024))
                    t0 = time.perf_counter()
                    eng.generate(req)  # first: builds the models (and quantises)
                    sync()
                    first = time.perf_counter() - t0
                    peak_reset()
                    marks: list[float] = []
                    t0 = time.perf_counter()
                    eng.generate(req, on_progress=lambda e: marks.append(time.perf_counter()) if e.stage == "denoise" and e.total else None)
                    sync()
                    wall = time.perf_counter() - t0
                    per = (marks[-1] - marks[0]) / (len(marks) - 1) if len(marks) >= 2 else float("nan")
                    rows[f"{w}x{h}"] = {"first_s": first, "s_per_step": per, "wall_s": wall, "peak_gib": peak()}
                    print(f"{cfg:<10}{f'{w}x{h}':>11}{first:>9.1f}{per:>9.3f}{wall:>9.2f}{(peak() or 0):>10.2f}", flush=True)
                results["flux"][cfg] = rows
            except Exception as e:  # one config failing (e.g. a missing package) must not lose the others
                results["flux"][cfg] = {"error": f"{type(e).__name__}: {e}"}
                print(f"{cfg:<10} failed: {type(e).__name__}: {e}", flush=True)
                failed = True
            finally:
                eng = None
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
            save()
    save()
    print(f"# wrote {args.out} in {results['wall_s']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
