"""facexlib's ArcFace (InfiniteYou's embedding space) against checkpoints in facexlib's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceanchor.errors import CheckpointError, ModelNotFoundError
from faceanchor.face.align import estimate_norm
from faceanchor.face.encode_facexlib import FacexlibArcFaceEncoder, IRSEConfig, build_backbone, load_backbone, tiny_config
from faceanchor.types import Face
from tests.official_layout import facexlib_arcface_checkpoint, facexlib_arcface_shapes

TINY = dict(stages=((8, 1), (16, 1), (24, 1), (32, 1)), stem=8, emb=512, reduction=4)


def test_full_size_module_tree_is_facexlibs_ir_se50():
    with torch.device("meta"):
        model = build_backbone(IRSEConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == facexlib_arcface_shapes()
    assert len([k for k in ours if k.endswith("res_layer.1.weight")]) == 24  # 3 + 4 + 14 + 3 units


def test_checkpoint_loads_strict_and_encodes_unit_bgr_crops_in_minus_one_to_one(tmp_path, load_face):
    state = facexlib_arcface_checkpoint(**TINY)
    path = tmp_path / "recognition_arcface_ir_se50.pth"
    torch.save(state, path)
    model = load_backbone(tmp_path)  # the folder finds the file; sizes read from the weights
    assert model.config == tiny_config()
    enc = FacexlibArcFaceEncoder(path).prepare()
    rgb = np.asarray(load_face("obama.jpg"))
    h, w = rgb.shape[:2]
    kps = np.array([[0.40 * w, 0.40 * h], [0.60 * w, 0.40 * h], [0.50 * w, 0.52 * h], [0.42 * w, 0.64 * h], [0.58 * w, 0.64 * h]], np.float32)
    face = Face(bbox=np.array([0.3 * w, 0.3 * h, 0.7 * w, 0.75 * h], np.float32), kps=kps, det_score=0.9)
    emb = enc.encode(rgb, face)
    assert emb.shape == (512,) and abs(float(np.linalg.norm(emb)) - 1.0) < 1e-5
    # independent expectation: warp the BGR photo with the ArcFace template, 2*x/255-1, NCHW, own module
    import cv2

    crop = cv2.warpAffine(np.ascontiguousarray(rgb[..., ::-1]), estimate_norm(kps, 112), (112, 112), borderValue=0.0)
    x = torch.from_numpy(crop.astype(np.float32)).permute(2, 0, 1)[None] * (2 / 255.0) - 1
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    ref = build_backbone(tiny_config())
    ref.load_state_dict(state)
    with torch.no_grad():
        out = ref.eval()(x)[0].numpy()
    assert np.allclose(emb, out, atol=1e-5)
    # RGB would be a different embedding: the channel order matters
    rgb_emb = enc.encode_crops(np.ascontiguousarray(crop[..., ::-1])[None])[0]
    assert float(np.dot(emb, rgb_emb)) < 0.9999


def test_missing_and_wrong_weights_are_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="recognition_arcface_ir_se50.pth"):
        load_backbone(tmp_path)
    with pytest.raises(CheckpointError, match="not facexlib's ArcFace"):
        load_backbone({"conv.weight": torch.zeros(1)})
    state = facexlib_arcface_checkpoint(**TINY)
    state.pop("output_layer.3.bias")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_backbone(state)


def test_the_space_is_its_own(tmp_path):
    from faceanchor.errors import EmbeddingMismatchError
    from faceanchor.face.similarity import compare_embeddings, space_info

    assert space_info("facexlib").metric == "cosine"
    a = np.ones(512, np.float32)
    enc = FacexlibArcFaceEncoder(model=load_backbone(facexlib_arcface_checkpoint(**TINY)))
    assert enc.compare(a, a).score == pytest.approx(1.0)
    with pytest.raises(EmbeddingMismatchError):
        compare_embeddings(a, np.ones(128, np.float32), "facexlib")


def test_facexlib_pack_detects_with_antelopev2_scrfd_and_encodes_with_facexlib(tmp_path, scrfd_model_path, load_face):
    import shutil

    from faceanchor.config import Settings
    from faceanchor.face.analyzer import FaceAnalyzer

    settings = Settings(home=tmp_path / "home", insightface_root=tmp_path / "insightface")
    with pytest.raises(ModelNotFoundError, match="face pack 'facexlib' was not found"):
        FaceAnalyzer(settings, pack="facexlib").prepare()
    ante = tmp_path / "insightface" / "models" / "antelopev2"
    ante.mkdir(parents=True)
    shutil.copy(scrfd_model_path, ante / "scrfd_10g_bnkps.onnx")
    (settings.models_dir / "facexlib").mkdir(parents=True)
    torch.save(facexlib_arcface_checkpoint(**TINY), settings.models_dir / "facexlib" / "recognition_arcface_ir_se50.pth")
    an = FaceAnalyzer(settings, pack="facexlib").prepare()
    faces = an.get(load_face("obama.jpg"))
    assert faces and faces[0].space == "facexlib"
    assert abs(float(np.linalg.norm(faces[0].embedding)) - 1.0) < 1e-5
