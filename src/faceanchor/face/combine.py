"""Combine the embeddings of several references of one person."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from faceanchor.errors import EmbeddingMismatchError, InvalidInputError

COMBINE_MODES = ("average", "norm-average", "concat")


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def combine_embeddings(embeddings: Sequence[np.ndarray], mode: str = "average") -> np.ndarray:
    """One embedding from several of the same space.

    ``average``: the mean of the raw embeddings (keeps their scale, as InstantID wants raw
    vectors). ``norm-average``: each L2-normalised, averaged, and the mean normalised to unit
    length. ``concat``: the vectors one after another, shape ``(n * dim,)``, in the given order
    (FaceID-Portrait style; reshape to ``(n, dim)`` to get them back).
    """
    if mode not in COMBINE_MODES:
        raise InvalidInputError(f"combine mode {mode!r} is unknown; use average, norm-average or concat")
    if len(embeddings) == 0:
        raise InvalidInputError("no embeddings to combine")
    arrs = [np.asarray(e, dtype=np.float32).reshape(-1) for e in embeddings]
    dims = {a.shape[0] for a in arrs}
    if len(dims) != 1:
        raise EmbeddingMismatchError(f"cannot combine embeddings of different sizes {sorted(dims)}")
    stack = np.stack(arrs)
    if mode == "average":
        return stack.mean(axis=0)
    if mode == "norm-average":
        return _unit(np.stack([_unit(a) for a in arrs]).mean(axis=0)).astype(np.float32)
    return stack.reshape(-1)
