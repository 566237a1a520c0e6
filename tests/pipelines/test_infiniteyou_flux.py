"""InfiniteYou's FLUX pipeline against diffusers' own FLUX pipelines on the same tiny weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from faceanchor.models.flux import TINY_MAX_SEQUENCE_LENGTH as SEQ
from faceanchor.pipelines.infiniteyou_flux import InfiniteYouFluxPipeline, control_image, control_keep, resize_and_pad
from tests.pipelines.tiny_flux import parts

W = H = 64
KPS = np.array([[22.0, 26.0], [42.0, 26.0], [32.0, 36.0], [24.0, 46.0], [40.0, 46.0]])


def _ours():
    from diffusers import FluxPipeline

    comps, net, proj = parts()
    base = FluxPipeline(**comps)
    base.set_progress_bar_config(disable=True)
    return InfiniteYouFluxPipeline(base, net, proj)


def _embedding(seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _reference(ids, control, *, n=1, scale=1.0, start=0.0, end=1.0, steps=3, latents, seed=7):
    """diffusers' FluxControlNetPipeline with InfuseNet fed as the official FluxInfuseNetPipeline feeds it:
    identity tokens (not the text) as its encoder states, zero text ids of their length, guidance 1.0."""
    from diffusers import FluxControlNetPipeline

    comps, net, _ = parts()
    ref = FluxControlNetPipeline(**comps, controlnet=net)
    ref.set_progress_bar_config(disable=True)
    orig = net.forward

    def infuse(*args, **kw):
        kw["encoder_hidden_states"] = ids.repeat_interleave(kw["hidden_states"].shape[0] // ids.shape[0], dim=0)
        kw["txt_ids"] = torch.zeros(ids.shape[1], 3)
        kw["guidance"] = torch.ones_like(kw["guidance"])
        return orig(*args, **kw)

    net.forward = infuse
    try:
        return ref(prompt="a portrait, cinematic", control_image=control, height=H, width=W, num_inference_steps=steps,
                   guidance_scale=3.5, controlnet_conditioning_scale=scale, control_guidance_start=start, control_guidance_end=end,
                   num_images_per_prompt=n, generator=torch.Generator().manual_seed(seed), latents=latents,
                   max_sequence_length=SEQ, output_type="np").images
    finally:
        del net.forward


def _latents(n, seed=3):
    return torch.randn(n, (H // 4) * (W // 4), 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", ["default", "pose", "window", "batch2"])
def test_equals_diffusers_flux_controlnet_fed_like_the_official_infusenet(case):
    pipe = _ours()
    n = 2 if case == "batch2" else 1
    ids = pipe.identity_tokens(_embedding(1))
    control = control_image(W, H, KPS if case == "pose" else None)
    start, end = (0.34, 0.67) if case == "window" else (0.0, 1.0)
    lat = _latents(n)
    got = pipe.generate(ids, prompt="a portrait, cinematic", control=control, width=W, height=H, num_images=n, num_inference_steps=3,
                        guidance_start=start, guidance_end=end, latents=lat.clone(), control_generator=torch.Generator().manual_seed(7),
                        max_sequence_length=SEQ, output_type="np")
    want = _reference(ids, control, n=n, start=start, end=end, latents=lat.clone())
    assert got.shape == want.shape == (n, H, W, 3)
    assert float(np.abs(got - want).max()) <= 1e-4
    assert got.std() > 0.01


def test_scale_zero_equals_plain_flux_and_identity_tokens_matter():
    from diffusers import FluxPipeline

    pipe = _ours()
    comps, _, _ = parts()
    plain = FluxPipeline(**comps)
    plain.set_progress_bar_config(disable=True)
    kw = dict(prompt="a portrait", width=W, height=H, num_inference_steps=3, max_sequence_length=SEQ, output_type="np")
    want = plain(height=H, width=W, prompt="a portrait", num_inference_steps=3, guidance_scale=3.5, max_sequence_length=SEQ,
                 generator=torch.Generator().manual_seed(5), output_type="np").images
    zero = pipe.generate(pipe.identity_tokens(_embedding(1)), conditioning_scale=0.0, generator=torch.Generator().manual_seed(5), **kw)
    assert float(np.abs(zero - want).max()) <= 1e-5
    a = pipe.generate(pipe.identity_tokens(_embedding(1)), generator=torch.Generator().manual_seed(5), **kw)
    b = pipe.generate(pipe.identity_tokens(_embedding(2)), generator=torch.Generator().manual_seed(5), **kw)
    assert float(np.abs(a - want).max()) > 1e-3  # InfuseNet changes the image
    assert float(np.abs(a - b).max()) > 1e-3  # and the identity decides how


def test_control_window_and_errors():
    assert control_keep(4, 0.0, 1.0) == [1.0, 1.0, 1.0, 1.0]
    assert control_keep(4, 0.25, 0.75) == [0.0, 1.0, 1.0, 0.0]  # step 0: 0/4 < .25; step 3: 4/4 > .75
    assert control_keep(10, 0.0, 0.5) == [1.0] * 5 + [0.0] * 5
    pipe = _ours()
    from faceanchor.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="multiples of 4"):
        pipe.generate(torch.zeros(1, 8, 32), prompt="x", width=66, height=64)
    with pytest.raises(InvalidInputError, match="start < end"):
        pipe.generate(torch.zeros(1, 8, 32), prompt="x", width=64, height=64, guidance_start=0.8, guidance_end=0.2)
    with pytest.raises(InvalidInputError, match="32"):
        pipe.generate(torch.zeros(1, 8, 16), prompt="x", width=64, height=64, max_sequence_length=SEQ)


def test_resize_and_pad_geometry_and_keypoint_control_image():
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 100, 3), dtype=np.uint8))  # 100 wide, 50 high
    out = np.asarray(resize_and_pad(src, (64, 96)))  # portrait target: match the width 64 -> 64 x int(64 * 50 / 100) = 32
    assert out.shape == (96, 64, 3)
    assert (out[:32] == 255).all() and (out[64:] == 255).all()  # (96 - 32) // 2 = 32 px of white above and below
    assert np.array_equal(out[32:64], np.asarray(src.resize((64, 32), Image.LANCZOS)))
    wide = np.asarray(resize_and_pad(src, (96, 40)))  # landscape: match the height 40 -> int(40 * 100 / 50) = 80 wide
    assert (wide[:, :8] == 255).all() and (wide[:, 88:] == 255).all()
    assert np.array_equal(wide[:, 8:88], np.asarray(src.resize((80, 40), Image.LANCZOS)))
    over = np.asarray(resize_and_pad(src, (40, 16)))  # landscape but narrower: 32 wide, offset 4, cut nothing
    assert over.shape == (16, 40, 3)
    black = np.asarray(control_image(48, 32))
    assert black.shape == (32, 48, 3) and not black.any()
    kp = np.asarray(control_image(W, H, KPS))
    assert tuple(kp[26, 22]) == (255, 0, 0) and tuple(kp[36, 32]) == (0, 0, 255)  # circles: point colours at the points
    assert tuple(kp[46, 40]) == (255, 0, 255) and kp[0, 0].sum() == 0


def test_a_lora_is_applied_as_the_official_load_loras_applies_it(tmp_path):
    """InfuseNet at scale 0 with a LoRA equals diffusers' FluxPipeline after the official ``load_loras``
    calls (``load_lora_weights`` + ``set_adapters`` with its weight); fresh parts: LoRAs stay out of the shared ones."""
    from diffusers import FluxPipeline
    from safetensors.torch import save_file

    from faceanchor.models import flux
    from faceanchor.pipelines.loras import LoraFile

    g = torch.Generator().manual_seed(0)
    layers = {"transformer_blocks.0.attn.to_k": (32, 32), "transformer_blocks.0.ff_context.net.2": (128, 32),
              "single_transformer_blocks.0.proj_mlp": (32, 128)}
    sd = {}
    for name, (i, o) in layers.items():
        sd[f"transformer.{name}.lora_A.weight"] = torch.randn(4, i, generator=g) * 0.5
        sd[f"transformer.{name}.lora_B.weight"] = torch.randn(o, 4, generator=g) * 0.5
    save_file(sd, str(tmp_path / "l.safetensors"))
    _, _, proj = parts()
    net = flux.build_infusenet("tiny", seed=0)
    base = FluxPipeline(**flux.build_components("tiny", seed=0))
    base.set_progress_bar_config(disable=True)
    ours = InfiniteYouFluxPipeline(base, net, proj)
    plain = FluxPipeline(**flux.build_components("tiny", seed=0))
    plain.set_progress_bar_config(disable=True)
    plain.load_lora_weights(str(tmp_path / "l.safetensors"), adapter_name="realism")
    plain.set_adapters(["realism"], adapter_weights=[0.7])
    want = plain(height=H, width=W, prompt="a portrait", num_inference_steps=3, guidance_scale=3.5, max_sequence_length=SEQ,
                 generator=torch.Generator().manual_seed(5), output_type="np").images
    kw = dict(prompt="a portrait", width=W, height=H, num_inference_steps=3, max_sequence_length=SEQ, output_type="np", conditioning_scale=0.0)
    ids = ours.identity_tokens(_embedding(1))
    before = ours.generate(ids, generator=torch.Generator().manual_seed(5), **kw)
    ours.set_loras([LoraFile(tmp_path / "l.safetensors", 0.7, "l")])
    got = ours.generate(ids, generator=torch.Generator().manual_seed(5), **kw)
    assert float(np.abs(got - want).max()) <= 1e-5 and float(np.abs(got - before).max()) > 1e-3
    ours.set_loras([])
    assert np.array_equal(ours.generate(ids, generator=torch.Generator().manual_seed(5), **kw), before)
    # with model CPU offload the hooks come off while the LoRA loads and go back (CPU stands in for the GPU)
    ours.enable_model_cpu_offload(device="cpu")
    ours.set_loras([LoraFile(tmp_path / "l.safetensors", 0.7, "l")])
    assert len(ours._offload_hooks) == 5 and all(hasattr(m, "_hf_hook") for m in (base.transformer, base.vae, net))
    assert float(np.abs(ours.generate(ids, generator=torch.Generator().manual_seed(5), **kw) - want).max()) <= 1e-5
    hooks = list(ours._offload_hooks)
    ours.set_loras([LoraFile(tmp_path / "l.safetensors", 0.0, "l")])  # loaded already: only its weight changes, the hooks stay
    assert ours._offload_hooks == hooks
    assert np.array_equal(ours.generate(ids, generator=torch.Generator().manual_seed(5), **kw), before)
