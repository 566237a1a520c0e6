import numpy as np
import pytest

from faceanchor.face.compare import compare_images
from faceanchor.face.similarity import euclidean_distance


@pytest.mark.parametrize("other", ["obama2.jpg", "obama3.jpg"])
def test_same_person(dlib_analyzer, faces_dir, other):
    r = compare_images(dlib_analyzer, str(faces_dir / "obama.jpg"), str(faces_dir / other))
    assert r.verdict.space == "dlib" and r.verdict.metric == "euclidean"
    assert r.verdict.same and r.verdict.score < 0.5


@pytest.mark.parametrize("other", ["biden.jpg", "astronaut.png"])
def test_different_person(dlib_analyzer, faces_dir, other):
    r = compare_images(dlib_analyzer, str(faces_dir / "obama.jpg"), str(faces_dir / other))
    assert not r.verdict.same and r.verdict.score > 0.7
    assert r.verdict.threshold == 0.6


def test_embedding_shape_space_and_determinism(dlib_analyzer, load_face):
    img = load_face("obama.jpg")
    f1 = dlib_analyzer.get(img)[0]
    f2 = dlib_analyzer.get(img)[0]
    assert f1.embedding.shape == (128,) and f1.space == "dlib"
    assert euclidean_distance(f1.embedding, f2.embedding) < 1e-5
    assert dlib_analyzer.encoder.dim == 128 and dlib_analyzer.encoder.threshold == 0.6
    assert abs(np.linalg.norm(f1.normed_embedding) - 1) < 1e-5
