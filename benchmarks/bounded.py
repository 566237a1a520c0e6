"""Bounded work: an edit of a phone-size photo against one of a small photo, and cancel latency.

The background edit of ``obama3.jpg`` (1434 x 2333) works within the method's working-size cap and
composites back at full size; the baseline is the same edit of a 360 px wide copy (the size the
tests use), run alternately (big, small, big, ...) so machine load hits both alike. Prints the
median seconds of each, their ratio (uncapped, the big edit ran > 25 min on CPU with tiny
weights), whether the kept pixels are bit-identical, and the cancel latency: a cancel sent at a
random moment of the edit, time until ``Cancelled`` (median and worst of ``--cancels`` tries).

    python benchmarks/bounded.py --repeat 1 --cancels 2     # tiny weights, about a minute on CPU
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", choices=["tiny", "dummy"], default="tiny")
    ap.add_argument("--repeat", type=int, default=3, help="alternating pairs of edits")
    ap.add_argument("--cancels", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args(argv)

    import numpy as np
    from PIL import Image

    from faceanchor.character.edit import edit_background
    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.errors import Cancelled
    from faceanchor.types import GenerationRequest

    engine = Engine(Settings(home=tempfile.mkdtemp(), device="cpu"), weights=args.weights, face_pack="dlib")
    big = Image.open(FACES / "obama3.jpg").convert("RGB")
    small = big.resize((360, round(big.height * 360 / big.width)), Image.LANCZOS)
    ref = FACES.parent / "faces" / "obama.jpg"
    request = GenerationRequest(face_image=str(ref), prompt="on a beach", num_inference_steps=args.steps, seed=1)
    edit_background(engine, request, small, mask_source="face-box")  # load the models once

    times: dict[str, list[float]] = {"1434x2333": [], "360 px": []}
    identical = True
    for _ in range(args.repeat):
        for name, img in (("1434x2333", big), ("360 px", small)):
            t0 = time.perf_counter()
            res = edit_background(engine, request, img, mask_source="face-box")
            times[name].append(time.perf_counter() - t0)
            kept = np.asarray(res.mask) == 0
            identical &= bool(np.array_equal(np.asarray(res.image)[kept], np.asarray(img)[kept]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"working-size cap: {engine.work_pixels(request)} px ({args.weights} weights)")
    for k, v in med.items():
        print(f"background edit {k:>10}: median {v:6.2f} s  ({', '.join(f'{t:.2f}' for t in times[k])})")
    print(f"ratio 1434x2333 / 360 px: {med['1434x2333'] / med['360 px']:.2f}   kept pixels bit-identical: {identical}")

    lat = []
    rng = random.Random(0)
    for _ in range(args.cancels):
        flag, out = threading.Event(), {}

        def run() -> None:
            try:
                edit_background(engine, request, big, mask_source="face-box", cancel=flag.is_set)
            except Cancelled:
                out["t"] = time.perf_counter()

        th = threading.Thread(target=run)
        th.start()
        time.sleep(rng.uniform(0.05, min(med.values()) * 0.5))
        t0 = time.perf_counter()
        flag.set()
        th.join()
        if "t" in out:
            lat.append(out["t"] - t0)
    if lat:
        print(f"cancel latency over {len(lat)} cancels: median {statistics.median(lat) * 1000:.0f} ms, worst {max(lat) * 1000:.0f} ms")
    else:
        print("cancel latency: every edit finished before its cancel")
    return 0


if __name__ == "__main__":
    sys.exit(main())
