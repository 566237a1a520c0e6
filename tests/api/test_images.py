"""Fuzzed and malformed images (truncated, bombs, wrong types, huge dimensions): 4xx, never 500."""

import io
import struct
import zlib

import pytest
from api_helpers import Harness, b64, png_bytes, tiny
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st
from PIL import Image


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height but carries one tiny IDAT (a decompression bomb shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def encoded(fmt: str, size=(40, 40), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert(mode).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def hz(tmp_path_factory):
    from faceanchor.config import Settings

    settings = Settings(home=tmp_path_factory.mktemp("img"), rate_limit_per_minute=0, max_image_pixels=4_000_000)
    with Harness(settings, tiny.TinyEngine()) as h:
        yield h


def submit(hz, data: bytes, route="/queue/instantid"):
    return hz.client.post(route, json={"face_image": b64(data), "num_inference_steps": 1}, headers=hz.headers)


CASES = {
    "truncated png": (png_bytes((64, 64))[:200], 415),
    "truncated jpeg": (encoded("JPEG", (64, 64))[:300], 415),
    "huge dimensions png": (png_with_size(100_000, 100_000), 413),
    "over pixel limit": (png_with_size(3000, 3000), 413),
    "gif": (encoded("GIF"), 415),
    "bmp": (encoded("BMP"), 415),
    "tiff": (encoded("TIFF"), 415),
    "pdf": (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n", 415),
    "text": (b"hello, this is not an image", 415),
    "zero bytes png header only": (b"\x89PNG\r\n\x1a\n", 415),
    "zero-size png": (png_with_size(0, 0), 415),
}


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_images_are_4xx(hz, name):
    data, expected = CASES[name]
    for route in ("/queue/instantid", "/v1/faceid", "/v1/instantid"):
        r = submit(hz, data, route)
        # /v1/instantid is Segmind-shaped: an unreadable image is its 400 "invalid request format"
        want = 400 if route == "/v1/instantid" and expected == 415 else expected
        assert r.status_code == want, (name, route, r.text)
        assert set(r.json()["error"]) == {"type", "message"}


def test_unusual_but_valid_modes_are_accepted(hz):
    for data in (encoded("PNG", mode="L"), encoded("PNG", mode="RGBA"), encoded("PNG", mode="P"), encoded("WEBP"), encoded("JPEG", mode="CMYK")):
        r = submit(hz, data, "/v1/instantid")
        assert r.status_code == 200, r.text


@hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.binary(min_size=1, max_size=2000))
def test_random_bytes_never_500(hz, data):
    r = submit(hz, data)
    assert 400 <= r.status_code < 500 or r.status_code == 200, r.text


_VALID = png_bytes((32, 32))


@hsettings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(flips=st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.integers(8, len(_VALID)))
def test_mutated_png_never_500(hz, flips, cut):
    data = bytearray(_VALID)
    for pos, value in flips:
        data[pos] = value
    r = submit(hz, bytes(data[:cut]), "/v1/instantid")
    assert r.status_code < 500, r.text
