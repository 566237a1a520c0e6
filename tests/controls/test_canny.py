from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanchor import controls
from faceanchor.controls.canny import canny_image
from faceanchor.errors import InvalidInputError

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"


def test_canny_on_a_face_photo():
    src = Image.open(FACES / "obama.jpg")
    out = canny_image(src)
    assert out.size == src.size and out.mode == "RGB"
    a = np.asarray(out)
    assert set(np.unique(a)) == {0, 255}  # binary
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])
    frac = (a[..., 0] == 255).mean()
    assert 0.005 < frac < 0.3  # edges, neither nothing nor everything


def test_thresholds_matter_and_package_entry():
    src = Image.open(FACES / "biden.jpg").reduce(2)
    low = (np.asarray(canny_image(src, 50, 100))[..., 0] > 0).sum()
    high = (np.asarray(canny_image(src, 200, 400))[..., 0] > 0).sum()
    assert low > high > 0
    assert np.array_equal(np.asarray(controls.canny_image(src)), np.asarray(canny_image(src, 100, 200)))


def test_flat_image_has_no_edges_and_arrays_work():
    flat = np.full((40, 60, 3), 128, np.uint8)
    assert np.asarray(canny_image(flat)).max() == 0
    box = flat.copy()
    box[10:30, 20:40] = 255
    out = np.asarray(canny_image(box))
    assert out.shape == (40, 60, 3) and out[8:12, 25, 0].max() == 255 and out[20, 30, 0] == 0
    assert np.asarray(canny_image(box[..., 0])).shape == (40, 60, 3)  # grayscale input


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="low <= high"):
        canny_image(np.zeros((8, 8, 3), np.uint8), 200, 100)
    with pytest.raises(InvalidInputError, match="uint8"):
        canny_image(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InvalidInputError, match="HxWx3"):
        canny_image(np.zeros((8, 8, 2), np.uint8))
