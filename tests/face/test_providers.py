"""Face models run on the GPU provider when onnxruntime has one, the CPU otherwise."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from faceanchor.config import Settings
from faceanchor.errors import InvalidInputError
from faceanchor.face.analyzer import FaceAnalyzer
from faceanchor.face.providers import onnx_providers


def test_auto_puts_cuda_first_and_keeps_the_cpu(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider", "CUDAExecutionProvider"])
    assert onnx_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]


def test_cpu_only_onnxruntime(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(InvalidInputError, match="onnxruntime-gpu"):
        onnx_providers("cuda")


def test_the_analyzer_takes_the_setting(tmp_path, monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert FaceAnalyzer(Settings(home=tmp_path), "antelopev2").providers[0] == "CUDAExecutionProvider"
    assert FaceAnalyzer(Settings(home=tmp_path, face_device="cpu"), "antelopev2").providers == ["CPUExecutionProvider"]
    # the real onnxruntime here is the CPU build: auto gives the CPU, and sessions open with it
    monkeypatch.undo()
    assert FaceAnalyzer(Settings(home=tmp_path), "antelopev2").providers == onnx_providers("auto")


def test_scoring_bounds_the_retry_ladder(tmp_path, monkeypatch):
    """An output without a face costs at most SCORE_DETECT_ATTEMPTS detector passes."""
    import numpy as np

    from faceanchor.engine import SCORE_DETECT_ATTEMPTS

    import faceanchor.face.analyzer as analyzer_module

    an = FaceAnalyzer(Settings(home=tmp_path, face_pack="dlib")).prepare()
    calls = []  # one entry per rung of the ladder: an upsampled pass or a padded pass
    real_fast, real_pad = an._detect_dlib_fast, analyzer_module._pad
    monkeypatch.setattr(an, "_detect_dlib_fast", lambda *a, **k: calls.append("up") or real_fast(*a, **k))
    monkeypatch.setattr(analyzer_module, "_pad", lambda *a, **k: calls.append("pad") or real_pad(*a, **k))
    blank = np.full((256, 256, 3), 127, np.uint8)
    assert an.detect(blank) == []
    full = len(calls)
    calls.clear()
    assert an.detect(blank, max_attempts=SCORE_DETECT_ATTEMPTS) == []
    assert len(calls) == SCORE_DETECT_ATTEMPTS < full
