import numpy as np
import pytest
from batched_onnx import CountingSession

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


def _photos(load_face):
    names = ["obama.jpg", "biden.jpg", "astronaut.png", "obama_partial_face.jpg"]
    return [np.asarray(load_face(n)) for n in names] + [np.zeros((300, 400, 3), np.uint8)]


def _same(a, b, exact=True):
    """The same faces; ``exact=False``: up to float rounding (a batched convolution may sum in
    another order: last-bit differences, 1e-3 px at most)."""
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert len(fa) == len(fb)
        for x, y in zip(fa, fb):
            if exact:
                assert np.array_equal(x.bbox, y.bbox) and np.array_equal(x.kps, y.kps) and x.det_score == y.det_score
            else:
                np.testing.assert_allclose(x.bbox, y.bbox, rtol=0, atol=1e-3)
                np.testing.assert_allclose(x.kps, y.kps, rtol=0, atol=1e-3)
                assert abs(x.det_score - y.det_score) < 1e-5


@pytest.mark.parametrize("det_size", [640, 320])
def test_detect_many_is_one_batched_call_equal_to_detect(scrfd, batched_models, load_face, det_size):
    photos = _photos(load_face)
    one_by_one = [scrfd.detect(p, det_size=det_size) for p in photos]
    batched = ScrfdDetector(batched_models["scrfd"]).prepare()
    assert batched.batchable and not scrfd.batchable
    batched._session = CountingSession(batched._session)
    many = batched.detect_many(photos, det_size=det_size)
    assert batched._session.batches == [len(photos)]  # every image in one network call
    _same(many, one_by_one, exact=False)  # the fixed-batch model's faces, image by image
    assert [len(f) for f in many] == [1, 1, 1, 1, 0]


def test_detect_many_on_a_fixed_batch_model_goes_image_by_image(scrfd_model_path, load_face):
    photos = _photos(load_face)[:3]
    det = ScrfdDetector(scrfd_model_path).prepare()
    det._session = CountingSession(det._session)
    many = det.detect_many(photos)
    assert det._session.batches == [1, 1, 1]
    _same(many, [det.detect(p) for p in photos])
