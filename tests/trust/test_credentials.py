"""C2PA content credentials: signed with an operator chain made in set-up (tests/trust/certs.py),
read back with c2pa-python; through the job worker, `POST /v1/verify` and `faceanchor verify`."""

import base64
import io

import pytest
from PIL import Image

from faceanchor.errors import FaceAnchorError


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from certs import make_chain

    return make_chain(tmp_path_factory.mktemp("certs"))


def _png(size=(160, 160)):
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_sign_and_read_back_each_format(chain, fmt, tmp_path):
    from faceanchor.config import Settings
    from faceanchor.imageio import encode_image
    from faceanchor.trust.credentials import read_manifest
    from faceanchor.trust.finalise import Finisher
    from faceanchor.trust.verify import verify_image

    settings = Settings(home=tmp_path, c2pa_cert_chain=chain[0], c2pa_private_key=chain[1])
    fin = Finisher(settings)
    meta = {"seed": 5, "params": {"method": "instantid", "seed": 5, "reference_sha256": "ab" * 32, "face_space": "dlib"},
            "models": {"base": "tiny-sdxl"}}
    img, info = fin.prepare(Image.open(io.BytesIO(_png())), "cd" * 16)
    data = fin.seal(encode_image(img, fmt, dict(meta, trust=info)), fmt, info, meta)
    mime = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}[fmt]
    got = read_manifest(data, mime)
    assert got["found"] and got["valid"] and got["trusted"] is False  # a test CA is on no trust list
    assert got["signature"]["common_name"] == "faceanchor test signer" and got["signature"]["alg"].lower() == "es256"
    gen = got["assertions"]["faceanchor.generation"]
    assert gen["job_id"] == "cd" * 16 and gen["seed"] == 5 and gen["method"] == "instantid" and gen["models"] == {"base": "tiny-sdxl"}
    assert gen["reference_face"] == {"used": True, "embedding_sha256": "ab" * 32, "space": "dlib"}
    actions = next(v for k, v in got["assertions"].items() if k.startswith("c2pa.actions"))["actions"]
    assert actions[0]["action"] == "c2pa.created" and actions[0]["digitalSourceType"].endswith("trainedAlgorithmicMedia")
    # the pixels and the watermark survive signing; the image still decodes
    out = verify_image(data)
    assert out["watermark"]["job_id_prefix"] == "cd" * 6 and out["credentials"]["valid"]


def test_tampered_pixels_invalidate_the_manifest(chain, tmp_path):
    from faceanchor.trust.credentials import CredentialSigner, read_manifest

    signer = CredentialSigner(chain[0].read_bytes(), chain[1].read_bytes())
    data = signer.sign(_png(), "png", {"job_id": "x"})
    assert read_manifest(data, "image/png")["valid"]
    img = Image.open(io.BytesIO(data))
    idat = data.find(b"IDAT")
    bad = bytearray(data)
    bad[idat + 40] ^= 0xFF  # one byte of the image data
    got = read_manifest(bytes(bad), "image/png")
    assert got["found"] and not got["valid"], got["validation_status"]
    assert img.size == (160, 160)
    assert read_manifest(_png(), "image/png") == {"found": False}


def test_bad_signing_configuration_is_one_clear_error(chain, tmp_path):
    from faceanchor.config import Settings
    from faceanchor.trust.credentials import CredentialSigner

    with pytest.raises(FaceAnchorError, match="both c2pa_cert_chain and c2pa_private_key"):
        CredentialSigner.from_settings(Settings(home=tmp_path, c2pa_cert_chain=chain[0]))
    with pytest.raises(FaceAnchorError, match="c2pa_private_key: cannot read"):
        CredentialSigner.from_settings(Settings(home=tmp_path, c2pa_cert_chain=chain[0], c2pa_private_key=tmp_path / "nope.pem"))
    other = tmp_path / "other.pem"
    other.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(FaceAnchorError, match="not usable"):
        CredentialSigner.from_settings(Settings(home=tmp_path, c2pa_cert_chain=chain[0], c2pa_private_key=other))
    assert CredentialSigner.from_settings(Settings(home=tmp_path)) is None


def test_worker_outputs_signed_and_verify_route_reads_them(chain, tmp_path):
    import tiny_engine as tiny
    from api_helpers import Harness, b64, png_bytes

    from faceanchor.config import Settings

    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, c2pa_cert_chain=chain[0], c2pa_private_key=chain[1])
    with Harness(settings, tiny.TinyEngine(size=128)) as h:
        r = h.client.post("/queue/faceid", headers=h.headers,
                          json={"face_image": b64(png_bytes()), "prompt": "x", "seed": 9, "num_inference_steps": 1, "output_format": "jpeg"})
        assert r.status_code in (200, 201, 202), r.text
        assert h.wait(r.json()["status_url"])["status"] == "COMPLETED"
        res = h.client.get(r.json()["response_url"], headers=h.headers).json()
        img = res["images"][0]
        assert img["trust"]["credentials"] == {"c2pa": True} and img["content_type"] == "image/jpeg"
        data = h.client.get(img["url"], headers=h.headers).content
        v = h.client.post("/v1/verify", headers=h.headers, json={"image": "data:image/jpeg;base64," + base64.b64encode(data).decode()})
        assert v.status_code == 200, v.text
        cred = v.json()["credentials"]
        assert cred["found"] and cred["valid"] and cred["assertions"]["faceanchor.generation"]["job_id"] == r.json()["request_id"]
        assert v.json()["watermark"]["job_id_prefix"] == r.json()["request_id"][:12]


def test_server_with_a_bad_key_reports_it_at_start(tmp_path):
    import tiny_engine as tiny
    from api_helpers import create_app
    from fastapi.testclient import TestClient

    from faceanchor.config import Settings

    settings = Settings(home=tmp_path / "home", c2pa_cert_chain=tmp_path / "missing.pem", c2pa_private_key=tmp_path / "missing.key")
    app = create_app(settings, tiny.TinyEngine(), load_in_background=False)
    with TestClient(app) as c:
        r = c.get("/health")
        assert r.status_code == 503 and "c2pa_cert_chain: cannot read" in str(r.json()), r.text


def test_trust_anchors_make_the_chain_trusted(chain, tmp_path):
    from faceanchor.config import Settings
    from faceanchor.trust.credentials import CredentialSigner
    from faceanchor.trust.verify import verify_image

    data = CredentialSigner(chain[0].read_bytes(), chain[1].read_bytes()).sign(_png(), "png", {"job_id": "x"})
    ca = tmp_path / "ca.pem"
    pem = chain[0].read_text()
    ca.write_text(pem[pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----"):].strip() + "\n")
    plain = verify_image(data)["credentials"]
    assert plain["valid"] and plain["trusted"] is False
    anchored = verify_image(data, settings=Settings(home=tmp_path, c2pa_trust_anchors=ca))["credentials"]
    assert anchored["valid"] and anchored["trusted"] is True, anchored["validation_status"]
    from certs import make_chain

    other = make_chain(tmp_path / "other")  # a chain from another CA stays untrusted
    data2 = CredentialSigner(other[0].read_bytes(), other[1].read_bytes()).sign(_png(), "png", {"job_id": "y"})
    assert verify_image(data2, settings=Settings(home=tmp_path, c2pa_trust_anchors=ca))["credentials"]["trusted"] is False


def test_thumbnail_off_by_default_keeps_the_manifest_small(chain):
    from faceanchor.trust.credentials import CredentialSigner

    big = _png((512, 512))
    small = CredentialSigner(chain[0].read_bytes(), chain[1].read_bytes()).sign(big, "png", {"job_id": "x"})
    thumb = CredentialSigner(chain[0].read_bytes(), chain[1].read_bytes(), thumbnail=True).sign(big, "png", {"job_id": "x"})
    assert len(small) - len(big) < 10_000 < len(thumb) - len(big)
