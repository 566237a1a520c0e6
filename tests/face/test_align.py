import numpy as np
import pytest

from faceanchor.face.align import ARCFACE_DST, aligned_crop, clip_face_crop, estimate_norm, norm_crop, template, umeyama


def _similarity(scale, angle_deg, tx, ty):
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def test_umeyama_recovers_exact_similarity():
    m = _similarity(2.5, 17.0, 40.0, -12.0)
    src = np.random.default_rng(1).uniform(0, 300, size=(5, 2))
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(umeyama(src, dst)[:2], m, atol=1e-9)


def test_estimate_norm_maps_keypoints_to_template_at_any_size():
    m = _similarity(0.4, -8.0, 0, 0)
    inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
    kps = ARCFACE_DST @ inv[:, :2].T + inv[:, 2] + 300  # the template, warped into a photo
    for size in (112, 224, 128, 512, 96):
        mm = estimate_norm(kps, size)
        mapped = kps @ mm[:, :2].T + mm[:, 2]
        # float32 keypoints are estimated in float32 (as InsightFace/scikit-image do): measured
        # error up to 4.6e-5 px (at 512 px)
        np.testing.assert_allclose(mapped, template(size), atol=1e-4)


def test_template_scaling_follows_insightface():
    np.testing.assert_allclose(template(224), ARCFACE_DST * 2)
    t128 = template(128)  # multiple of 128, not 112: ratio 1, shifted 8 px right
    np.testing.assert_allclose(t128[:, 0], ARCFACE_DST[:, 0] + 8)
    np.testing.assert_allclose(t128[:, 1], ARCFACE_DST[:, 1])


def test_norm_crop_puts_marked_points_on_template():
    # Draw small white squares at known keypoints in a black image; after alignment they
    # must land on the template points.
    img = np.zeros((600, 500, 3), dtype=np.uint8)
    kps = ARCFACE_DST * 3.0 + [100, 150]
    for x, y in kps:
        img[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4] = 255
    crop = norm_crop(img, kps, 112)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_DST:
        assert crop[int(round(y)), int(round(x))].min() > 200


def test_pil_helpers_and_clip_crop(load_face, dlib_analyzer):
    img = load_face("obama.jpg")
    face = dlib_analyzer.detect(img)[0]
    crop = clip_face_crop(img, face.kps)
    assert crop.size == (224, 224) and crop.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(crop), norm_crop(np.asarray(img), face.kps, 224))
    assert aligned_crop(img, face.kps, 160).size == (160, 160)
    # the crop is a face, not border: the centre region is bright-ish skin, not black
    assert np.asarray(crop)[80:150, 80:150].mean() > 60
    with pytest.raises(ValueError):
        estimate_norm(np.zeros((4, 2)))
