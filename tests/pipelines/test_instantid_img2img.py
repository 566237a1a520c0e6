"""InstantID image-to-image / inpainting on tiny seeded SDXL components (64x64, few steps)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_sdxl import tiny_instantid_pipeline  # noqa: E402

from faceanchor.errors import Cancelled, InvalidInputError  # noqa: E402
from faceanchor.pipelines.instantid_img2img import ImageStart, InstantIDImg2ImgPipeline, latent_mask  # noqa: E402

SIZE = 64
PROMPT = "a photo of a man"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    comps, base, kps, emb = tiny_instantid_pipeline(tmp_path_factory.mktemp("tok"), SIZE)
    pipe = InstantIDImg2ImgPipeline.from_instantid(base)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    photo = np.stack([xx * 4, yy * 4, (xx + yy) * 2], -1).clip(0, 255).astype(np.uint8)
    return comps, base, pipe, kps, emb, PIL.Image.fromarray(photo)


def _run(pipe, kps, emb, image, seed=0, **kw):
    kw.setdefault("num_inference_steps", 4)
    kw.setdefault("guidance_scale", 5.0)
    kw.setdefault("strength", 0.5)
    kw.setdefault("output_type", "np")
    return pipe(PROMPT, emb, kps, image, generator=torch.Generator().manual_seed(seed), **kw).images


def test_shares_the_base_and_its_adapter(parts):
    _, base, pipe, *_ = parts
    assert pipe.unet is base.unet and pipe.identity_adapter is base.identity_adapter


def test_zero_scales_equal_diffusers_sdxl_img2img(parts):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    comps, base, pipe, kps, emb, photo = parts
    latents = pipe.encode_image_latents(photo, SIZE, SIZE, "cpu")
    plain = StableDiffusionXLImg2ImgPipeline(**{k: v for k, v in comps.items() if k != "controlnet"},
                                             add_watermarker=False, requires_aesthetics_score=False)
    plain.set_progress_bar_config(disable=True)
    adapter = pipe.identity_adapter
    adapter.unload()
    try:
        ref = plain(PROMPT, image=latents, strength=0.5, num_inference_steps=4, guidance_scale=5.0,
                    generator=torch.Generator().manual_seed(0), output_type="np").images
    finally:
        adapter.load(pipe.unet)
    got = _run(pipe, kps, emb, photo, adapter_scale=0.0, identity_scale=0.0)
    assert got.shape == ref.shape == (1, SIZE, SIZE, 3)
    assert np.abs(got - ref).max() < 1e-5
    with_id = _run(pipe, kps, emb, photo, adapter_scale=0.8, identity_scale=0.8)
    assert np.abs(with_id - ref).max() > 1e-3


def test_strength_sets_how_far_the_result_moves(parts):
    _, _, pipe, kps, emb, photo = parts
    src = np.asarray(photo, np.float32) / 255
    low = _run(pipe, kps, emb, photo, strength=0.25)[0]
    high = _run(pipe, kps, emb, photo, strength=1.0)[0]
    assert np.abs(low - src).mean() < np.abs(high - src).mean()
    events = []
    _run(pipe, kps, emb, photo, strength=0.5, on_step=lambda s, t: events.append((s, t)))
    assert events == [(1, 2), (2, 2)]  # 4 steps at strength 0.5 → the last 2


def test_inpaint_keeps_latents_outside_the_mask_exactly(parts):
    _, _, pipe, kps, emb, photo = parts
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    clean = pipe.encode_image_latents(photo, SIZE, SIZE, "cpu")
    out = _run(pipe, kps, emb, photo, strength=0.8, mask_image=PIL.Image.fromarray(mask), output_type="latent")
    m = latent_mask(PIL.Image.fromarray(mask), SIZE, SIZE, pipe.vae_scale_factor, "cpu", torch.float32)
    assert m.shape == (1, 1, SIZE // pipe.vae_scale_factor, SIZE // pipe.vae_scale_factor)
    outside = (m == 0).expand_as(out)
    assert torch.equal(out[outside], clean[outside])
    inside = (m == 1).expand_as(out)
    assert (out[inside] - clean[inside]).abs().max() > 1e-3


def test_errors_and_cancel(parts):
    _, _, pipe, kps, emb, photo = parts
    with pytest.raises(InvalidInputError, match="strength"):
        _run(pipe, kps, emb, photo, strength=0.0)
    with pytest.raises(InvalidInputError, match="no denoising step"):
        _run(pipe, kps, emb, photo, strength=0.1, num_inference_steps=2)
    with pytest.raises(InvalidInputError, match="image"):
        pipe(PROMPT, emb, kps, None)
    with pytest.raises(InvalidInputError, match="not both"):
        _run(pipe, kps, emb, photo, latents=torch.zeros(1, 4, 32, 32))
    _, base, *_ = parts
    with pytest.raises(InvalidInputError, match="InstantIDImg2ImgPipeline"):
        base(PROMPT, emb, kps, start=ImageStart(photo, 0.5), num_inference_steps=2)
    with pytest.raises(Cancelled):
        _run(pipe, kps, emb, photo, cancel=lambda: True)
