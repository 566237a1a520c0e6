"""Random adapters (InstantID, FaceID family) are seeded locally: same seed, same weights; the global RNG untouched."""

from __future__ import annotations

import pytest
import torch

from faceanchor.adapters.attention import IPAttnProcessor, cross_attention_layers
from faceanchor.adapters.faceid import FaceIDAdapter
from faceanchor.adapters.faceid_attention import LoRAIPAttnProcessor
from faceanchor.adapters.instantid import InstantIDAdapter
from faceanchor.adapters.resampler import Resampler, ResamplerConfig
from faceanchor.models import dummy

EMBED = 48
# a small Resampler (the official one is 1280 wide, 4 deep): output_dim/embedding_dim are set by random()
SMALL = ResamplerConfig(dim=32, depth=2, dim_head=8, heads=4, num_queries=16, embedding_dim=EMBED, output_dim=64, ff_mult=2)


@pytest.fixture(scope="module")
def sdxl_unet():
    return dummy.build_unet("sdxl", "tiny", seed=0)


@pytest.fixture(scope="module")
def sd15_unet():
    return dummy.build_unet("sd15", "tiny", seed=0)


def _flat(state: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {f"{section}/{k}": v for section, tensors in state.items() for k, v in tensors.items()}


def _instantid(unet, seed):
    return _flat(InstantIDAdapter.random(unet, embedding_dim=EMBED, config=SMALL, seed=seed).state_dict())


def _faceid(unet, method, seed):
    return _flat(FaceIDAdapter.build(unet, method, id_dim=EMBED, clip_dim=32, lora_rank=8, seed=seed).state())


def _random_keys(state):
    """Tensors the default init draws at random (not zero/one-filled norms, biases or LoRA ``up``)."""
    return [k for k, v in state.items() if v.numel() > 1 and float(v.std()) > 0]


BUILDERS = {
    "instantid": lambda unets, seed: _instantid(unets[0], seed),
    "faceid": lambda unets, seed: _faceid(unets[1], "faceid", seed),
    "faceid-plusv2": lambda unets, seed: _faceid(unets[1], "faceid-plusv2", seed),
    "faceid-portrait": lambda unets, seed: _faceid(unets[1], "faceid-portrait", seed),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_seed_same_weights_other_seed_other_weights_global_rng_untouched(name, sdxl_unet, sd15_unet):
    build = BUILDERS[name]
    unets = (sdxl_unet, sd15_unet)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = build(unets, 3), build(unets, 3), build(unets, 4)
    assert torch.equal(torch.random.get_rng_state(), before), "a seeded build drew from the global RNG"
    assert a.keys() == b.keys() == c.keys() and len(a) > 4
    assert all(torch.equal(a[k], b[k]) for k in a)
    drawn = _random_keys(a)
    assert len(drawn) >= len(a) // 4, drawn
    different = [k for k in drawn if not torch.equal(a[k], c[k])]
    assert different == drawn  # every randomly initialised tensor changes with the seed
    # the global seed does not leak into the weights
    torch.manual_seed(999)
    assert all(torch.equal(a[k], v) for k, v in build(unets, 3).items())


def test_instantid_weights_keep_the_modules_default_init(sdxl_unet):
    """``seed`` replaces only where the numbers come from: the same as torch.manual_seed(seed) and
    constructing the Resampler then one IPAttnProcessor per cross-attention layer, in that order."""
    adapter = InstantIDAdapter.random(sdxl_unet, embedding_dim=EMBED, config=SMALL, seed=11)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        proj = Resampler(adapter.image_proj.config)
        procs = [IPAttnProcessor(layer.hidden_size, layer.cross_attention_dim, num_tokens=16) for layer in cross_attention_layers(sdxl_unet)]
    for k, v in proj.state_dict().items():
        assert torch.equal(adapter.image_proj.state_dict()[k], v), k
    ours = list(adapter.processors.values())
    assert len(ours) == len(procs) > 0
    for mine, ref in zip(ours, procs):
        assert all(torch.equal(mine.state_dict()[k], v) for k, v in ref.state_dict().items())
    # scales of the default init: latents randn / sqrt(dim), Linear kaiming-uniform (std 1/sqrt(3 fan_in))
    dim = adapter.image_proj.latents.shape[-1]
    assert abs(float(adapter.image_proj.latents.detach().std()) * dim**0.5 - 1) < 0.15
    w = ours[0].to_k_ip.weight
    assert abs(float(w.detach().std()) * (3 * w.shape[1]) ** 0.5 - 1) < 0.15


def test_random_instantid_adapter_changes_the_unet_output_by_scale(sdxl_unet):
    adapter = InstantIDAdapter.random(sdxl_unet, embedding_dim=EMBED, config=SMALL, seed=2).load(sdxl_unet)
    try:
        g = torch.Generator().manual_seed(0)
        sample, text = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 7, 64, generator=g)
        cond = {"text_embeds": torch.randn(1, 32, generator=g), "time_ids": torch.randn(1, 6, generator=g)}
        tokens = adapter.project(torch.randn(1, EMBED, generator=g))
        hidden = torch.cat([text, tokens], dim=1)

        def run(scale):
            adapter.set_scale(scale)
            with torch.no_grad():
                return sdxl_unet(sample, 10, encoder_hidden_states=hidden, added_cond_kwargs=cond).sample

        off, on = run(0.0), run(0.8)
        assert torch.isfinite(on).all()
        assert float((on - off).abs().mean()) > 1e-3 * float(off.abs().mean())
    finally:
        adapter.unload()


def test_random_faceid_adapter_changes_the_unet_output_by_scale(sd15_unet):
    adapter = FaceIDAdapter.build(sd15_unet, "faceid", id_dim=EMBED, lora_rank=8, seed=5)
    assert any(isinstance(p, LoRAIPAttnProcessor) for p in adapter.processors.values())
    g = torch.Generator().manual_seed(0)
    sample, text = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 7, 64, generator=g)
    cond, _ = adapter.project(torch.randn(1, EMBED, generator=g))
    hidden = torch.cat([text, cond], dim=1)
    adapter.install()
    try:

        def run(scale):
            adapter.set_scale(scale)
            with torch.no_grad():
                return sd15_unet(sample, 10, encoder_hidden_states=hidden).sample

        off, on = run(0.0), run(1.0)
        assert torch.isfinite(on).all()
        assert float((on - off).abs().mean()) > 1e-3 * float(off.abs().mean())
    finally:
        adapter.unload()
