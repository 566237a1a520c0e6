"""Face stack benchmark: milliseconds per image for detection, alignment and embedding.

    python benchmarks/face.py [--runs 5] [--cnn] [--images DIR]

Backends: dlib HOG + dlib ResNet-128; the real SCRFD (``models/scrfd.onnx`` of the
``scrfd==0.3.0`` sdist, fetched with pip into the test cache like the tests do) + a tiny
ArcFace-contract ONNX exported from torch (stands in for glintr100/w600k_r50, which are not
available offline, so its embedding time is a lower bound); ``--cnn`` adds dlib's MMOD CNN.
Each number is the median over ``--runs`` runs per image, then the median over images. Peak
memory: the process's max RSS (``resource.getrusage``) after each backend, and the peak of
Python-level allocations (``tracemalloc``) during it.

Scoring (the engine's identity score of a request's outputs): every image detected and embedded
one by one vs all at once (``ScrfdDetector.detect_many`` + ``ArcFaceEncoder.encode_crops``, one
network call each) on batch-free copies of the same two models (the files fix batch 1;
``tests/face/batched_onnx.py`` frees it), medians of interleaved runs and their ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from faceanchor.face.align import norm_crop  # noqa: E402
from faceanchor.imageio import load_image  # noqa: E402

SCRFD_VERSION = "0.3.0"


def scrfd_model() -> Path:
    cache = Path(os.environ.get("FACEANCHOR_TEST_CACHE", Path.home() / ".cache" / "faceanchor-tests"))
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"scrfd-{SCRFD_VERSION}.onnx"
    if target.is_file():
        return target
    archive = cache / f"scrfd-{SCRFD_VERSION}.tar.gz"
    if not archive.is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", f"scrfd=={SCRFD_VERSION}", "-d", str(cache)], check=True, capture_output=True)
    with tarfile.open(archive) as tar:
        src = tar.extractfile(f"scrfd-{SCRFD_VERSION}/models/scrfd.onnx")
        with open(target, "wb") as out:
            shutil.copyfileobj(src, out)
    return target


def tiny_arcface(directory: Path) -> Path:
    import warnings

    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 512),
    ).eval()
    path = directory / "tiny_arcface.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), str(path), input_names=["input.1"], output_names=["embedding"], opset_version=17, dynamo=False)
    return path


def timed(fn, runs: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), out


def bench(name: str, detect, encode, images: list[tuple[str, np.ndarray]], runs: int) -> dict:
    tracemalloc.start()
    det_ms, align_ms, emb_ms, found = [], [], [], 0
    for _, rgb in images:
        d, faces = timed(lambda: detect(rgb), runs)
        det_ms.append(d)
        if not faces:
            continue
        found += 1
        face = faces[0]
        a, _ = timed(lambda: norm_crop(rgb, face.kps, 112), runs)
        align_ms.append(a)
        e, _ = timed(lambda: encode(rgb, face), runs)
        emb_ms.append(e)
    py_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    return {"backend": name, "detect": med(det_ms), "align": med(align_ms), "embed": med(emb_ms), "found": f"{found}/{len(images)}", "rss": rss, "py": py_peak}


def scoring(scrfd_path: Path, arcface_path: Path, images: list[tuple[str, np.ndarray]], runs: int, tmp: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "face"))
    from batched_onnx import batched_copy

    from faceanchor.face.detect_scrfd import ScrfdDetector
    from faceanchor.face.encode_arcface import ArcFaceEncoder

    det = ScrfdDetector(batched_copy(scrfd_path, tmp / "scrfd_batched.onnx")).prepare()
    enc = ArcFaceEncoder(batched_copy(arcface_path, tmp / "arcface_batched.onnx"), space="arcface-test-model").prepare()
    rgbs = [rgb for _, rgb in images]

    def one_by_one():
        for rgb in rgbs:
            faces = det.detect(rgb)
            if faces:
                enc.encode(rgb, faces[0])

    def batched():
        found = det.detect_many(rgbs)
        crops = [enc.align(rgb, f[0]) for rgb, f in zip(rgbs, found) if f]
        if crops:
            enc.encode_crops(np.stack(crops))

    one_by_one(), batched()  # warm-up
    a, b = [], []
    for _ in range(runs):
        for fn, out in ((one_by_one, a), (batched, b)):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1000)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"scoring {len(rgbs)} outputs (scrfd + arcface-test-model, batch-free copies): one by one {ma:.1f} ms, "
          f"batched {mb:.1f} ms, batched/one-by-one {mb / ma:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--images", type=Path, default=ROOT / "tests" / "data" / "faces")
    ap.add_argument("--cnn", action="store_true", help="also time dlib's CNN (slow on CPU)")
    args = ap.parse_args()

    from faceanchor.face.detect_dlib import DlibDetector
    from faceanchor.face.detect_scrfd import ScrfdDetector
    from faceanchor.face.encode_arcface import ArcFaceEncoder
    from faceanchor.face.encode_dlib import DlibEncoder
    from faceanchor.face.packs import face_recognition_models_dir

    images = [(p.name, np.asarray(load_image(p))) for p in sorted(args.images.iterdir()) if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")]
    print(f"{len(images)} images from {args.images}, median of {args.runs} runs each, then median over images")
    rows = []
    d = face_recognition_models_dir()
    lm, rec = d / "shape_predictor_68_face_landmarks.dat", d / "dlib_face_recognition_resnet_model_v1.dat"
    dlib_enc = DlibEncoder(lm, rec).prepare()
    hog = DlibDetector(lm, "hog").prepare()
    rows.append(bench("dlib hog + resnet128", lambda x: hog.detect(x, 1), dlib_enc.encode, images, args.runs))
    if args.cnn:
        cnn = DlibDetector(lm, "cnn", cnn_path=d / "mmod_human_face_detector.dat").prepare()
        rows.append(bench("dlib cnn + resnet128", lambda x: cnn.detect(x, 0), dlib_enc.encode, images, max(1, args.runs // 2)))
    with tempfile.TemporaryDirectory() as tmp:
        arc = ArcFaceEncoder(tiny_arcface(Path(tmp)), space="arcface-test-model").prepare()
        scrfd = ScrfdDetector(scrfd_model()).prepare()
        rows.append(bench("scrfd + arcface-test-model", lambda x: scrfd.detect(x), arc.encode, images, args.runs))
        scoring(scrfd_model(), tiny_arcface(Path(tmp)), images, args.runs, Path(tmp))
    base = rows[0]  # dlib HOG, the offline default, is the baseline of the ratio columns
    head = (f"{'backend':<28} {'detect ms':>10} {'align ms':>9} {'embed ms':>9} {'faces':>6} {'max RSS MiB':>12} {'py peak MiB':>12}"
            f" {'detect x':>9} {'total x':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        total, base_total = r["detect"] + r["align"] + r["embed"], base["detect"] + base["align"] + base["embed"]
        print(f"{r['backend']:<28} {r['detect']:>10.1f} {r['align']:>9.2f} {r['embed']:>9.2f} {r['found']:>6} {r['rss']:>12.0f} {r['py']:>12.1f}"
              f" {r['detect'] / base['detect']:>9.2f} {total / base_total:>8.2f}")
    print("x: time relative to dlib hog + resnet128 (lower is faster)")


if __name__ == "__main__":
    main()
