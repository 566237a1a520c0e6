import pytest

from faceanchor.errors import FaceSelectionError, NoFaceError
from faceanchor.face.choose import choose_face, sort_faces
from faceanchor.types import Face


def _face(x1, y1, x2, y2, score=0.9):
    return Face(bbox=[x1, y1, x2, y2], kps=[[0, 0]] * 5, det_score=score)


SMALL = _face(0, 0, 10, 10, 0.99)
BIG = _face(0, 0, 100, 100, 0.6)
MID = _face(0, 0, 50, 50, 0.8)


def test_largest_first_not_smallest():
    assert sort_faces([SMALL, BIG, MID]) == [BIG, MID, SMALL]
    assert choose_face([SMALL, MID, BIG]) is BIG


def test_index_in_documented_order():
    assert choose_face([SMALL, MID, BIG], index=0) is BIG
    assert choose_face([SMALL, MID, BIG], index=2) is SMALL


def test_index_out_of_range_names_image_and_count():
    with pytest.raises(FaceSelectionError, match=r"face index 3 is out of range: group\.jpg has 3 face\(s\)"):
        choose_face([SMALL, MID, BIG], index=3, image_name="group.jpg")


def test_min_score_picks_largest_passing_or_fails():
    assert choose_face([SMALL, MID, BIG], min_score=0.7) is MID
    with pytest.raises(FaceSelectionError, match="minimum score 0.995.*best is 0.990"):
        choose_face([SMALL, MID, BIG], min_score=0.995, image_name="x.jpg")
    with pytest.raises(FaceSelectionError, match="below the minimum"):
        choose_face([SMALL, MID, BIG], index=0, min_score=0.7)


def test_no_face_names_image():
    with pytest.raises(NoFaceError, match="no face found in blank.png"):
        choose_face([], image_name="blank.png")
