import numpy as np
import pytest

from faceanchor.errors import EmbeddingMismatchError
from faceanchor.face.similarity import compare_embeddings, cosine_similarity, identity_score, space_info


def test_dlib_uses_distance_arcface_cosine():
    a, b = np.zeros(128), np.full(128, 0.05)  # distance 0.566
    v = compare_embeddings(a + 1, b + 1, "dlib")
    assert v.metric == "euclidean" and v.same and v.score == pytest.approx(0.5657, abs=1e-3)
    assert not compare_embeddings(a, np.full(128, 0.06), "dlib").same
    x = np.array([1.0, 0.0] + [0.0] * 510)
    y = np.array([0.25, 1.0] + [0.0] * 510)  # cos = 0.2425
    v = compare_embeddings(x, y, "antelopev2")
    assert v.metric == "cosine" and not v.same and v.score == pytest.approx(0.2425, abs=1e-3)
    assert compare_embeddings(x, x * 3, "buffalo_l").same
    assert v.to_dict()["verdict"] == "different"


def test_identity_score_and_errors():
    assert identity_score(np.ones(4), np.ones(4) * 2) == pytest.approx(1.0)
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0
    with pytest.raises(EmbeddingMismatchError):
        cosine_similarity(np.ones(3), np.ones(4))
    assert space_info("other", 256).dim == 256
