from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceanchor import controls
from faceanchor.controls.pose import COLORS, OPENPOSE_NAMES, detect_pose, draw_pose, pose_image
from faceanchor.errors import NoFaceError

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
IDX = {n: i for i, n in enumerate(OPENPOSE_NAMES)}


@pytest.mark.parametrize("name", ["obama.jpg", "biden.jpg", "astronaut.png"])
def test_finds_head_and_shoulders(name):
    img = Image.open(FACES / name).convert("RGB")
    w, h = img.size
    kp = detect_pose(img)
    assert kp.shape == (18, 3)
    for part in ("nose", "neck", "right_shoulder", "left_shoulder", "right_eye", "left_eye"):
        assert kp[IDX[part], 2] > 0, part
    rs, ls, nose = kp[IDX["right_shoulder"]], kp[IDX["left_shoulder"]], kp[IDX["nose"]]
    # the person's right shoulder is on the image's left; shoulders are below the nose
    assert rs[0] < nose[0] < ls[0]
    assert rs[1] > nose[1] and ls[1] > nose[1]
    assert abs(ls[0] - rs[0]) > 0.2 * w
    assert np.allclose(kp[IDX["neck"], :2], (rs[:2] + ls[:2]) / 2)


def test_pose_image_is_an_openpose_skeleton():
    img = Image.open(FACES / "obama.jpg").convert("RGB")
    out = pose_image(img)
    assert out.size == img.size and out.mode == "RGB"
    a = np.asarray(out)
    kp = detect_pose(img)
    for i in (IDX["nose"], IDX["right_shoulder"], IDX["left_shoulder"]):
        x, y = kp[i, :2].astype(int)
        assert tuple(a[y, x]) == COLORS[i]  # joints drawn in the OpenPose colours
    assert (a.sum(axis=2) > 0).mean() < 0.2  # mostly black
    assert np.array_equal(np.asarray(controls.pose_image(img)), a)


def test_draw_pose_skips_unseen_points():
    kp = np.zeros((18, 3), np.float32)
    kp[IDX["nose"]] = [50, 20, 1]
    kp[IDX["neck"]] = [50, 60, 1]
    kp[IDX["left_wrist"]] = [90, 90, 0]  # not seen: not drawn
    a = np.asarray(draw_pose(kp, (100, 120)))
    assert a.shape == (120, 100, 3)
    assert tuple(a[20, 50]) == COLORS[0] and tuple(a[60, 50]) == COLORS[1]
    assert a[40, 50].sum() > 0  # the neck-nose limb
    assert a[90, 90].sum() == 0


def test_no_person_is_a_clear_error():
    with pytest.raises(NoFaceError, match="no person found in the pose image"):
        pose_image(np.zeros((256, 256, 3), np.uint8))
