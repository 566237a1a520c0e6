from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceanchor import controls
from faceanchor.config import Settings
from faceanchor.controls.depth import depth_image, load_depth_estimator
from faceanchor.errors import ModelNotFoundError

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"


@pytest.fixture(scope="module")
def tiny_dpt(tmp_path_factory) -> Path:
    """A tiny randomly-initialised DPT depth model saved as a transformers folder."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    cfg = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37, image_size=64,
                    patch_size=16, neck_hidden_sizes=[16, 16, 16, 16], fusion_hidden_size=16,
                    backbone_out_indices=[0, 1, 2, 3])  # fmt: skip
    d = tmp_path_factory.mktemp("dpt")
    DPTForDepthEstimation(cfg).save_pretrained(d)
    DPTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(d)
    return d


@pytest.fixture
def settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return Settings(home=tmp_path / "home")


def test_depth_control_image_has_the_source_size(tiny_dpt, settings):
    src = Image.open(FACES / "obama.jpg").convert("RGB").reduce(2)
    out = depth_image(src, settings, model=tiny_dpt)
    assert out.size == src.size and out.mode == "RGB"
    a = np.asarray(out)
    assert a.min() == 0 and a.max() == 255  # normalised per image
    assert np.array_equal(a[..., 0], a[..., 2])
    again = controls.depth_image(src, settings, model=tiny_dpt)
    assert np.array_equal(np.asarray(again), a)  # deterministic (eval mode)


def test_depth_model_from_models_dir(tiny_dpt, settings):
    import shutil

    shutil.copytree(tiny_dpt, settings.models_dir / "depth-estimator")
    est = load_depth_estimator(settings)
    out = depth_image(np.zeros((30, 50, 3), np.uint8), settings, estimator=est)
    assert out.size == (50, 30)


def test_missing_depth_model_is_a_clear_error(settings):
    with pytest.raises(ModelNotFoundError) as e:
        depth_image(Image.new("RGB", (32, 32)), settings)
    msg = str(e.value)
    assert "depth-estimator" in msg and "Intel/dpt-hybrid-midas" in msg and "faceanchor models pull depth-estimator" in msg
