"""The 3D mean-face fit and yaw rotation of the five keypoints."""

import numpy as np
import pytest

from faceanchor.face.align import template
from faceanchor.face.pose3d import MEAN_FACE_MM, fit_face, posed_kps, rotate_kps
from faceanchor.face.quality import estimate_yaw

FRONTAL = template(112).astype(np.float64)  # ArcFace's frontal template, in pixels


def _roll(kps, deg, centre=(56, 70)):
    a = np.radians(deg)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (kps - centre) @ R.T + centre


def test_zero_yaw_returns_the_input_keypoints():
    for kps in (FRONTAL, _roll(FRONTAL, 17) * 3 + 40, rotate_kps(FRONTAL, 30)):
        assert np.allclose(rotate_kps(kps, 0.0), kps, atol=1e-4)
        # the lifted fit reprojects exactly even without the shortcut
        fit = fit_face(kps)
        assert np.allclose(fit.project(fit.points), kps, atol=1e-6)


@pytest.mark.parametrize("yaw", [45.0, -45.0])
def test_turning_moves_the_nose_toward_the_turned_side_and_narrows_the_far_eye(yaw):
    out = rotate_kps(FRONTAL, yaw)
    side = np.sign(yaw)  # +: toward the image's right
    nose_shift = out[2, 0] - FRONTAL[2, 0]
    assert side * nose_shift > 5.0  # pixels, at a 35 px eye distance
    # nose relative to the eye midpoint moves to the turned side as well
    assert side * (out[2, 0] - out[:2, 0].mean()) > side * (FRONTAL[2, 0] - FRONTAL[:2, 0].mean()) + 5.0
    iod_before = np.linalg.norm(FRONTAL[1] - FRONTAL[0])
    iod_after = np.linalg.norm(out[1] - out[0])
    assert iod_after < iod_before * 0.8  # cos 45° ≈ 0.71
    far = 1 if yaw > 0 else 0  # the eye on the turned side is the far one
    near = 1 - far
    assert abs(out[far, 0] - out[2, 0]) < abs(out[near, 0] - out[2, 0])  # the far eye closes in on the nose
    assert np.sign(estimate_yaw(out)) == side and abs(estimate_yaw(out)) > 25
    # vertical positions barely move for a pure yaw of an upright face
    assert np.abs(out[:, 1] - FRONTAL[:, 1]).max() < 1.0


def test_rotation_is_about_the_face_itself_under_roll_and_scale():
    kps = _roll(FRONTAL, 25) * 2.5 + 100
    out = rotate_kps(kps, 45)
    # undo the roll: the same result as turning the upright face, scaled and rolled
    ref = _roll(rotate_kps(FRONTAL, 45), 25) * 2.5 + 100
    assert np.allclose(out, ref, atol=0.5)


def test_fit_recovers_a_known_pose_and_posed_kps_frames_it():
    turned = rotate_kps(FRONTAL, 30)
    yaw, pitch, roll = fit_face(turned).angles_deg
    assert abs(yaw - 30) < 3 and abs(roll) < 2
    front = posed_kps(turned, 0, (100, 120))
    assert abs(estimate_yaw(front)) < 1
    assert np.isclose(np.linalg.norm(front[1] - front[0]), 22.0, atol=0.5)  # 0.22 of the width
    right = posed_kps(turned, 45, (100, 120))
    left = posed_kps(turned, -45, (100, 120))
    assert right[2, 0] > front[2, 0] > left[2, 0]


def test_bad_keypoints_are_refused():
    with pytest.raises(ValueError):
        rotate_kps(np.zeros((4, 2)), 10)
    with pytest.raises(ValueError):
        rotate_kps(np.zeros((5, 2)), 10)
    assert MEAN_FACE_MM.shape == (5, 3)
