"""Depth control image from a depth model the user provides (any transformers
``depth-estimation`` model: ``Intel/dpt-hybrid-midas`` as the official demo, Depth Anything,
a local folder...). The model is found through :mod:`faceanchor.models.resolve` (registry entry
``depth-estimator``; a local path or another hub id may be given); its absence is a
:class:`~faceanchor.errors.ModelNotFoundError`.

The map is normalised per image to 0-255 (min → black, max → white; DPT-style models predict
inverse depth, so near is bright, which is what depth ControlNets expect) and repeated into RGB.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from faceanchor.config import Settings


def resolve_depth_model(settings: "Settings", model: str | os.PathLike | None = None, *, download: bool | None = None):
    """Local files of the depth model: ``model`` (path or hub id), else ``settings.depth_model``
    when such a setting exists, else the registry's ``depth-estimator`` (Intel/dpt-hybrid-midas)."""
    from faceanchor.models.resolve import resolve_model

    ref = model if model is not None else getattr(settings, "depth_model", None)
    return resolve_model("depth-estimator", settings, ref, download=download)


@functools.lru_cache(maxsize=2)
def _pipeline_for(path: str, device: str) -> Any:
    from transformers import pipeline

    return pipeline("depth-estimation", model=path, device=device)


def load_depth_estimator(settings: "Settings", model: str | os.PathLike | None = None, device: str = "cpu", *, download: bool | None = None) -> Any:
    """A transformers ``depth-estimation`` pipeline over the resolved model (cached per path/device)."""
    from faceanchor.errors import ModelNotFoundError

    resolved = resolve_depth_model(settings, model, download=download)
    try:
        return _pipeline_for(str(resolved.load_dir), device)
    except (OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelNotFoundError(f"depth model at {resolved.load_dir} could not be loaded: {first[:200]}") from None


def depth_map(image: Any, estimator: Any) -> "Image.Image":
    """Run ``estimator`` (a depth-estimation pipeline) on ``image``; an RGB map of ``image``'s size."""
    import torch
    from PIL import Image

    from faceanchor.controls.canny import to_rgb_array

    rgb = to_rgb_array(image)
    h, w = rgb.shape[:2]
    out = estimator(Image.fromarray(rgb))
    pred = out["predicted_depth"] if isinstance(out, dict) else out[0]["predicted_depth"]
    pred = torch.as_tensor(pred).detach().float().cpu()
    while pred.dim() < 4:
        pred = pred.unsqueeze(0)
    pred = torch.nn.functional.interpolate(pred[:, :1], size=(h, w), mode="bicubic", align_corners=False)[0, 0]
    lo, hi = float(pred.min()), float(pred.max())
    norm = (pred - lo) / (hi - lo) if hi > lo else torch.zeros_like(pred)
    arr = (norm.numpy() * 255.0).clip(0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(arr[:, :, None], 3, axis=2), "RGB")


def depth_image(image: Any, settings: "Settings", model: str | os.PathLike | None = None, device: str = "cpu", *, estimator: Any = None) -> "Image.Image":
    """The depth control image of ``image`` (same size), with the user's depth model."""
    est = estimator if estimator is not None else load_depth_estimator(settings, model, device)
    return depth_map(image, est)
