import numpy as np
import pytest

from faceanchor.face.detect_dlib import DlibDetector, kps_from_landmarks
from faceanchor.face.packs import find_dlib_pack


def _sane(kps, bbox):
    le, re, nose, ml, mr = kps
    x1, y1, x2, y2 = bbox
    assert le[0] < re[0], "left eye (image-left) first"
    assert ml[0] < mr[0], "left mouth corner (image-left) first"
    assert min(le[0], re[0]) < nose[0] < max(le[0], re[0])
    assert nose[1] > max(le[1], re[1]), "nose below the eyes"
    assert min(ml[1], mr[1]) > nose[1], "mouth below the nose"
    for x, y in kps:
        assert x1 - 5 <= x <= x2 + 5 and y1 - 5 <= y <= y2 + 5


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png"])
def test_hog_keypoints_sane_on_frontal_faces(name, dlib_analyzer, load_face):
    faces = dlib_analyzer.detect(load_face(name))
    assert faces, name
    face = faces[0]
    _sane(face.kps, face.bbox)
    assert 0.5 < face.det_score < 1.0
    assert face.embedding is None


def test_kps_from_landmarks_mapping():
    pts = np.zeros((68, 2), dtype=np.float32)
    pts[36:42] = [10, 20]
    pts[42:48] = [30, 20]
    pts[30] = [20, 30]
    pts[48] = [12, 40]
    pts[54] = [28, 40]
    np.testing.assert_array_equal(kps_from_landmarks(pts), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])


def test_cnn_detector_agrees_with_hog(settings, load_face):
    pack = find_dlib_pack(settings, need_cnn=True)
    img = np.asarray(load_face("astronaut.png"))
    cnn = DlibDetector(pack.landmarks, mode="cnn", cnn_path=pack.cnn).prepare()
    hog = DlibDetector(pack.landmarks, mode="hog").prepare()
    c = max(cnn.detect(img, upsample=0), key=lambda f: f.area)
    h = max(hog.detect(img, upsample=1), key=lambda f: f.det_score)
    _sane(c.kps, c.bbox)
    # same face: eye keypoints within a few pixels
    assert np.abs(c.kps[:2] - h.kps[:2]).max() < 8


def test_bad_mode():
    with pytest.raises(ValueError):
        DlibDetector("x.dat", mode="yolo")
