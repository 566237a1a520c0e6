"""Trust marks: how well the invisible watermark survives what re-posting does, what it costs.

Over the test photos (tests/data/faces, public domain), each resized to ``--width`` (default 512,
an SD1.5 output's width; SDXL: 1024), ``--ids`` random job ids each: the watermark is written
(:func:`faceanchor.trust.watermark.embed`) and read back after nothing, JPEG q=75 re-encoding, a
0.5x resize (Lanczos), a 10% crop (5% off each side) and a 10% crop off the right and bottom
only (top-left grid kept). Prints the recovery rate of each (a read counts only when it gives the
exact payload; the CRC-16 keeps wrong reads out, counted as "false"), the PSNR the mark costs
(dB, mean and min), the mean embed/read times, and, with a generated test chain, the time and
bytes a C2PA manifest adds to a PNG.

    python benchmarks/trust.py --ids 2      # a few minutes on a busy 2-core CPU
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"
sys.path.insert(0, str(ROOT / "src"))


def _jpeg(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=75)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _half(img: Image.Image) -> Image.Image:
    return img.resize((img.width // 2, img.height // 2), Image.LANCZOS)


def _crop_centre(img: Image.Image) -> Image.Image:
    dx, dy = round(img.width * 0.05), round(img.height * 0.05)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def _crop_corner(img: Image.Image) -> Image.Image:
    return img.crop((0, 0, round(img.width * 0.9), round(img.height * 0.9)))


ATTACKS = {"none": lambda im: im, "jpeg_q75": _jpeg, "resize_0.5x": _half, "crop_10pct_centre": _crop_centre,
           "crop_10pct_corner": _crop_corner}


def psnr(a: Image.Image, b: Image.Image) -> float:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(10 * np.log10(255.0**2 / max((d**2).mean(), 1e-12)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=int, default=2, help="Job ids written into each photo.")
    ap.add_argument("--width", type=int, default=512, help="Photos are resized to this width first (an SD1.5 output; SDXL: 1024).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from faceanchor.trust import watermark as wm

    photos = sorted(p for p in FACES.iterdir() if p.suffix in (".jpg", ".png"))
    hits = {k: 0 for k in ATTACKS}
    false = {k: 0 for k in ATTACKS}
    psnrs, t_embed, t_read = [], [], []
    n = 0
    for p in photos:
        im = Image.open(p).convert("RGB")
        im = im.resize((args.width, round(im.height * args.width / im.width)), Image.LANCZOS)
        for _ in range(args.ids):
            job = uuid.uuid4().hex
            t0 = time.perf_counter()
            marked = wm.embed(im, job)
            t_embed.append(time.perf_counter() - t0)
            psnrs.append(psnr(im, marked))
            n += 1
            for name, attack in ATTACKS.items():
                t0 = time.perf_counter()
                got = wm.read(attack(marked))
                if name == "none":
                    t_read.append(time.perf_counter() - t0)
                if got.found and got.job_id_prefix == job[:12]:
                    hits[name] += 1
                elif got.found:
                    false[name] += 1
    unmarked_false = sum(wm.read(Image.open(p).convert("RGB")).found for p in photos)
    out = {
        "photos": len(photos), "marks": n, "width": args.width, "payload_bits": wm.PAYLOAD_BITS, "method": "dwtDctSvd",
        "recovery": {k: round(hits[k] / n, 3) for k in ATTACKS}, "false_reads": false,
        "unmarked_photos_read_as_marked": unmarked_false,
        "psnr_db_mean": round(statistics.mean(psnrs), 2), "psnr_db_min": round(min(psnrs), 2),
        "embed_s_mean": round(statistics.mean(t_embed), 3), "read_s_mean": round(statistics.mean(t_read), 3),
    }
    out.update(_c2pa_cost())
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"watermark {out['method']}, {out['payload_bits']} bits (48-bit job id prefix + CRC-16), "
          f"{n} marks over {len(photos)} photos at {args.width} px wide")
    for k in ATTACKS:
        print(f"  recovered after {k:<18} {hits[k]:>3}/{n}  ({100 * hits[k] / n:5.1f}%)  false reads {false[k]}")
    print(f"  unmarked photos read as marked: {unmarked_false}/{len(photos)}")
    print(f"  PSNR {out['psnr_db_mean']} dB mean, {out['psnr_db_min']} dB min; embed {out['embed_s_mean']} s, read {out['read_s_mean']} s")
    if "c2pa_sign_s" in out:
        print(f"C2PA manifest (ES256, test chain): sign {out['c2pa_sign_s']} s, +{out['c2pa_bytes']} bytes per PNG, read {out['c2pa_read_s']} s")
    return 0


def _c2pa_cost() -> dict:
    try:
        sys.path.insert(0, str(ROOT / "tests" / "trust"))
        from certs import make_chain

        from faceanchor.trust.credentials import CredentialSigner, read_manifest
    except ImportError as e:
        return {"c2pa": f"skipped ({e})"}
    with tempfile.TemporaryDirectory() as tmp:
        chain, key = make_chain(Path(tmp))
        signer = CredentialSigner(chain.read_bytes(), key.read_bytes())
    buf = io.BytesIO()
    Image.open(FACES / "obama.jpg").convert("RGB").resize((1024, 1280)).save(buf, "PNG")
    data = buf.getvalue()
    t0 = time.perf_counter()
    signed = signer.sign(data, "png", {"job_id": uuid.uuid4().hex})
    t1 = time.perf_counter()
    ok = read_manifest(signed, "image/png")["valid"]
    t2 = time.perf_counter()
    return {"c2pa_sign_s": round(t1 - t0, 3), "c2pa_read_s": round(t2 - t1, 3), "c2pa_bytes": len(signed) - len(data), "c2pa_valid": ok}


if __name__ == "__main__":
    raise SystemExit(main())
