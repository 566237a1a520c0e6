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
