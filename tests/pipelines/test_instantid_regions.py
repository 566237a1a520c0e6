"""Two people in one picture: each identity held to its own region (tiny InstantID, 64 px)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_sdxl import tiny_instantid_pipeline  # noqa: E402

from faceanchor.errors import InvalidInputError  # noqa: E402
from faceanchor.face.kps import draw_kps  # noqa: E402
from faceanchor.pipelines.instantid_sdxl import RegionIdentity, face_box_mask  # noqa: E402

SIZE = 64
LEFT, RIGHT = (0, 8, 32, 56), (32, 8, 64, 56)  # x0, y0, x1, y1: edges on the 8 px latent grid


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    comps, pipe, _, emb = tiny_instantid_pipeline(tmp_path_factory.mktemp("tok"), SIZE)
    kps_left = draw_kps((SIZE, SIZE), [[8, 24], [24, 24], [16, 32], [10, 42], [22, 42]])
    kps_right = draw_kps((SIZE, SIZE), [[40, 24], [56, 24], [48, 32], [42, 42], [54, 42]])
    other = torch.as_tensor(np.random.RandomState(7).randn(emb.shape[-1]).astype(np.float32)) * float(emb.norm())
    return pipe, emb, other, kps_left, kps_right


def _run(pipe, emb, kps, mask, more=(), steps=2, **kw):
    return pipe("two friends", emb, kps, face_mask=PIL.Image.fromarray(mask), more_identities=list(more),
                num_inference_steps=steps, guidance_scale=5.0, generator=[torch.Generator().manual_seed(0)],
                output_type="np", **kw).images


def test_a_second_identity_with_zero_strengths_changes_nothing(parts):
    pipe, emb, other, kl, kr = parts
    left = face_box_mask(LEFT, SIZE, SIZE)
    single = _run(pipe, emb, kl, left)
    silent = RegionIdentity(other, kr, face_box_mask(RIGHT, SIZE, SIZE), identity_scale=0.0, adapter_scale=0.0)
    assert np.array_equal(_run(pipe, emb, kl, left, [silent]), single)
    both = _run(pipe, emb, kl, left, [RegionIdentity(other, kr, face_box_mask(RIGHT, SIZE, SIZE))])
    assert np.abs(both - single).max() > 1e-3
    # the processors are back to one identity after the call
    assert all(getattr(p, "identity_groups", None) is None for p in pipe.unet.attn_processors.values())


def _first_step(pipe, emb, other, kl, kr):
    """IdentityNet's summed residuals and the first cross-attention layer's output at step 1."""
    seen = {}

    def pre(module, args, kwargs):
        seen.setdefault("res", ([d.clone() for d in kwargs["down_block_additional_residuals"]], kwargs["mid_block_additional_residual"].clone()))

    name = next(n for n in pipe.unet.attn_processors if n.endswith("attn2.processor"))
    attn = pipe.unet.get_submodule(name[: -len(".processor")])
    h1 = pipe.unet.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = attn.register_forward_hook(lambda m, a, out: seen.setdefault("attn", out.clone()))
    try:
        _run(pipe, emb, kl, face_box_mask(LEFT, SIZE, SIZE), [RegionIdentity(other, kr, face_box_mask(RIGHT, SIZE, SIZE))], steps=1)
    finally:
        h1.remove()
        h2.remove()
    return seen


def test_each_identity_changes_only_its_region_before_the_decoder(parts):
    pipe, emb, other, kl, kr = parts
    a = _first_step(pipe, emb, other, kl, kr)
    b = _first_step(pipe, emb, -other, kl, kr)  # only the second identity's embedding differs
    right = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    right[RIGHT[1]:RIGHT[3], RIGHT[0]:RIGHT[2]] = True
    downs_a, mid_a = a["res"]
    downs_b, mid_b = b["res"]
    inside_changed = 0
    for ra, rb in zip(downs_a + [mid_a], downs_b + [mid_b]):
        s = SIZE // ra.shape[-1]
        outside = ~right[::s, ::s]
        assert torch.equal(ra[..., outside], rb[..., outside])
        inside_changed += int((ra[..., ~outside] - rb[..., ~outside]).abs().max() > 0)
    # the residuals after IdentityNet's cross-attention blocks do change inside the region
    assert inside_changed >= 3
    # first cross-attention layer: tokens (B, L, C) on the 8x8 latent grid of a 64 px image
    la, lb = a["attn"], b["attn"]
    side = int(round(la.shape[1] ** 0.5))
    grid = right[:: SIZE // side, :: SIZE // side].reshape(-1)
    assert torch.equal(la[:, ~grid], lb[:, ~grid])
    assert (la[:, grid] - lb[:, grid]).abs().max() > 0


def test_region_errors(parts):
    pipe, emb, other, kl, kr = parts
    left = face_box_mask(LEFT, SIZE, SIZE)
    with pytest.raises(InvalidInputError, match="overlap"):
        _run(pipe, emb, kl, left, [RegionIdentity(other, kr, face_box_mask((24, 8, 64, 56), SIZE, SIZE))])
    with pytest.raises(InvalidInputError, match="face_mask"):
        pipe("x", emb, kl, more_identities=[RegionIdentity(other, kr, face_box_mask(RIGHT, SIZE, SIZE))],
             num_inference_steps=1, output_type="np")
    with pytest.raises(InvalidInputError, match="identity 2 adapter_scale"):
        _run(pipe, emb, kl, left, [RegionIdentity(other, kr, face_box_mask(RIGHT, SIZE, SIZE), adapter_scale=-1)])
