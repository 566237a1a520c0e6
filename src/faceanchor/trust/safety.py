"""The optional safety filter: an operator-provided image classifier run on every output, with a
policy for what it flags. Off by default (setting ``safety_classifier`` unset).

The classifier is an ONNX model (run with onnxruntime) taking ``(N, 3, S, S)`` float32 RGB in
[0, 1] (``S`` = ``safety_input_size``) and giving, per image, the probability that it is unsafe:
shape ``(N,)``, or ``(N, K)`` with the unsafe column ``safety_class_index`` (default the last).
Export your checker with its normalisation and softmax inside (e.g. the Stable Diffusion safety
checker, with its weights, wrapped to output one probability). An output scoring at or above
``safety_threshold`` is, by ``safety_policy``: ``flag`` (kept, flagged in the metadata), ``blur``
(a strong Gaussian blur replaces it) or ``refuse`` (the job fails with 422 safety_refused).
The decision, with the score, is in every output's ``trust.safety``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from faceanchor.errors import FaceAnchorError, SafetyRefusedError

POLICIES = ("flag", "blur", "refuse")


class SafetyFilter:
    def __init__(self, model: Path, *, input_size: int = 224, class_index: int = -1, threshold: float = 0.5, policy: str = "flag"):
        if policy not in POLICIES:
            raise FaceAnchorError(f"safety_policy {policy!r} is unknown; use flag, blur or refuse")
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise FaceAnchorError(f"safety_classifier {model}: not a loadable ONNX model ({str(e)[:200]})") from None
        self.input = self.session.get_inputs()[0].name
        self.input_size, self.class_index, self.threshold, self.policy = int(input_size), int(class_index), float(threshold), policy
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> "SafetyFilter | None":
        path = getattr(settings, "safety_classifier", None)
        if path is None:
            return None
        path = Path(path).expanduser()
        if not path.is_file():
            raise FaceAnchorError(f"safety_classifier {path}: no such file")
        return cls(path, input_size=settings.safety_input_size, class_index=settings.safety_class_index,
                   threshold=settings.safety_threshold, policy=settings.safety_policy)

    def score(self, img: Image.Image) -> float:
        """The classifier's unsafe probability of ``img``."""
        x = np.asarray(img.convert("RGB").resize((self.input_size, self.input_size), Image.BICUBIC), np.float32) / 255.0
        with self._lock:
            out = np.asarray(self.session.run(None, {self.input: x.transpose(2, 0, 1)[None]})[0], np.float64)
        value = float(out.reshape(-1)[0] if out.ndim == 1 or out.shape[-1] == 1 else out.reshape(out.shape[0], -1)[0, self.class_index])
        if not np.isfinite(value):
            raise FaceAnchorError("the safety classifier returned a non-finite score")
        return value

    def apply(self, img: Image.Image) -> tuple[Image.Image, dict[str, Any]]:
        """``img`` after the policy, and the decision."""
        s = self.score(img)
        flagged = s >= self.threshold
        decision = {"checked": True, "score": round(s, 6), "threshold": self.threshold, "policy": self.policy, "flagged": flagged,
                    "action": "none"}
        if not flagged:
            return img, decision
        if self.policy == "refuse":
            raise SafetyRefusedError(f"the safety filter refused the output (score {s:.3f} at or above {self.threshold})")
        if self.policy == "blur":
            decision["action"] = "blurred"
            return img.filter(ImageFilter.GaussianBlur(radius=max(8, max(img.size) // 16))), decision
        decision["action"] = "flagged"
        return img, decision
