"""The same-person check: the references of one identity (several photos, a character's photos)
must show one person. Every pair is judged in the embedding space the method uses, with that
space's own metric and threshold (:func:`faceanchor.face.similarity.compare_embeddings`); a pair
that is not "same" refuses the request with :class:`DifferentPeopleError` naming it, unless the
caller deliberately blends people (``allow_different_people``), which the result records.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import numpy as np

from faceanchor.errors import DifferentPeopleError
from faceanchor.face.similarity import compare_embeddings

OVERRIDE = "allow_different_people"


def check_same_person(
    embeddings: Sequence[np.ndarray], space: str, names: Sequence[str] | None = None, *, allow: bool = False
) -> dict[str, Any] | None:
    """The pairwise verdicts of ``embeddings`` (``None`` for fewer than two). Raises
    DifferentPeopleError on the first pair judged different, unless ``allow``."""
    if len(embeddings) < 2:
        return None
    labels = list(names or [f"reference {i + 1}" for i in range(len(embeddings))])
    pairs = []
    for i, j in combinations(range(len(embeddings)), 2):
        v = compare_embeddings(np.asarray(embeddings[i]).reshape(-1), np.asarray(embeddings[j]).reshape(-1), space)
        pairs.append({"a": labels[i], "b": labels[j], "metric": v.metric, "score": round(v.score, 4),
                      "threshold": v.threshold, "same": v.same})
    different = [p for p in pairs if not p["same"]]
    if different and not allow:
        p = different[0]
        rel = "above" if p["metric"] == "euclidean" else "below"
        raise DifferentPeopleError(
            f"{p['a']} and {p['b']} look like different people ({space} {p['metric']} {p['score']:.3f}, {rel} the "
            f"same-person threshold {p['threshold']}); give photos of one person, or set {OVERRIDE} (CLI: --allow-different-people) to blend people on purpose"
        )
    return {"space": space, "pairs": pairs, "all_same": not different, "overridden": bool(different and allow)}
