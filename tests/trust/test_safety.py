"""The optional safety filter with a tiny random ONNX classifier (mean colour -> 2 logits ->
softmax) built here; its score is checked against the same arithmetic in numpy."""

import io

import numpy as np
import pytest
from PIL import Image

from faceanchor.errors import SafetyRefusedError

SIZE = 16


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    w = rng.normal(0, 3, (3, 2)).astype(np.float32)
    b = rng.normal(0, 0.5, (2,)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=1),
    ]
    graph = helper.make_graph(nodes, "tiny_safety", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", 2])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("safety") / "tiny_safety.onnx"
    onnx.save(model, str(path))
    return path, w, b


def _expected(img, w, b):
    x = np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC), np.float32) / 255.0
    logits = x.reshape(-1, 3).mean(0) @ w + b
    e = np.exp(logits - logits.max())
    return float((e / e.sum())[-1])


def _settings(tmp_path, path, **kw):
    from faceanchor.config import Settings

    return Settings(home=tmp_path, safety_classifier=path, safety_input_size=SIZE, **kw)


def _photo():
    return Image.open("tests/data/faces/obama.jpg").convert("RGB").resize((256, 320))


def test_off_by_default(tmp_path):
    from faceanchor.config import Settings
    from faceanchor.trust.finalise import Finisher

    _, info = Finisher(Settings(home=tmp_path)).prepare(_photo(), "ab" * 16)
    assert info["safety"] == {"checked": False}


def test_score_matches_an_independent_computation_and_policies(classifier, tmp_path):
    from faceanchor.trust.finalise import Finisher
    from faceanchor.trust.watermark import read

    path, w, b = classifier
    img = _photo()
    want = _expected(img, w, b)
    # below the threshold: nothing done
    out, info = Finisher(_settings(tmp_path, path, safety_threshold=min(1.0, want + 0.01) + 0.5)).prepare(img, "ab" * 16)
    assert info["safety"]["score"] == pytest.approx(want, abs=1e-5) and info["safety"]["flagged"] is False
    assert info["safety"]["action"] == "none"
    # flag: kept, flagged
    out, info = Finisher(_settings(tmp_path, path, safety_threshold=want - 1e-4, safety_policy="flag")).prepare(img, "ab" * 16)
    assert info["safety"]["flagged"] and info["safety"]["action"] == "flagged"
    assert np.abs(np.asarray(out, float) - np.asarray(img, float)).mean() < 4  # only the watermark changed it (blur: far more)
    # blur: the output is blurred, then watermarked (still readable)
    out, info = Finisher(_settings(tmp_path, path, safety_threshold=want - 1e-4, safety_policy="blur")).prepare(img, "ab" * 16)
    assert info["safety"]["action"] == "blurred"
    lap = lambda im: np.abs(np.diff(np.asarray(im.convert("L"), float), axis=1)).mean()  # noqa: E731
    assert lap(out) < lap(img) / 3
    assert read(out).job_id_prefix == "ab" * 6
    # refuse: a clear 422
    with pytest.raises(SafetyRefusedError, match="refused") as e:
        Finisher(_settings(tmp_path, path, safety_threshold=want - 1e-4, safety_policy="refuse")).prepare(img, "ab" * 16)
    assert e.value.http_status == 422


def test_refused_job_fails_with_safety_refused(classifier, tmp_path):
    import tiny_engine as tiny
    from api_helpers import Harness, b64, png_bytes

    path, _, _ = classifier
    settings = _settings(tmp_path / "home", path, safety_threshold=0.0, safety_policy="refuse", rate_limit_per_minute=0)
    with Harness(settings, tiny.TinyEngine(size=96)) as h:
        r = h.client.post("/queue/instantid", headers=h.headers, json={"face_image": b64(png_bytes()), "prompt": "x", "num_inference_steps": 1})
        body = h.wait(r.json()["status_url"])
        assert body["status"] == "FAILED", body
        res = h.client.get(r.json()["response_url"], headers=h.headers).json()
        assert "safety_refused" in str(res) and "refused" in str(res), res
    flagged = _settings(tmp_path / "home2", path, safety_threshold=0.0, safety_policy="flag", rate_limit_per_minute=0)
    with Harness(flagged, tiny.TinyEngine(size=96)) as h:
        r = h.client.post("/queue/instantid", headers=h.headers, json={"face_image": b64(png_bytes()), "prompt": "x", "num_inference_steps": 1})
        assert h.wait(r.json()["status_url"])["status"] == "COMPLETED"
        img = h.client.get(r.json()["response_url"], headers=h.headers).json()["images"][0]
        assert img["trust"]["safety"]["action"] == "flagged"
        from faceanchor.imageio import read_metadata

        assert read_metadata(h.client.get(img["url"], headers=h.headers).content)["trust"]["safety"]["flagged"] is True


def test_bad_classifier_settings(tmp_path):
    from faceanchor.errors import FaceAnchorError
    from faceanchor.trust.finalise import Finisher

    with pytest.raises(FaceAnchorError, match="no such file"):
        Finisher(_settings(tmp_path, tmp_path / "nope.onnx"))
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"junk")
    with pytest.raises(FaceAnchorError, match="not a loadable ONNX model"):
        Finisher(_settings(tmp_path, junk))
