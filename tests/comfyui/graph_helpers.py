"""Helpers of the ComfyUI graph tests (imported by path from the test files): run one node as
ComfyUI's executor does, IMAGE → uint8, the engine and photo fixtures' bodies."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from photos import small_copy  # noqa: E402

from faceanchor.comfyui import NODE_CLASS_MAPPINGS as NODES  # noqa: E402

OBAMA = small_copy("obama.jpg")
ASK = dict(prompt="a portrait", width=64, height=64, num_inference_steps=2, seed=7)


def run(key, **inputs):
    """One node as ComfyUI's executor runs it: defaults for widgets not given, then FUNCTION."""
    cls = NODES[key]
    spec = cls.INPUT_TYPES()
    values = {}
    for name, inp in spec["required"].items():
        if name in inputs:
            values[name] = inputs[name]
        elif len(inp) == 2 and "default" in inp[1]:
            values[name] = inp[1]["default"]
        else:
            raise AssertionError(f"{key}.{name} needs a link")
    values.update({k: v for k, v in inputs.items() if k in spec.get("optional", {})})
    out = getattr(cls(), cls.FUNCTION)(**values)
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES)
    return out


def u8(image_tensor):
    return np.round(image_tensor.numpy() * 255).astype(np.uint8)


def tiny_engine(home):
    (eng,) = run("FaceAnchorLoadEngine", weights="tiny", face_pack="dlib", device="cpu", home=str(home))
    return eng


def photo_tensor():
    from faceanchor.comfyui.images import to_images
    from faceanchor.imageio import load_image

    return to_images([load_image(OBAMA)])  # what ComfyUI's Load Image gives: 1×H×W×3 float32 in 0–1
