"""Which onnxruntime execution providers the face models run on.

``auto`` puts the GPU first when the installed onnxruntime has it (``onnxruntime-gpu``:
``CUDAExecutionProvider``; ROCm, CoreML and DirectML likewise) and always keeps the CPU as the
fallback onnxruntime uses for anything the GPU provider cannot run. ``cpu`` is the CPU alone;
``cuda`` insists on CUDA and says how to get it when it is missing.
"""

from __future__ import annotations

from typing import Literal

from faceanchor.errors import InvalidInputError

FaceDevice = Literal["auto", "cpu", "cuda"]

_GPU_ORDER = ("CUDAExecutionProvider", "ROCMExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider")


def onnx_providers(device: str = "auto") -> list[str]:
    """The provider list for ``onnxruntime.InferenceSession`` (best first, CPU last)."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise InvalidInputError(
                "face_device 'cuda' needs onnxruntime with CUDA: pip uninstall onnxruntime && pip install onnxruntime-gpu "
                "(or set FACEANCHOR_FACE_DEVICE=auto)"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise InvalidInputError(f"face_device {device!r} is unknown; use auto, cpu or cuda")
    return [p for p in _GPU_ORDER if p in available] + ["CPUExecutionProvider"]
