"""Control images for the extra ControlNets: canny (OpenCV), pose (mediapipe, OpenPose-style
skeleton) and depth (a transformers depth model the user provides).

The functions import OpenCV / mediapipe / transformers when called, not at import.
"""

from __future__ import annotations

from typing import Any


def canny_image(image: Any, low: int = 100, high: int = 200) -> Any:
    from faceanchor.controls.canny import canny_image as _f

    return _f(image, low, high)


def pose_image(image: Any, min_visibility: float = 0.5) -> Any:
    from faceanchor.controls.pose import pose_image as _f

    return _f(image, min_visibility)


def depth_image(image: Any, settings: Any, model: Any = None, device: str = "cpu", *, estimator: Any = None) -> Any:
    from faceanchor.controls.depth import depth_image as _f

    return _f(image, settings, model, device, estimator=estimator)


__all__ = ["canny_image", "pose_image", "depth_image"]
