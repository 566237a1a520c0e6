"""Tiny and full-size FLUX builders (FLUX.1-dev's configs; tiny keeps the structure)."""

from __future__ import annotations

import time

import pytest
import torch

from faceanchor.models import flux


def test_full_size_parameter_counts_are_flux1_dev():
    # FLUX.1-dev: transformer 11.90 B, T5 v1.1 XXL encoder 4.76 B, CLIP-L text 123 M, VAE 84 M
    assert flux.parameter_count("transformer") == pytest.approx(11.90e9, rel=0.01)
    assert flux.parameter_count("text_encoder_2") == pytest.approx(4.76e9, rel=0.01)
    assert flux.parameter_count("text_encoder") == pytest.approx(123e6, rel=0.01)
    assert flux.parameter_count("vae") == pytest.approx(83.8e6, rel=0.01)
    assert 0.5e9 < flux.parameter_count("infusenet") < 4e9


def test_tiny_components_are_seeded_and_run_a_flux_pipeline():
    from diffusers import FluxPipeline

    t0 = time.perf_counter()
    comps = flux.build_components("tiny", seed=1)
    again = flux.build_transformer("tiny", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(comps["transformer"].state_dict().values(), again.state_dict().values()))
    other = flux.build_transformer("tiny", seed=2)
    assert not torch.equal(next(iter(other.state_dict().values())), next(iter(again.state_dict().values())))
    pipe = FluxPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a portrait", height=64, width=64, num_inference_steps=2, guidance_scale=3.5,
               max_sequence_length=flux.TINY_MAX_SEQUENCE_LENGTH, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 64, 64, 3) and 0.0 <= out.min() and out.max() <= 1.0 and out.std() > 0.01
    assert time.perf_counter() - t0 < 30
    cn = flux.build_infusenet("tiny", seed=1)
    assert cn.input_hint_block is None and cn.config.guidance_embeds
    assert cn.config.joint_attention_dim == comps["transformer"].config.joint_attention_dim
