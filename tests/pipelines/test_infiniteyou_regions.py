"""InfiniteYou with several people: one InfuseNet pass per identity, its residuals weighted by its
region in FLUX's packed-latent token space and summed (tiny FLUX, 64 px; the tiny VAE halves, so
one image token is a 4 x 4 pixel patch here, 16 x 16 on FLUX.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faceanchor.errors import InvalidInputError
from faceanchor.methods.regions import box_mask
from faceanchor.models.flux import TINY_MAX_SEQUENCE_LENGTH as SEQ
from faceanchor.pipelines.infiniteyou_flux import RegionIdentity, control_image, token_mask
from tests.pipelines.test_infiniteyou_flux import _embedding, _latents, _ours

W = H = 64
PATCH = 4  # tiny FLUX: VAE factor 2 x the 2x2 packing
LEFT, RIGHT = (0, 8, 30, 56), (34, 8, 64, 56)  # x0, y0, x1, y1; off the token grid on purpose
KPS_L = np.array([[8.0, 24.0], [22.0, 24.0], [15.0, 32.0], [10.0, 42.0], [20.0, 42.0]])
KPS_R = KPS_L + [34.0, 0.0]


@pytest.fixture(scope="module")
def pipe():
    return _ours()


def _mask(box, feather=False):
    return box_mask(box, W, H, feather)


def _gen(pipe, ids, *, steps=2, **kw):
    return pipe.generate(ids, prompt="two friends", width=W, height=H, num_inference_steps=steps, latents=_latents(1),
                         control_generator=torch.Generator().manual_seed(7), max_sequence_length=SEQ, output_type="latent", **kw)


def _expected_token_mask(mask: np.ndarray, patch: int) -> np.ndarray:
    """Written out: token t covers latent rows/cols 2r, 2r+1 / 2c, 2c+1 of the packed 2x2 patch,
    i.e. pixels [r*patch, (r+1)*patch) x [c*patch, (c+1)*patch), with r = t // cols, c = t % cols."""
    rows, cols = mask.shape[0] // patch, mask.shape[1] // patch
    out = np.zeros(rows * cols, np.float64)
    for t in range(rows * cols):
        r, c = divmod(t, cols)
        total = 0.0
        for y in range(r * patch, (r + 1) * patch):
            for x in range(c * patch, (c + 1) * patch):
                total += float(mask[y, x])
        out[t] = total / (patch * patch)
    return out


@pytest.mark.parametrize("patch, size", [(4, (48, 32)), (16, (96, 64))])
def test_token_mask_is_the_mean_over_each_packed_patch(patch, size):
    from diffusers import FluxPipeline

    w, h = size
    rng = np.random.default_rng(0)
    soft = np.asarray(box_mask((5, 3, w - 13, h - 6), w, h, feather=True), np.float32)
    soft = soft[..., 0] if soft.ndim == 3 else soft
    mask = soft / 255.0 * rng.uniform(0.5, 1.0, soft.shape).astype(np.float32)
    got = token_mask(torch.from_numpy(mask), w, h, patch).numpy()
    assert got.shape == ((h // patch) * (w // patch),)
    assert np.allclose(got, _expected_token_mask(mask, patch), atol=1e-6)
    # and in diffusers' own packing order: the mask averaged to the latent grid, packed 2x2, averaged per token
    lat = torch.from_numpy(mask).reshape(h // (patch // 2), patch // 2, w // (patch // 2), patch // 2).mean(dim=(1, 3))
    packed = FluxPipeline._pack_latents(lat[None, None], 1, 1, lat.shape[0], lat.shape[1])  # (1, tokens, 4)
    assert np.allclose(packed[0].mean(-1).numpy(), got, atol=1e-6)
    # uint8 images (box_mask's L mode) are divided by 255; a hard box on the grid gives exactly 0/1 per token
    hard = token_mask(box_mask((patch, 0, 3 * patch, 2 * patch), w, h, feather=False), w, h, patch).reshape(h // patch, w // patch)
    assert hard[:2, 1:3].eq(1).all() and hard.sum() == 4


def test_one_identity_whose_region_is_the_whole_image_is_the_single_identity_path(pipe):
    ids = pipe.identity_tokens(_embedding(1))
    whole = np.full((H, W), 255, np.uint8)
    for control in (None, control_image(W, H, KPS_L)):
        single = _gen(pipe, ids, control=control)
        assert torch.equal(_gen(pipe, ids, control=control, region=whole), single)
    # a smaller region does act: the residuals reach fewer tokens
    assert not torch.equal(_gen(pipe, ids, region=_mask(LEFT)), _gen(pipe, ids))


def test_a_second_identity_at_scale_zero_changes_nothing(pipe):
    ids, other = pipe.identity_tokens(_embedding(1)), pipe.identity_tokens(_embedding(2))
    single = _gen(pipe, ids, region=_mask(LEFT))
    silent = RegionIdentity(other, control_image(W, H, KPS_R), _mask(RIGHT), scale=0.0)
    assert torch.equal(_gen(pipe, ids, region=_mask(LEFT), more_identities=[silent]), single)
    both = _gen(pipe, ids, region=_mask(LEFT), more_identities=[RegionIdentity(other, control_image(W, H, KPS_R), _mask(RIGHT))])
    assert (both - single).abs().max() > 1e-4


def _residuals(pipe, second, steps=2):
    """The summed InfuseNet residuals the transformer receives at every step, and the final packed latents."""
    seen = []

    def pre(module, args, kwargs):
        seen.append(([r.clone() for r in kwargs["controlnet_block_samples"]], [r.clone() for r in kwargs["controlnet_single_block_samples"]]))

    ids = pipe.identity_tokens(_embedding(1))
    hook = pipe.base.transformer.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        out = _gen(pipe, ids, steps=steps, control=control_image(W, H, KPS_L), region=_mask(LEFT, feather=True),
                   more_identities=[RegionIdentity(second, control_image(W, H, KPS_R), _mask(RIGHT, feather=True), scale=1.2)])
    finally:
        hook.remove()
    return seen, out


def test_each_identity_reaches_only_the_tokens_of_its_region(pipe):
    """Only the second identity's tokens differ between two runs: at the first step (same latents)
    the residuals the transformer gets differ only on tokens the second region's mask reaches, and
    at every step tokens outside both regions get no residual at all. (The final latents differ
    everywhere: FLUX's joint attention mixes all image tokens in every block.)"""
    a, lat_a = _residuals(pipe, pipe.identity_tokens(_embedding(2)))
    b, lat_b = _residuals(pipe, pipe.identity_tokens(_embedding(3)))
    right = token_mask(_mask(RIGHT, feather=True), W, H, PATCH) > 0
    left = token_mask(_mask(LEFT, feather=True), W, H, PATCH) > 0
    assert right.any() and not (right & left).any()
    changed = 0
    for (da, sa), (db, sb) in zip(a[:1], b[:1]):  # step 1
        for ra, rb in zip(da + sa, db + sb):
            assert torch.equal(ra[:, ~right], rb[:, ~right])
            changed += int((ra[:, right] - rb[:, right]).abs().max() > 0)
    assert changed == len(a[0][0]) + len(a[0][1])  # every residual of InfuseNet's blocks changes inside
    outside = ~(left | right)
    for da, sa in a + b:
        for r in da + sa:
            assert r[:, outside].eq(0).all() and r[:, left].abs().max() > 0
    assert len(a) == 2 and not torch.equal(lat_a, lat_b)


def test_region_errors(pipe):
    ids, other = pipe.identity_tokens(_embedding(1)), pipe.identity_tokens(_embedding(2))
    with pytest.raises(InvalidInputError, match="identities 1 and 2 overlap"):
        _gen(pipe, ids, region=_mask(LEFT), more_identities=[RegionIdentity(other, None, _mask((20, 8, 64, 56)))])
    with pytest.raises(InvalidInputError, match="give region for the first"):
        _gen(pipe, ids, more_identities=[RegionIdentity(other, None, _mask(RIGHT))])
    with pytest.raises(InvalidInputError, match="identity 2 InfuseNet scale"):
        _gen(pipe, ids, region=_mask(LEFT), more_identities=[RegionIdentity(other, None, _mask(RIGHT), scale=-1.0)])
    with pytest.raises(InvalidInputError, match="64x64"):
        _gen(pipe, ids, region=np.ones((32, 32), np.float32))
    with pytest.raises(InvalidInputError, match="identity 2 tokens are 16 wide"):
        _gen(pipe, ids, region=_mask(LEFT), more_identities=[RegionIdentity(torch.zeros(1, 8, 16), None, _mask(RIGHT))])
