import numpy as np
import pytest
from pydantic import ValidationError

from faceanchor.types import Face, GenerationRequest, JobStatus


def test_face_normalises_shapes_and_reports():
    f = Face(bbox=[1, 2, 11, 22], kps=[[i, i] for i in range(5)], det_score=0.9, embedding=[3.0, 4.0], space="dlib")
    assert f.bbox.shape == (4,) and f.kps.shape == (5, 2)
    assert f.area == 200.0
    assert np.allclose(f.normed_embedding, [0.6, 0.8])
    d = f.to_dict()
    assert list(d["kps"]) == ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    assert "embedding" not in d and f.to_dict(include_embedding=True)["embedding"] == [3.0, 4.0]


def test_request_defaults_follow_the_official_demo():
    r = GenerationRequest(prompt="a photo")
    assert (r.steps, r.guidance, r.identity_strength, r.adapter_strength) == (30, 5.0, 0.8, 0.8)
    assert r.enhance_face_region is True and r.seed == -1 and r.samples == 1
    lcm = GenerationRequest(prompt="x", scheduler="lcm")
    assert (lcm.steps, lcm.guidance) == (5, 1.5)


@pytest.mark.parametrize(
    "bad",
    [
        {"samples": 5},
        {"samples": 0},
        {"num_inference_steps": 101},
        {"seed": -2},
        {"controlnet_selection": ["openpose"]},
        {"control_guidance_start": 0.6, "control_guidance_end": 0.5},
        {"face_kps": [[1, 2]] * 4},
        {"face_images": ["a.jpg"] * 6},
        {"unknown_field": 1},
    ],
)
def test_request_rejects_out_of_range_values(bad):
    with pytest.raises(ValidationError):
        GenerationRequest(prompt="x", **bad)


def test_public_params_leave_out_image_bytes():
    r = GenerationRequest(prompt="p", face_image=b"\x89PNG", face_images=[b"x"])
    p = r.public_params()
    assert "face_image" not in p and p["references"] == 2 and p["num_inference_steps"] == 30


def test_job_status_finished():
    assert JobStatus.COMPLETED.finished and not JobStatus.IN_QUEUE.finished


@pytest.mark.parametrize(
    "bad",
    [
        dict(face_image_size=(0, 0)),
        dict(face_image_size=(-10, 100)),
        dict(face_embedding=[]),
        dict(face_embedding=[0.1, float("nan")]),
        dict(face_kps=[[float("nan"), 1.0], [2, 2], [3, 3], [4, 4], [5, 5]]),
        dict(face_bbox=[0.0, 0.0, float("inf"), 10.0]),
        dict(face_kps=[[1e30, 1.0], [2, 2], [3, 3], [4, 4], [5, 5]]),
        dict(face_bbox=[0.0, 0.0, 1e308, 10.0]),
        dict(face_image_size=(10**12, 100)),
    ],
)
def test_request_refuses_degenerate_precomputed_face_fields(bad):
    with pytest.raises(ValidationError):
        GenerationRequest(**bad)
