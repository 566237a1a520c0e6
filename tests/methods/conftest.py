"""InsightFace-shaped packs (the real SCRFD detector + a tiny ArcFace-shaped encoder whose raw
embeddings are far from unit length) under an InsightFace root, named as the packs real users
bring: ``buffalo_l`` (FaceID) and ``antelopev2`` (InstantID)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def packs_settings(tmp_path, scrfd_model_path, tiny_arcface):
    from faceanchor.config import Settings

    root = tmp_path / "insightface"
    for pack, det, rec in (("buffalo_l", "det_10g.onnx", "w600k_r50.onnx"), ("antelopev2", "scrfd_10g_bnkps.onnx", "glintr100.onnx")):
        d = root / "models" / pack
        d.mkdir(parents=True)
        shutil.copy(scrfd_model_path, d / det)
        shutil.copy(tiny_arcface.path, d / rec)
    return Settings(home=tmp_path / "home", insightface_root=root, device="cpu")


@pytest.fixture
def insightface_faces(packs_settings):
    """``faces = FaceAnalysis(name=pack).get(cv2.imread(path))`` — the official READMEs' own calls."""
    import warnings

    import cv2
    from insightface.app import FaceAnalysis

    apps = {}

    def get(pack: str, path: str):
        if pack not in apps:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                apps[pack] = FaceAnalysis(name=pack, root=str(packs_settings.insightface_root), providers=["CPUExecutionProvider"],
                                          allowed_modules=["detection", "recognition"])
                apps[pack].prepare(ctx_id=-1, det_size=(640, 640))
        return apps[pack].get(cv2.imread(str(path)))

    return get

