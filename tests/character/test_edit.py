"""Edits of a phone-size photo (obama3.jpg, 1434 x 2333) work within the working-size cap and
composite back at full resolution: untouched pixels are bit-identical to the original."""

import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanchor.character.edit import edit_background, edit_face
from faceanchor.config import Settings
from faceanchor.engine import Engine
from faceanchor.types import GenerationRequest

sys.path.insert(0, str(Path(__file__).parents[1]))
from photos import FACES, small_copy  # noqa: E402

FIELDS = dict(prompt="on a beach", num_inference_steps=2, seed=3)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(Settings(home=tmp_path_factory.mktemp("home"), device="cpu"), weights="tiny", face_pack="dlib")
    # speed: benchmarks/bounded_edit.py (the uncapped edit of this photo ran > 25 min)


@pytest.fixture(scope="module")
def phone_photo():
    img = Image.open(FACES / "obama3.jpg").convert("RGB")
    assert img.size == (1434, 2333)
    return img


class Spy:
    """Records the sizes the engine renders at."""

    def __init__(self, engine, monkeypatch):
        self.sizes = []
        orig = engine.render

        def render(request, identity, image, kps, **kw):
            self.sizes.append(image.size)
            return orig(request, identity, image, kps, **kw)

        monkeypatch.setattr(engine, "render", render)


def test_background_edit_of_a_phone_photo_is_capped_and_keeps_the_person_exactly(engine, phone_photo, monkeypatch):
    spy = Spy(engine, monkeypatch)
    request = GenerationRequest(face_image=small_copy("obama.jpg"), **FIELDS)
    cap = engine.work_pixels(request)
    t0 = time.perf_counter()
    res = edit_background(engine, request, phone_photo, mask_source="face-box")
    took = time.perf_counter() - t0
    (w, h), = spy.sizes
    assert w * h <= cap < phone_photo.width * phone_photo.height  # worked at the cap, not at 3.3 MP
    assert abs(w / h - phone_photo.width / phone_photo.height) < 0.2  # same aspect, on the grid
    out, src = np.asarray(res.image), np.asarray(phone_photo)
    assert res.image.size == phone_photo.size  # composited back at full resolution
    edited = np.asarray(res.mask) > 0
    assert 0.05 < edited.mean() < 0.95
    assert np.array_equal(out[~edited], src[~edited])  # the person: bit-identical
    assert np.abs(out[edited].astype(int) - src[edited]).mean() > 1  # the background: regenerated
    print(f"background edit of 1434x2333 at {w}x{h}: {took:.2f} s")


def test_face_edit_of_a_phone_photo_touches_only_the_face_crop(engine, phone_photo, monkeypatch):
    spy = Spy(engine, monkeypatch)
    request = GenerationRequest(face_image=small_copy("obama.jpg"), **FIELDS)
    res = edit_face(engine, request, phone_photo)
    (w, h), = spy.sizes
    assert w == h and w * h <= engine.work_pixels(request)
    x1, y1, x2, y2 = res.box
    assert x2 - x1 > w  # the crop is larger than the render: scaled down, rendered, scaled back
    out, src = np.asarray(res.image), np.asarray(phone_photo)
    outside = np.ones(src.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert res.image.size == phone_photo.size
    assert np.array_equal(out[outside], src[outside])
    assert np.abs(out[~outside].astype(int) - src[~outside]).mean() > 1


def test_the_cap_follows_the_settings_and_the_weights(tmp_path):
    request = GenerationRequest(method="instantid")
    full = Engine(Settings(home=tmp_path, device="cpu"), weights="dummy")
    assert full.work_pixels(request) == 1_310_000  # SDXL-class default
    assert Engine(Settings(home=tmp_path, device="cpu", work_megapixels_sdxl=0.5), weights="dummy").work_pixels(request) == 500_000
    sd15 = GenerationRequest(method="faceid", base="sd15")
    assert full.work_pixels(sd15) == 400_000
    tiny = Engine(Settings(home=tmp_path, device="cpu"), weights="tiny")
    assert tiny.work_pixels(request) == 1_310_000 // 64  # tiny weights: (128 / 1024)² of it
