import numpy as np
import pytest

from faceanchor.face.detect_scrfd import ScrfdDetector, distance2bbox, distance2kps, layout_of, nms


@pytest.fixture(scope="module")
def scrfd(scrfd_model_path):
    return ScrfdDetector(scrfd_model_path).prepare()


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png"])
def test_real_scrfd_finds_one_sane_face(scrfd, load_face, dlib_analyzer, name):
    img = np.asarray(load_face(name))
    faces = scrfd.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.det_score > 0.6
    le, re, nose, ml, mr = f.kps
    assert le[0] < re[0] and ml[0] < mr[0]
    assert nose[1] > max(le[1], re[1]) and min(ml[1], mr[1]) > nose[1]
    # agrees with dlib's 68-landmark keypoints (two independent models) to a few % of the face
    d = dlib_analyzer.detect(img)[0]
    size = f.bbox[2] - f.bbox[0]
    assert np.abs(f.kps[:2] - d.kps[:2]).max() < 0.08 * size


def test_fixed_input_model_and_smaller_det_sizes(scrfd, load_face):
    assert scrfd.fixed_input_size == (640, 640)
    img = np.asarray(load_face("obama.jpg"))
    a = scrfd.detect(img, det_size=640)[0]
    b = scrfd.detect(img, det_size=320)[0]
    # the same face at a coarser scale: boxes overlap strongly
    assert np.abs(a.kps - b.kps).max() < 0.1 * (a.bbox[2] - a.bbox[0])


def test_blank_image_has_no_face(scrfd):
    assert scrfd.detect(np.zeros((480, 640, 3), dtype=np.uint8)) == []
    assert scrfd.detect(np.full((300, 200, 3), 200, dtype=np.uint8)) == []


def test_several_faces_highest_score_first_boxes_unclipped(scrfd, load_face):
    """InsightFace's order (score, not size) and values (boxes may reach past the image)."""
    from PIL import Image

    big = load_face("obama.jpg").resize((455, 568))
    small = load_face("biden.jpg").resize((242, 551))
    canvas = Image.new("RGB", (800, 600), (90, 90, 90))
    canvas.paste(small, (20, 20))
    canvas.paste(big, (320, 10))
    faces = scrfd.detect(np.asarray(canvas))
    assert len(faces) == 2
    assert faces[0].det_score > faces[1].det_score
    # here the smaller (biden, left) face scores higher: score order is not size order
    assert faces[0].bbox[0] < 300 and faces[0].area < faces[1].area
    # a face cut by the left border: its box starts left of the image, as InsightFace's does
    part = np.asarray(load_face("obama_partial_face.jpg"))
    (f,) = scrfd.detect(part)
    assert f.bbox[0] < -10 and f.kps[:, 0].min() > 0


def test_box_and_kps_decoding():
    pts = np.array([[16.0, 24.0]])
    np.testing.assert_allclose(distance2bbox(pts, np.array([[1.0, 2.0, 3.0, 4.0]])), [[15, 22, 19, 28]])
    np.testing.assert_allclose(distance2kps(pts, np.array([[1.0, -1.0] * 5])), [[17, 23] * 5])


def test_nms_drops_overlaps():
    dets = np.array([[0, 0, 10, 10, 0.9], [1, 1, 10, 10, 0.8], [50, 50, 60, 60, 0.7]], dtype=np.float32)
    assert nms(dets, 0.4) == [0, 2]


def test_layouts():
    assert layout_of(9) == ((8, 16, 32), 2, True)
    assert layout_of(15) == ((8, 16, 32, 64, 128), 1, True)
    with pytest.raises(ValueError):
        layout_of(1)
