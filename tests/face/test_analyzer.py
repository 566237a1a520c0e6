import numpy as np
import pytest
from PIL import Image

from faceanchor.errors import FaceSelectionError, ImageInputError, ImageTooLargeError, InvalidInputError, NoFaceError
from faceanchor.face.analyzer import FaceAnalyzer


@pytest.fixture(scope="module")
def tight(load_face):
    """Obama's face cropped so it overflows the frame (the first pass finds nothing)."""
    return load_face("obama.jpg").crop((400, 200, 590, 400)).resize((760, 800))


@pytest.fixture(scope="module")
def group(load_face):
    canvas = Image.new("RGB", (900, 640), (90, 90, 90))
    canvas.paste(load_face("biden.jpg").resize((242, 551)), (20, 40))
    canvas.paste(load_face("obama.jpg").resize((455, 568)), (400, 30))
    return canvas


def test_get_sorted_with_embedding_and_quality(dlib_analyzer, load_face):
    faces = dlib_analyzer.get(load_face("astronaut.png"))
    assert len(faces) >= 1
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    for f in faces:
        assert f.embedding.shape == (128,) and f.space == "dlib" and f.quality is not None


def test_group_photo_index_picks_the_right_person(dlib_analyzer, group, load_face):
    faces = dlib_analyzer.get(group)
    assert len(faces) == 2
    obama = dlib_analyzer.get(load_face("obama2.jpg"))[0]
    biden = dlib_analyzer.get(load_face("biden.jpg"))[0]
    first = dlib_analyzer.get_face(group)  # largest: obama
    second = dlib_analyzer.get_face(group, index=1)
    assert dlib_analyzer.compare(first.embedding, obama.embedding).same
    assert dlib_analyzer.compare(second.embedding, biden.embedding).same
    with pytest.raises(FaceSelectionError, match="face index 2 is out of range: group.png has 2 face"):
        dlib_analyzer.get_face(group, index=2, name="group.png")


def test_blank_image_is_no_face_naming_the_image(dlib_analyzer):
    blank = Image.new("RGB", (400, 300), (255, 255, 255))
    assert dlib_analyzer.get(blank) == []
    with pytest.raises(NoFaceError, match="no face found in blank.png"):
        dlib_analyzer.get_face(blank, name="blank.png")


def test_dlib_retry_rescues_a_face_filling_the_frame(settings, dlib_analyzer, tight):
    once = FaceAnalyzer(settings, retry_scales=False)
    once.detector, once.encoder = dlib_analyzer.detector, dlib_analyzer.encoder
    assert once.detect(tight) == []
    faces = dlib_analyzer.detect(tight)
    assert len(faces) == 1
    le, re, nose, ml, mr = faces[0].kps
    assert le[0] < re[0] < tight.size[0] and nose[1] > le[1]


def test_dlib_retry_rescues_a_small_face(settings, dlib_analyzer, load_face):
    canvas = Image.new("RGB", (1100, 1100), (128, 128, 128))
    canvas.paste(load_face("obama.jpg").resize((91, 114)), (500, 500))
    once = FaceAnalyzer(settings, retry_scales=False)
    once.detector, once.encoder = dlib_analyzer.detector, dlib_analyzer.encoder
    assert once.detect(canvas) == []
    faces = dlib_analyzer.get(canvas)
    assert len(faces) == 1 and 500 < faces[0].bbox[0] < 591
    assert any("small" in w for w in faces[0].quality.warnings)


def test_scrfd_retry_at_smaller_det_size(onnx_pack_settings, tight):
    a = FaceAnalyzer(onnx_pack_settings, pack="buffalo_l").prepare()
    once = FaceAnalyzer(onnx_pack_settings, pack="buffalo_l", retry_scales=False).prepare()
    assert once.detect(tight) == []
    faces = a.get(tight)
    assert len(faces) == 1 and faces[0].embedding.shape == (512,)


def test_onnx_pack_compare_same_image_is_same(onnx_pack_settings, load_face):
    a = FaceAnalyzer(onnx_pack_settings, pack="buffalo_l").prepare()
    img = load_face("obama.jpg")
    f = a.get_face(img)
    assert a.compare(f.embedding, a.get_face(img.copy()).embedding).same


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda p: str(p / "missing.jpg"), ImageInputError, "no such file"),
        (lambda p: b"this is not an image", ImageInputError, "not a readable image; use JPEG, PNG or WEBP"),
        (lambda p: _gif(), ImageInputError, "GIF images are not supported"),
        (lambda p: _truncated(), ImageInputError, "truncated or corrupt"),
    ],
)
def test_bad_inputs(dlib_analyzer, tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        dlib_analyzer.get(make(tmp_path))


def test_limits_come_from_settings(tmp_path, load_face):
    from faceanchor.config import Settings

    s = Settings(home=tmp_path, max_image_pixels=100_000, max_image_bytes=50_000)
    a = FaceAnalyzer(s)
    with pytest.raises(ImageTooLargeError, match="over the limit of 50000 bytes"):
        a.load(_jpeg(load_face("obama.jpg")))
    with pytest.raises(ImageTooLargeError, match="over the limit of 100000 pixels"):
        a.load(_jpeg(Image.new("RGB", (400, 400)), quality=20))


def test_bad_detector_options(settings):
    with pytest.raises(InvalidInputError):
        FaceAnalyzer(settings, pack="dlib", detector="scrfd")
    with pytest.raises(InvalidInputError):
        FaceAnalyzer(settings, pack="antelopev2", detector="hog")
    with pytest.raises(InvalidInputError):
        FaceAnalyzer(settings, detector="yolo")


def _jpeg(img, quality=90):
    import io

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _gif():
    import io

    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, format="GIF")
    return buf.getvalue()


def _truncated():
    data = _jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)))
    return data[: len(data) // 2]


def _batch_photos(load_face, tight):
    """Faces, a face only a retry finds (tight), and a blank image."""
    return [load_face("obama.jpg"), tight, Image.new("RGB", (400, 300), (255, 255, 255)), load_face("biden.jpg")]


def _close(a, b, atol):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.bbox, y.bbox, rtol=0, atol=atol)
        np.testing.assert_allclose(x.kps, y.kps, rtol=0, atol=atol)
        if x.embedding is not None:
            np.testing.assert_allclose(x.embedding, y.embedding, rtol=0, atol=max(atol, 1e-6))


def test_batched_onnx_pack_detect_and_embed_many_equal_one_by_one(onnx_pack_settings, batched_pack_settings, load_face, tight):
    from batched_onnx import CountingSession

    photos = _batch_photos(load_face, tight)
    fixed = FaceAnalyzer(onnx_pack_settings, pack="buffalo_l").prepare()
    free = FaceAnalyzer(batched_pack_settings, pack="buffalo_l").prepare()
    free.detector._session = CountingSession(free.detector._session)
    free.encoder._session = CountingSession(free.encoder._session)
    bounded = free.detect_many(photos, max_attempts=2)
    # one call for the first scale (all four), one for the retry of the two without a face
    assert free.detector._session.batches == [4, 2]
    assert [len(f) for f in bounded] == [1, 0, 0, 1]
    free.detector._session.batches.clear()
    many = free.detect_many(photos)  # the whole ladder: tight is found at a later rung, blank never
    assert free.detector._session.batches[:2] == [4, 2] and set(free.detector._session.batches[2:]) <= {1, 2}
    assert [len(f) for f in many] == [1, 1, 0, 1]
    for got, p, limit in [(bounded, photos, 2), (many, photos, None)]:
        for a, b in zip(got, [fixed.detect(x, max_attempts=limit) for x in p]):
            _close(a, b, 1e-3)
    items = [(p, f[0]) for p, f in zip(photos, many) if f]
    embedded = free.embed_many(items, with_quality=False)
    assert free.encoder._session.batches == [3]
    for e, (p, f) in zip(embedded, items):
        one = fixed.embed(p, f, with_quality=False)
        assert e.space == "buffalo_l" and e.quality is None
        np.testing.assert_allclose(e.embedding, one.embedding, rtol=0, atol=1e-6)


def test_dlib_detect_and_embed_many_equal_one_by_one(dlib_analyzer, load_face, tight):
    photos = _batch_photos(load_face, tight)
    many = dlib_analyzer.detect_many(photos)
    assert [len(f) for f in many] == [1, 1, 0, 1]
    for a, p in zip(many, photos):
        _close(a, dlib_analyzer.detect(p), 0)
    items = [(p, f[0]) for p, f in zip(photos, many) if f]
    for e, (p, f) in zip(dlib_analyzer.embed_many(items), items):
        one = dlib_analyzer.embed(p, f)
        assert np.array_equal(e.embedding, one.embedding) and e.quality.to_dict() == one.quality.to_dict()
