"""The invisible watermark: round trip on the test photos, JPEG q=75, a shrunk copy, no false reads,
every output of the service, the CLI's `faceanchor verify` and `POST /v1/verify`."""

import base64
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanchor.trust import watermark as wm

ROOT = Path(__file__).resolve().parents[2]
FACES = ROOT / "tests" / "data" / "faces"


def _photo(name, width=384):
    im = Image.open(FACES / name).convert("RGB")
    return im.resize((width, round(im.height * width / im.width)))


def _jpeg(img, q=75):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=q)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg", "astronaut.png"])
def test_payload_survives_lossless_jpeg_and_half_size(name):
    img = _photo(name)
    job = uuid.uuid4().hex
    marked = wm.embed(img, job)
    diff = np.asarray(marked, np.float64) - np.asarray(img, np.float64)
    psnr = 10 * np.log10(255**2 / (diff**2).mean())
    assert 30 < psnr < 60, psnr  # visible change is small but real
    assert wm.read(marked).job_id_prefix == job[:12]
    assert wm.read(_jpeg(marked)).job_id_prefix == job[:12]
    half = marked.resize((marked.width // 2, marked.height // 2), Image.LANCZOS)
    back = wm.read(half)
    assert back.found and back.job_id_prefix == job[:12] and back.scale == 2.0
    assert not wm.read(img).found  # the unmarked photo carries nothing


def test_no_false_reads_and_clear_errors():
    rng = np.random.default_rng(0)
    for _ in range(5):  # noise images: the CRC rejects whatever bits they decode to
        noise = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
        assert not wm.read(noise).found
    with pytest.raises(ValueError, match="too small"):
        wm.embed(Image.new("RGB", (48, 48)), uuid.uuid4().hex)
    with pytest.raises(ValueError, match="hex job id"):
        wm.payload_bits("not-a-job")
    assert wm.capacity_ok((64, 64)) and not wm.capacity_ok((56, 56))


def test_every_stored_output_carries_its_job_id(tmp_path):
    """The job worker's store step: each image's file carries the job id, and the result says so."""
    import tiny_engine as tiny
    from api_helpers import Harness, b64, png_bytes

    from faceanchor.config import Settings
    from faceanchor.trust.verify import verify_image

    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0)
    with Harness(settings, tiny.TinyEngine(size=160)) as h:
        r = h.client.post("/queue/instantid", headers=h.headers,
                          json={"face_image": b64(png_bytes()), "prompt": "x", "samples": 2, "seed": 3, "num_inference_steps": 1})
        assert r.status_code in (200, 201, 202), r.text
        body = h.wait(r.json()["status_url"])
        assert body["status"] == "COMPLETED", body
        job_id = r.json()["request_id"]
        res = h.client.get(r.json()["response_url"], headers=h.headers).json()
        assert len(res["images"]) == 2
        for img in res["images"]:
            assert img["trust"]["job_id"] == job_id and img["trust"]["watermark"]["applied"]
            data = h.client.get(img["url"], headers=h.headers).content
            out = verify_image(data)
            assert out["watermark"]["job_id_prefix"] == job_id[:12]
            assert out["watermark"]["matches_metadata"] is True
            v = h.client.post("/v1/verify", headers=h.headers, json={"image": base64.b64encode(data).decode()})
            assert v.status_code == 200 and v.json()["watermark"]["job_id_prefix"] == job_id[:12], v.text
        # bad input: 4xx with a JSON error; no key: 401
        bad = h.client.post("/v1/verify", headers=h.headers, json={"image": "not base64 !"})
        assert 400 <= bad.status_code < 500 and "image" in bad.json()["error"]["message"]
        junk = h.client.post("/v1/verify", headers=h.headers, json={"image": base64.b64encode(b"hello").decode()})
        assert junk.status_code == 415, junk.text
        assert h.client.post("/v1/verify", json={"image": b64(png_bytes())}).status_code == 401


def test_watermark_setting_off(tmp_path):
    from faceanchor.config import Settings
    from faceanchor.trust.finalise import Finisher

    img = _photo("obama.jpg", 256)
    out, info = Finisher(Settings(home=tmp_path, watermark=False)).prepare(img, "ab" * 16)
    assert out is img and info["watermark"]["applied"] is False
    out, info = Finisher(Settings(home=tmp_path)).prepare(img, "ab" * 16)
    assert info["watermark"]["payload"] == "ab" * 6 and wm.read(out).job_id_prefix == "ab" * 6


def _cli(tmp_path, *args):
    env = dict(os.environ, FACEANCHOR_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "faceanchor", *args], capture_output=True, text=True, env=env, timeout=300)


def test_every_method_output_is_marked_and_cli_verify_reads_it(tmp_path):
    """Every method's output (tiny weights, dlib pack), written by the CLI's writer, carries the
    run's id; `faceanchor verify` reads it."""
    import json

    from photos import small_copy

    from faceanchor.cli.generate import write_results
    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.methods.registry import names
    from faceanchor.types import GenerationRequest

    from certs import make_chain

    chain, key = make_chain(tmp_path / "certs")  # content credentials too (tests/trust/test_credentials.py)
    settings = Settings(home=tmp_path / "home", c2pa_cert_chain=chain, c2pa_private_key=key)
    engine = Engine(settings, weights="tiny", face_pack="dlib")
    face = small_copy("obama.jpg", 240)
    paths = []
    for method in names():
        req = GenerationRequest(method=method, face_image=face, prompt="x", num_inference_steps=1, width=128, height=128, seed=1)
        paths += write_results(engine.generate(req), tmp_path / method, method, "png", True, settings=settings)
    assert len(paths) >= 2
    for path in paths:
        from faceanchor.trust.verify import verify_image

        got = verify_image(Path(path).read_bytes())
        assert got["watermark"]["found"] and got["watermark"]["job_id_prefix"] == got["metadata_job_id"][:12], (path, got)
        cred = got["credentials"]
        assert cred["found"] and cred["valid"], cred
        gen = cred["assertions"]["faceanchor.generation"]
        assert gen["job_id"] == got["metadata_job_id"] and gen["method"] == Path(path).parent.name
        assert gen["reference_face"]["used"] and len(gen["reference_face"]["embedding_sha256"]) == 64 and gen["models"]
    v = _cli(tmp_path, "verify", paths[-1])
    assert v.returncode == 0 and f"watermark: job {got['metadata_job_id'][:12]}" in v.stdout, v.stdout + v.stderr
    assert "credentials: C2PA manifest, valid" in v.stdout and "faceanchor test signer" in v.stdout, v.stdout


def test_cli_verify_bad_input_is_one_line(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not an image")
    for args, words in ((["verify", str(tmp_path / "nope.png")], "no such file"), (["verify", str(tmp_path / "x.png")], "not a readable image")):
        p = _cli(tmp_path, *args)
        assert p.returncode == 2 and words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert "Traceback" not in p.stderr
    plain = tmp_path / "plain.png"
    _photo("obama.jpg", 256).save(plain)
    p = _cli(tmp_path, "verify", str(plain))
    assert p.returncode == 0 and "watermark: none found" in p.stdout
