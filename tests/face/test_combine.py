import numpy as np
import pytest

from faceanchor.errors import EmbeddingMismatchError, InvalidInputError
from faceanchor.face.combine import combine_embeddings


def test_average_keeps_scale():
    a, b = np.array([2.0, 0.0, 0.0]), np.array([0.0, 4.0, 0.0])
    np.testing.assert_allclose(combine_embeddings([a, b], "average"), [1.0, 2.0, 0.0])


def test_norm_average_is_unit_mean_of_unit_vectors():
    a, b = np.array([2.0, 0.0]), np.array([0.0, 40.0])
    out = combine_embeddings([a, b], "norm-average")
    np.testing.assert_allclose(out, [2**-0.5, 2**-0.5], rtol=1e-6)
    assert abs(np.linalg.norm(out) - 1) < 1e-6


def test_concat_in_order():
    a, b = np.arange(3.0), np.arange(3.0) + 10
    out = combine_embeddings([a, b], "concat")
    assert out.shape == (6,)
    np.testing.assert_allclose(out.reshape(2, 3)[1], b)


def test_single_reference_is_itself():
    a = np.random.default_rng(0).normal(size=512).astype(np.float32)
    np.testing.assert_allclose(combine_embeddings([a]), a)


def test_errors():
    with pytest.raises(InvalidInputError, match="no embeddings"):
        combine_embeddings([])
    with pytest.raises(InvalidInputError, match="unknown"):
        combine_embeddings([np.ones(3)], "median")
    with pytest.raises(EmbeddingMismatchError, match="different sizes"):
        combine_embeddings([np.ones(3), np.ones(4)])
