import math

import numpy as np
import pytest

from faceanchor.face.kps import KPS_COLORS, draw_kps

KPS = np.array([[100.0, 100.0], [200.0, 100.0], [150.0, 160.0], [110.0, 220.0], [190.0, 220.0]])


def test_size_mode_and_colours_at_centres():
    img = draw_kps((320, 256), KPS)
    assert img.size == (320, 256) and img.mode == "RGB"
    arr = np.asarray(img)
    for (x, y), colour in zip(KPS, KPS_COLORS):
        assert tuple(arr[int(y), int(x)]) == colour
        # the circle has radius 10: 9 px away is still the point colour, 12 px away is not
        assert tuple(arr[int(y), int(x) + 9]) == colour
        assert tuple(arr[int(y), int(x) + 12]) != colour


def test_limb_midpoint_is_dimmed_first_point_colour():
    arr = np.asarray(draw_kps((320, 256), KPS))
    # limb 0 (left eye → nose): its midpoint is 39 px from both ends, outside both circles
    mx, my = (KPS[0] + KPS[2]) / 2
    assert math.hypot(mx - KPS[0][0], my - KPS[0][1]) > 12
    expected = tuple(int(c * 0.6) for c in KPS_COLORS[0])
    assert expected == (153, 0, 0)
    assert tuple(arr[int(my), int(mx)]) == expected
    # limb 3 (left mouth → nose) has the yellow of point 3, dimmed
    mx, my = (KPS[3] + KPS[2]) / 2
    assert tuple(arr[int(my), int(mx)]) == (153, 153, 0)


def test_black_elsewhere_and_limb_half_width():
    arr = np.asarray(draw_kps((320, 256), KPS))
    assert tuple(arr[5, 5]) == (0, 0, 0)
    assert tuple(arr[250, 310]) == (0, 0, 0)
    # the eye→nose limb is ~4 px wide each side: 8 px off its axis is black
    mx, my = (KPS[1] + KPS[2]) / 2  # right eye → nose, green
    d = KPS[2] - KPS[1]
    n = np.array([-d[1], d[0]]) / np.hypot(*d)
    px, py = np.array([mx, my]) + 8 * n
    assert tuple(arr[int(round(py)), int(round(px))]) == (0, 0, 0)
    assert tuple(arr[int(my), int(mx)]) == (0, 153, 0)
    # the only colours present are black, the 5 point colours and the 4 dimmed limb colours
    allowed = {(0, 0, 0), *KPS_COLORS, *(tuple(int(c * 0.6) for c in KPS_COLORS[i]) for i in (0, 1, 3, 4))}
    present = {tuple(p) for p in arr.reshape(-1, 3)}
    assert present <= allowed


def test_matches_reference_geometry_pixel_for_pixel():
    """Re-derive the InstantID drawing with OpenCV primitives and compare every pixel."""
    import cv2
    h, w = 256, 320
    ref = np.zeros((h, w, 3))
    for a, b in ((0, 2), (1, 2), (3, 2), (4, 2)):
        x, y = KPS[[a, b], 0], KPS[[a, b], 1]
        length = ((x[0] - x[1]) ** 2 + (y[0] - y[1]) ** 2) ** 0.5
        angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
        poly = cv2.ellipse2Poly((int(np.mean(x)), int(np.mean(y))), (int(length / 2), 4), int(angle), 0, 360, 1)
        ref = cv2.fillConvexPoly(ref.copy(), poly, KPS_COLORS[a])
    ref = (ref * 0.6).astype(np.uint8)
    for i, (x, y) in enumerate(KPS):
        ref = cv2.circle(ref.copy(), (int(x), int(y)), 10, KPS_COLORS[i], -1)
    assert np.array_equal(np.asarray(draw_kps((w, h), KPS)), ref)


def test_accepts_an_image_for_its_size_and_rejects_wrong_point_count():
    from PIL import Image

    assert draw_kps(Image.new("RGB", (64, 48)), KPS / 4).size == (64, 48)
    with pytest.raises(ValueError):
        draw_kps((64, 64), KPS[:4])
