"""Speed options on a tiny InstantID pipeline: same images (fp32 tolerance), clear refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_sdxl import tiny_instantid_pipeline  # noqa: E402

from faceanchor.errors import InvalidInputError  # noqa: E402
from faceanchor.pipelines.acceleration import SpeedOptions, accelerate  # noqa: E402


def _run(pipe, kps, emb):
    return pipe("a photo of a man", emb, kps, num_inference_steps=2, guidance_scale=5.0,
                generator=[torch.Generator().manual_seed(0)], output_type="np").images


@pytest.fixture
def fresh(tmp_path):
    return tiny_instantid_pipeline(tmp_path, 64)


def test_layout_fusion_and_vae_options_keep_the_images(fresh):
    _, pipe, kps, emb = fresh
    ref = _run(pipe, kps, emb)
    applied = accelerate(pipe, SpeedOptions(channels_last=True, fuse_qkv=True, vae_slicing=True), "cpu")
    # every plain self-attention layer of the UNet and of IdentityNet is fused
    assert applied.fused_layers == sum(1 for n in pipe.unet.attn_processors if n.endswith("attn1.processor")) + sum(
        1 for n in pipe.controlnet.attn_processors if n.endswith("attn1.processor"))
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    got = _run(pipe, kps, emb)
    assert np.abs(got - ref).max() <= 1e-3
    # tiling is a memory option with diffusers' blended seams: on, not exact (the tiny VAE's
    # tile is smaller than the image, a real VAE's 512+ px tile is not)
    accelerate(pipe, SpeedOptions(vae_tiling=True), "cpu")
    assert pipe.vae.use_tiling and pipe.vae.use_slicing


def test_compile_in_place_keeps_the_images_and_the_adapter(fresh):
    _, pipe, kps, emb = fresh
    ref = _run(pipe, kps, emb)
    applied = accelerate(pipe, SpeedOptions(compile="all", compile_backend="eager"), "cpu")
    assert applied.compiled == ["unet", "controlnet0", "vae.decoder"]
    assert pipe.unet._compiled_call_impl is not None  # Module.compile, in place: processors still swap
    assert np.abs(_run(pipe, kps, emb) - ref).max() <= 1e-5


def test_cache_switch_and_refusals(fresh):
    _, pipe, _, _ = fresh
    accelerate(pipe, SpeedOptions(cross_attention_cache=False), "cpu")
    assert pipe.cache_cross_attention is False
    with pytest.raises(InvalidInputError, match="CUDA"):
        accelerate(pipe, SpeedOptions(cpu_offload=True), "cpu")
    with pytest.raises(InvalidInputError, match="do not combine"):
        accelerate(pipe, SpeedOptions(cpu_offload=True, compile="unet"), "cuda")


def test_settings_reach_the_engine_pipeline(tmp_path):
    from faceanchor.config import Settings
    from faceanchor.engine import Engine
    from faceanchor.types import GenerationRequest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from photos import small_copy

    settings = Settings(home=tmp_path, device="cpu", speed_cross_attention_cache=False, speed_fuse_qkv=True)
    eng = Engine(settings, weights="tiny", face_pack="dlib")
    eng.generate(GenerationRequest(face_image=small_copy("obama.jpg"), prompt="x", width=64, height=64, num_inference_steps=1, seed=0))
    (loaded,) = eng._loaded.values()
    assert loaded.pipe.cache_cross_attention is False
    assert any(type(p).__name__ == "FusedAttnProcessor2_0" for p in loaded.pipe.unet.attn_processors.values())


def test_attention_slicing_setting_reaches_the_options():
    from faceanchor.config import Settings

    assert SpeedOptions.from_settings(Settings(speed_attention_slicing=1024)).attention_slicing == 1024
    assert SpeedOptions.from_settings(Settings()).attention_slicing == 0
    with pytest.raises(ValueError):
        Settings(speed_attention_slicing=-1)
