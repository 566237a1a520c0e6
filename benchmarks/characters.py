"""Characters benchmark: creating a character and its ID photo, and the time stored embeddings
save per generation against analysing the face photo again.

    python benchmarks/characters.py [--weights tiny|dummy] [--size 64] [--steps 2] [--runs 5]
                                    [--photo tests/data/faces/obama.jpg] [--device cpu]

Measured (median over ``--runs`` after one warm-up call that loads the models):

* ``create``: decode + re-encode the photo, detect + embed + quality (dlib pack), store.
* ``id-photo``: the four views (each one engine generation at ``--size``²) and the sheet.
* generation from the photo (``face_image``: the engine detects and embeds each time) vs from
  the character (stored embedding + keypoints: no analysis); the difference is the time
  saved per generation, also shown as a share of the photo path and as the engine's own
  ``face`` stage timing of each path.

``--weights tiny`` (default) makes denoising nearly free, so the ratio shows the analysis
cost plainly; ``dummy`` (full-size random SDXL) shows it against a real-size denoising cost.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _median_time(fn, runs: int) -> tuple[float, list]:  # noqa: ANN001
    times, outs = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        outs.append(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="tiny", choices=["tiny", "dummy"])
    ap.add_argument("--size", type=int, default=64, help="Output width and height (multiple of 64).")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--photo", default=str(ROOT / "tests" / "data" / "faces" / "obama.jpg"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (tiny models run best on one).")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.service.characters import CharacterService
    from faceanchor.store.db import Database
    from faceanchor.store.files import FileStore
    from faceanchor.types import GenerationRequest

    home = Path(tempfile.mkdtemp(prefix="faceanchor-bench-"))
    settings = Settings(home=home, device=args.device)
    engine = Engine(settings, weights=args.weights, face_pack="dlib")
    db = Database(f"sqlite:///{home / 'db.sqlite'}")
    db.create_all()
    chars = CharacterService(settings, db, FileStore(home / "files"))
    photo = Path(args.photo).read_bytes()
    fields = dict(prompt="a portrait", width=args.size, height=args.size, num_inference_steps=args.steps, seed=1)

    # warm-up: face models, diffusion models
    warm = chars.create("warm-up", [photo], engine=engine)
    engine.generate(GenerationRequest(face_image=photo, **fields))

    t_create, made = _median_time(lambda: chars.create("bench", [photo], engine=engine), args.runs)
    ch = made[-1]
    t_id, _ = _median_time(lambda: chars.id_photo(engine, fields, character_id=ch.id), max(1, args.runs // 2))
    t_photo, photo_res = _median_time(lambda: engine.generate(GenerationRequest(face_image=photo, **fields)), args.runs)
    t_char, char_res = _median_time(lambda: chars.generate(engine, fields, character_id=ch.id), args.runs)
    face_photo = statistics.median(r.timings["face"] for r in photo_res)
    face_char = statistics.median(r.timings["face"] for r in char_res)

    saved = t_photo - t_char
    print(f"weights={args.weights} size={args.size} steps={args.steps} runs={args.runs} device={args.device} photo={Path(args.photo).name}")
    print(f"create character (analyse + store)   {t_create * 1000:9.1f} ms")
    print(f"ID photo (4 views + sheet + store)   {t_id * 1000:9.1f} ms   ({t_id / 4 * 1000:.1f} ms per view)")
    print(f"generate from the photo              {t_photo * 1000:9.1f} ms   (face stage {face_photo * 1000:.1f} ms)")
    print(f"generate from the character          {t_char * 1000:9.1f} ms   (face stage {face_char * 1000:.2f} ms)")
    stages = sorted(set(photo_res[-1].timings) - {"steps_per_second", "peak_gpu_mb"})
    print("  stages photo / character (ms):  " + ", ".join(
        f"{k} {photo_res[-1].timings.get(k, 0) * 1000:.0f}/{char_res[-1].timings.get(k, 0) * 1000:.0f}" for k in stages))
    print(f"saved per generation                 {saved * 1000:9.1f} ms   ({saved / t_photo:.1%} of the photo path; "
          f"photo/character = {t_photo / max(t_char, 1e-9):.2f}x; face stage {face_photo / max(face_char, 1e-9):.0f}x faster)")
    chars.delete(warm.id)
    db.dispose()


if __name__ == "__main__":
    main()
