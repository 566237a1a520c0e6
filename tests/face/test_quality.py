import numpy as np
import pytest
from PIL import ImageFilter

from faceanchor.face.quality import assess_quality, estimate_yaw
from faceanchor.face.align import ARCFACE_DST


def test_frontal_template_has_zero_yaw_and_roll_does_not_matter():
    assert abs(estimate_yaw(ARCFACE_DST)) < 3
    a = np.deg2rad(30)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    assert abs(estimate_yaw(ARCFACE_DST @ rot.T)) < 3


def test_yaw_sign_and_profile():
    k = ARCFACE_DST.copy()
    k[2, 0] += 25  # nose far to the image's right
    assert estimate_yaw(k) > 45
    k[2, 0] -= 50
    assert estimate_yaw(k) < -45


def test_sharp_photo_has_no_warnings(dlib_analyzer, load_face):
    img = load_face("obama.jpg")
    face = dlib_analyzer.get(img)[0]
    q = face.quality
    assert q.size_px > 200 and q.blur > 200 and abs(q.yaw_deg) < 15 and q.warnings == ()
    assert q.det_score == pytest.approx(face.det_score)


def test_blurred_photo_is_flagged(dlib_analyzer, load_face):
    img = load_face("obama.jpg")
    face = dlib_analyzer.detect(img)[0]
    blurred = np.asarray(img.filter(ImageFilter.GaussianBlur(8)))
    q = assess_quality(blurred, face)
    assert q.blur < 60 and any("blurred" in w for w in q.warnings)


def test_profile_and_small_flags(dlib_analyzer, load_face):
    img = np.asarray(load_face("obama.jpg"))
    face = dlib_analyzer.detect(img)[0]
    k = face.kps.copy()
    k[2, 0] = k[1, 0] + 10  # nose beyond the right eye
    q = assess_quality(img, face.with_(kps=k, bbox=[0, 0, 40, 40], det_score=0.3))
    text = " ".join(q.warnings)
    assert "profile" in text and "small" in text and "low detection score" in text
