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
from faceanchor.pipelines.callbacks import step_callback  # noqa: E402
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


def _diffusers(cls, comps, **extra):
    ref = cls(**comps, add_watermarker=False, **extra)
    ref.set_progress_bar_config(disable=True)
    return ref


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("strength", [0.5, 1.0])
@pytest.mark.parametrize("seeds", [(0,), (3, 4)])
def test_start_latents_equal_diffusers_controlnet_img2img_prepare_latents(parts, strength, seeds):
    """Our image start = diffusers' StableDiffusionXLControlNetImg2ImgPipeline.prepare_latents (the official
    img2img pipeline's, inherited): VAE sampled with each image's generator, noised at the first kept timestep
    (also at strength 1), bit for bit."""
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

    comps, _, pipe, _, _, photo = parts
    ref = _diffusers(StableDiffusionXLControlNetImg2ImgPipeline, comps)
    n, steps = len(seeds), 4
    ref.scheduler.set_timesteps(steps, device="cpu")
    ts, _ = ref.get_timesteps(steps, strength, "cpu")
    pixels = ref.image_processor.preprocess(photo, height=SIZE, width=SIZE).to(dtype=torch.float32)
    gen = _gens(seeds) if n > 1 else _gens(seeds)[0]
    expected = ref.prepare_latents(pixels, ts[:1].repeat(n), 1, n, torch.float32, "cpu", gen, True)

    start = ImageStart(photo, strength)
    timesteps = start.timesteps(pipe, steps, "cpu")
    assert torch.equal(timesteps, ts)
    gen = _gens(seeds) if n > 1 else _gens(seeds)[0]
    got, hook = start.latents(pipe, timesteps, n, SIZE, SIZE, torch.float32, "cpu", gen)
    assert hook is None and got.shape == expected.shape == (n, 4, SIZE // 2, SIZE // 2)
    assert torch.equal(got, expected)
    if n > 1:  # one generator per image: each image samples its own VAE latents and noise
        assert (got[0] - got[1]).abs().max() > 1e-3


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_zero_scales_equal_diffusers_controlnet_img2img(parts, strength):
    """Identity off (adapter 0, IdentityNet 0): the whole image equals diffusers' ControlNet img2img pipeline."""
    from diffusers import StableDiffusionXLControlNetImg2ImgPipeline

    comps, _, pipe, kps, emb, photo = parts
    ref = _diffusers(StableDiffusionXLControlNetImg2ImgPipeline, comps)
    adapter = pipe.identity_adapter
    adapter.unload()
    try:
        expected = ref(PROMPT, image=photo, control_image=kps, strength=strength, num_inference_steps=4, guidance_scale=5.0,
                       controlnet_conditioning_scale=0.0, generator=torch.Generator().manual_seed(0), output_type="np").images
    finally:
        adapter.load(pipe.unet)
    got = _run(pipe, kps, emb, photo, strength=strength, adapter_scale=0.0, identity_scale=0.0)
    assert got.shape == expected.shape == (1, SIZE, SIZE, 3)
    assert np.abs(got - expected).max() < 1e-5
    with_id = _run(pipe, kps, emb, photo, strength=strength, adapter_scale=0.8, identity_scale=0.8)
    assert np.abs(with_id - expected).max() > 1e-3
    if strength == 1.0:  # the image still shapes the result at strength 1 (noised, not replaced by noise)
        other = PIL.Image.fromarray(255 - np.asarray(photo))
        assert np.abs(_run(pipe, kps, emb, other, strength=1.0) - _run(pipe, kps, emb, photo, strength=1.0)).max() > 1e-3


def _mask():
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[16:48, 16:48] = 255
    return PIL.Image.fromarray(mask)


@pytest.mark.parametrize("strength", [0.75, 1.0])
def test_inpaint_zero_scales_equal_diffusers_controlnet_inpaint(parts, strength):
    """With a mask: diffusers' StableDiffusionXLControlNetInpaintPipeline (4-channel UNet) — start latents
    (pure noise at strength 1, is_strength_max) and the per-step blend outside the mask."""
    from diffusers import StableDiffusionXLControlNetInpaintPipeline

    comps, _, pipe, kps, emb, photo = parts
    ref = _diffusers(StableDiffusionXLControlNetInpaintPipeline, comps)
    adapter = pipe.identity_adapter
    adapter.unload()
    try:
        expected = ref(PROMPT, image=photo, mask_image=_mask(), control_image=kps, strength=strength, num_inference_steps=4,
                       guidance_scale=5.0, controlnet_conditioning_scale=0.0, height=SIZE, width=SIZE,
                       generator=torch.Generator().manual_seed(0), output_type="latent").images
    finally:
        adapter.load(pipe.unet)
    got = _run(pipe, kps, emb, photo, strength=strength, mask_image=_mask(), adapter_scale=0.0, identity_scale=0.0,
               output_type="latent")
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-5


def test_strength_sets_how_far_the_result_moves(parts):
    _, _, pipe, kps, emb, photo = parts
    src = np.asarray(photo, np.float32) / 255
    low = _run(pipe, kps, emb, photo, strength=0.25)[0]
    high = _run(pipe, kps, emb, photo, strength=1.0)[0]
    assert np.abs(low - src).mean() < np.abs(high - src).mean()
    events = []
    _run(pipe, kps, emb, photo, strength=0.5, callback_on_step_end=step_callback(on_step=lambda s, t: events.append((s, t))))
    assert events == [(1, 2), (2, 2)]  # 4 steps at strength 0.5 → the last 2


def test_inpaint_keeps_latents_outside_the_mask_exactly(parts):
    _, _, pipe, kps, emb, photo = parts
    # the run's first draw from its generator is the VAE sample: the same seed gives the same clean latents
    clean = pipe.encode_image_latents(photo, SIZE, SIZE, "cpu", generator=torch.Generator().manual_seed(0))
    out = _run(pipe, kps, emb, photo, strength=0.8, mask_image=_mask(), output_type="latent")
    m = latent_mask(_mask(), SIZE, SIZE, pipe.vae_scale_factor, "cpu", torch.float32)
    assert m.shape == (1, 1, SIZE // pipe.vae_scale_factor, SIZE // pipe.vae_scale_factor)
    outside = (m == 0).expand_as(out)
    assert torch.equal(out[outside], clean[outside])
    inside = (m == 1).expand_as(out)
    assert (out[inside] - clean[inside]).abs().max() > 1e-3


def test_callback_cancels_between_steps_and_replaces_latents(parts, monkeypatch):
    _, _, pipe, kps, emb, photo = parts
    calls = []
    forward = pipe.unet.forward
    monkeypatch.setattr(pipe.unet, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    seen = []
    with pytest.raises(Cancelled, match="after step 2 of 5"):
        _run(pipe, kps, emb, photo, strength=1.0, num_inference_steps=5,
             callback_on_step_end=step_callback(on_step=lambda i, n: seen.append(i), cancel=lambda: len(seen) >= 2))
    assert seen == [1, 2] and len(calls) == 2
    monkeypatch.undo()
    out = _run(pipe, kps, emb, photo, output_type="latent",
               callback_on_step_end=lambda p, i, t, k: {"latents": torch.zeros_like(k["latents"])} if i == p.num_timesteps - 1 else {})
    assert torch.equal(out, torch.zeros_like(out))


def test_errors(parts):
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
    with pytest.raises(InvalidInputError, match="does not support enable_attention_slicing"):
        pipe.enable_attention_slicing()
