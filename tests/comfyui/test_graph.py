"""A small graph of the nodes, executed the way ComfyUI does (each node's FUNCTION with its
inputs, outputs passed on), on tiny seeded weights and the offline dlib pack; the images must
equal the library's for the same request."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import ASK, OBAMA, photo_tensor, run, small_copy, tiny_engine, u8  # noqa: E402

from faceanchor.comfyui.images import from_images, to_images  # noqa: E402
from faceanchor.imageio import load_image  # noqa: E402
from faceanchor.types import GenerationRequest  # noqa: E402


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def photo():
    return photo_tensor()


def test_image_tensors_round_trip_exactly(photo):
    import torch

    assert photo.dtype == torch.float32 and photo.shape[0] == 1 and photo.shape[-1] == 3
    assert 0.0 <= float(photo.min()) and float(photo.max()) <= 1.0
    back = from_images(photo)[0]
    assert np.array_equal(np.asarray(back), np.asarray(load_image(OBAMA)))


def test_engine_analysis_generate_score_graph_equals_the_library(engine, photo):
    identity, report, preview, faces = run("FaceAnchorFaceAnalysis", engine=engine, image=photo)
    rep = json.loads(report)
    assert faces == 1 and rep["space"] == "dlib" and rep["references"][0]["chosen"] == 0
    quality = rep["references"][0]["faces"][0]["quality"]
    assert quality["size_px"] > 20 and "blur" in quality and "yaw_deg" in quality
    assert tuple(preview.shape) == tuple(photo.shape) and not np.array_equal(u8(preview), u8(photo))  # boxes drawn

    images, info, best = run("FaceAnchorGenerate", engine=engine, identity=identity, **ASK)
    assert tuple(images.shape) == (1, 64, 64, 3) and str(images.dtype) == "torch.float32"
    assert 0.0 <= float(images.min()) <= float(images.max()) <= 1.0
    meta = json.loads(info)
    assert meta["seed"] == 7 and meta["params"]["num_inference_steps"] == 2

    lib = engine.engine.generate(GenerationRequest(face_image=OBAMA, face_index=0, **ASK))
    assert np.array_equal(u8(images)[0], np.asarray(lib.images[0].image))  # pixel-equal to Engine.generate
    assert lib.images[0].identity_score is None and best == -1.0  # tiny weights draw no face: no score

    score, scores = run("FaceAnchorIdentityScore", engine=engine, identity=identity, image=images)
    assert score == -1.0 and json.loads(scores)[0]["identity_reason"] == "no face found in the output"
    # the reference photo against its own identity: the dlib encoder's cosine of a face with itself
    score, _ = run("FaceAnchorIdentityScore", engine=engine, identity=identity, image=photo)
    assert score == pytest.approx(1.0, abs=1e-3)


def test_best_of_n_ranks_a_batch_by_identity(engine, photo):
    from PIL import Image

    identity, *_ = run("FaceAnchorFaceAnalysis", engine=engine, image=photo)
    face = load_image(OBAMA)
    other = Image.new("RGB", face.size, (128, 128, 128))  # another person, pasted at the top of a canvas of the same size
    other.paste(load_image(small_copy("biden.jpg")).crop((0, 0, *face.size)))
    blank = Image.new("RGB", face.size, (128, 128, 128))
    batch = to_images([blank, other, face])
    best, best_score, ranking = run("FaceAnchorBestOfN", engine=engine, identity=identity, images=batch, keep=2)
    rows = json.loads(ranking)
    assert [r["index"] for r in rows] == [2, 1]
    assert best_score == pytest.approx(1.0, abs=1e-3) and rows[1]["identity_score"] < best_score
    assert tuple(best.shape) == (2, *batch.shape[1:]) and np.array_equal(u8(best[:1]), u8(batch[2:3]))


def test_pose_image_and_extra_controlnets_reach_the_request(engine, photo):
    identity, *_ = run("FaceAnchorFaceAnalysis", engine=engine, image=photo)
    pose = load_image(small_copy("obama2.jpg"))
    images, info, _ = run("FaceAnchorGenerate", engine=engine, identity=identity, pose_image=to_images([pose]),
                          controlnet_canny=True, **ASK)
    assert json.loads(info)["params"]["controlnet_selection"] == ["canny"]
    lib = engine.engine.generate(GenerationRequest(face_image=OBAMA, face_index=0, pose_image=small_copy("obama2.jpg"),
                                                   controlnet_selection=["canny"], **ASK))
    assert np.array_equal(u8(images)[0], np.asarray(lib.images[0].image))
