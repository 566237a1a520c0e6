"""Two people in one picture: cost against one person, and both per-person identity scores.

For each method it generates the same scene with one person (Obama on the left) and with two
(Biden on the right as well), and, as a check, with the second person at strengths 0 (must be
bit-identical to the one-person image). It prints per-stage times (median of ``--repeat``), the
two/one ratio of the denoising time, the per-person identity scores of the two-person image
(random weights draw no faces: each score is then n/a with the reason) and peak memory.

    python benchmarks/people.py --weights tiny                                  # seconds on CPU
    python benchmarks/people.py --weights dummy --methods faceid --base sd15 --size 512 --width 512 --steps 2 --dtype fp32
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"
STAGES = ("face", "prompt", "denoise", "decode", "score")


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", choices=["tiny", "dummy"], default="tiny")
    ap.add_argument("--methods", default="instantid,faceid", help="comma-separated method names")
    ap.add_argument("--base", default=None, help="base family for methods that take one (sd15, sdxl)")
    ap.add_argument("--size", type=int, default=None, help="output height (default 64 tiny, 512 dummy)")
    ap.add_argument("--width", type=int, default=None, help="output width (default twice the height)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.methods.regions import layout_boxes
    from faceanchor.types import GenerationRequest, PlacedIdentity

    size = args.size or (64 if args.weights == "tiny" else 512)
    width, height = args.width or 2 * size, size
    left, right = layout_boxes("left-right", 2, width, height)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="faceanchor-people-")), device=args.device)
    engine = Engine(settings, weights=args.weights, face_pack="dlib", device=args.device, dtype=dtype)
    obama, biden = str(FACES / "obama.jpg"), str(FACES / "biden.jpg")
    print(f"weights={args.weights} device={args.device} dtype={args.dtype} output={width}x{height} steps={args.steps} "
          f"boxes left={left} right={right} torch={torch.__version__}")
    ok = True
    for method in [m for m in args.methods.split(",") if m]:
        base = dict(method=method, face_image=obama, prompt="two friends at a cafe, one on the left, one on the right",
                    width=width, height=height, num_inference_steps=args.steps, seed=7, face_box=left)
        if args.base:
            base["base"] = args.base
        one = GenerationRequest(**base)
        two = GenerationRequest(**base, more_identities=[PlacedIdentity(face_image=biden, box=right)])
        silent = GenerationRequest(**base, more_identities=[PlacedIdentity(face_image=biden, box=right, identity_strength=0.0, adapter_strength=0.0)])
        t0 = time.perf_counter()
        engine.generate(one)  # loads the models
        load = time.perf_counter() - t0
        runs: dict[str, list] = {"one person": [], "two people": []}
        for _ in range(args.repeat):
            for name, req in (("one person", one), ("two people", two)):
                t0 = time.perf_counter()
                res = engine.generate(req)
                res.timings["wall"] = time.perf_counter() - t0
                runs[name].append(res)
        same = np.array_equal(np.asarray(engine.generate(silent).images[0].image), np.asarray(runs["one person"][-1].images[0].image))
        ok &= same
        print(f"\n{method}: first call (load + one generation) {load:.2f} s")
        print(f"{'':<12}" + "".join(f"{s + ' s':>10}" for s in (*STAGES, "wall")))
        med = {}
        for name, rs in runs.items():
            med[name] = {k: statistics.median(r.timings.get(k, 0.0) for r in rs) for k in (*STAGES, "wall")}
            print(f"{name:<12}" + "".join(f"{med[name][k]:>10.3f}" for k in (*STAGES, "wall")))
        d1, d2 = med["one person"]["denoise"], med["two people"]["denoise"]
        print(f"denoise two/one: {d2 / d1 if d1 else float('nan'):.2f}   second person at strengths 0 = one person bit for bit: {same}")
        im = runs["two people"][-1].images[0]
        for j, (who, s) in enumerate(zip(("obama (left)", "biden (right)"), im.identity_scores), start=1):
            print(f"  person {j} {who}: identity score {'n/a' if s is None else f'{s:.4f}'}")
        print(f"  identity_score (lowest, what best-of ranks by): {im.identity_score}  reason: {im.identity_reason}")
        print(f"  peak memory {peak_memory_mb(args.device):.0f} MB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
