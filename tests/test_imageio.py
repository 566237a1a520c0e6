import base64
import io

import numpy as np
import pytest
from PIL import Image

from faceanchor.errors import ImageInputError, ImageTooLargeError
from faceanchor.imageio import ImageLimits, encode_image, load_image, read_metadata


def _bytes(img, fmt="PNG", **kw):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = Image.fromarray(np.arange(48 * 32 * 3, dtype=np.uint8).reshape(32, 48, 3) % 251)


def test_path_bytes_base64_and_data_uri(tmp_path):
    data = _bytes(RGB)
    p = tmp_path / "a.png"
    p.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    for src in (str(p), p, data, b64, "data:image/png;base64," + b64):
        img = load_image(src)
        assert img.mode == "RGB" and img.size == (48, 32)
        assert np.array_equal(np.asarray(img), np.asarray(RGB))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16"])
def test_modes_become_rgb(mode):
    src = RGB.convert("L").convert(mode) if mode in ("LA", "I;16") else RGB.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    img = load_image(_bytes(src, fmt))
    assert img.mode == "RGB" and img.size == (48, 32)


def test_rgba_composited_on_white():
    img = load_image(_bytes(Image.new("RGBA", (4, 4), (255, 0, 0, 0))))
    assert np.asarray(img)[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img = load_image(_bytes(RGB, "JPEG", exif=exif.tobytes()))
    assert img.size == (32, 48)


def test_webp_allowed():
    assert load_image(_bytes(RGB, "WEBP")).size == (48, 32)


@pytest.mark.parametrize("fmt,kind", [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF")])
def test_wrong_formats_named(fmt, kind):
    with pytest.raises(ImageInputError, match=f"photo.x: {kind} images are not supported; use JPEG, PNG or WEBP"):
        load_image(_bytes(RGB, fmt), name="photo.x")


def test_unreadable_truncated_empty_and_missing(tmp_path):
    with pytest.raises(ImageInputError, match="not a readable image"):
        load_image(b"\x89PNG but not really")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = _bytes(noisy, "JPEG")
    with pytest.raises(ImageInputError, match="cut.jpg: the JPEG file is truncated or corrupt"):
        load_image(data[: len(data) // 2], name="cut.jpg")
    with pytest.raises(ImageInputError, match="empty input"):
        load_image(b"")
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(str(tmp_path / "none.png"))
    with pytest.raises(ImageInputError, match="not a file path, base64 text or data: URI"):
        load_image("not base64 at all !!!")


def test_byte_limit_before_decoding(tmp_path):
    data = _bytes(RGB)
    limits = ImageLimits(max_bytes=100)
    p = tmp_path / "big.png"
    p.write_bytes(data)
    with pytest.raises(ImageTooLargeError, match=f"big.png: file is {len(data)} bytes, over the limit of 100 bytes"):
        load_image(str(p), limits)
    with pytest.raises(ImageTooLargeError, match="over the limit of 100 bytes"):
        load_image(data, limits)
    with pytest.raises(ImageTooLargeError, match="over the limit of 100 bytes"):
        load_image(base64.b64encode(data).decode(), limits)


def test_decompression_bomb_refused_from_header():
    import tracemalloc

    bomb = _bytes(Image.new("L", (9000, 9000)), optimize=True)  # 81 MP, a few hundred KB
    assert len(bomb) < 2_000_000
    tracemalloc.start()
    with pytest.raises(ImageTooLargeError, match="9000x9000 is 81000000 pixels, over the limit of 40000000 pixels"):
        load_image(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20_000_000  # the 81 MB of pixels were never allocated
    with pytest.raises(ImageTooLargeError, match="over the limit of 1000 pixels"):
        load_image(RGB, ImageLimits(max_pixels=1000))


def test_arrays_and_bad_arrays():
    assert load_image(np.zeros((5, 6, 3), dtype=np.uint8)).size == (6, 5)
    with pytest.raises(ImageInputError, match="uint8"):
        load_image(np.zeros((5, 6, 3), dtype=np.float32))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_with_metadata_roundtrip(fmt):
    meta = {"seed": 7, "params": {"prompt": "a photo"}}
    data = encode_image(RGB, fmt, meta)
    assert read_metadata(data) == meta
    assert load_image(data).size == (48, 32)
    with pytest.raises(ImageInputError, match="not supported"):
        encode_image(RGB, "gif")


def test_jpeg_and_webp_metadata_fit_exif_even_with_a_very_long_prompt():
    from PIL import Image as _Image

    from faceanchor.imageio import encode_image, read_metadata

    long = "长" * 20_000  # ~60 KB of UTF-8, twice (prompt and prompt_used) with ensure_ascii escapes
    meta = {"seed": 3, "params": {"prompt": long, "prompt_used": long, "steps": 30}}
    img = _Image.new("RGB", (16, 16), (10, 20, 30))
    for fmt in ("jpeg", "webp"):
        back = read_metadata(encode_image(img, fmt, meta))
        assert back["seed"] == 3 and back["params"]["steps"] == 30
        assert back["params"]["prompt"].startswith("长") and back["params"]["prompt"].endswith("…[truncated]")
    # short metadata is kept whole
    assert read_metadata(encode_image(img, "jpeg", {"seed": 1, "p": "x" * 100})) == {"seed": 1, "p": "x" * 100}
    # PNG keeps everything
    assert read_metadata(encode_image(img, "png", meta))["params"]["prompt"] == long
