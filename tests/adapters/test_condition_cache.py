"""ControlNet condition embeddings once per generation: identical outputs, one embedding per image."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
from tiny_sdxl import tiny_controlnet, tiny_instantid_pipeline  # noqa: E402

from faceanchor.adapters.condition_cache import condition_embedding_cache  # noqa: E402
from faceanchor.pipelines.instantid_sdxl import ExtraControl  # noqa: E402

STEPS = 3


@pytest.fixture(scope="module")
def iid(tmp_path_factory):
    comps, pipe, kps, emb = tiny_instantid_pipeline(tmp_path_factory.mktemp("tok"), 64)
    _unzero(pipe.controlnet)
    return comps, pipe, kps, emb


def _unzero(net):
    """A fresh ControlNet's zero convolution would hide every difference of the embedding."""
    with torch.no_grad():
        net.controlnet_cond_embedding.conv_out.weight.normal_(0, 0.1)
    return net


def _run(pipe, kps, emb, cached, **kw):
    pipe.cache_control_condition = cached
    try:
        return pipe("a photo of a man", emb, kps, num_inference_steps=STEPS, guidance_scale=5.0,
                    generator=[torch.Generator().manual_seed(0)], output_type="np", **kw).images
    finally:
        pipe.cache_control_condition = True


def _count(*nets):
    calls = []
    handles = [n.controlnet_cond_embedding.conv_in.register_forward_hook(lambda *_: calls.append(1)) for n in nets]
    return calls, handles


@pytest.mark.parametrize("extra", [False, True])
def test_cached_equals_uncached_and_embeds_once(iid, extra):
    comps, pipe, kps, emb = iid
    kw = {}
    nets = [pipe.controlnet]
    if extra:
        net = _unzero(tiny_controlnet(seed=5))
        kw["extra_controls"] = [ExtraControl(controlnet=net, image=kps, scale=0.5)]
        nets.append(net)
    # the embedding's first convolution runs only when the embedding is computed (a hit skips it)
    calls, handles = _count(*nets)
    try:
        ref = _run(pipe, kps, emb, cached=False, **kw)
        uncached = len(calls)
        calls.clear()
        got = _run(pipe, kps, emb, cached=True, **kw)
        cached = len(calls)
    finally:
        for h in handles:
            h.remove()
    assert np.array_equal(ref, got)
    with torch.no_grad():  # the embedding matters to the image (not a zero convolution): equality means something
        assert all(n.controlnet_cond_embedding(torch.rand(1, 3, 64, 64)).abs().max() > 0 for n in nets)
    assert uncached == STEPS * len(nets)
    assert cached == len(nets)
    assert all("forward" not in vars(n.controlnet_cond_embedding) for n in nets)  # the scope restores the module


def test_a_new_or_changed_image_misses_the_cache():
    torch.manual_seed(0)
    net = tiny_controlnet(seed=1)
    emb = _unzero(net).controlnet_cond_embedding
    image = torch.rand(1, 3, 64, 64)
    with condition_embedding_cache(net, net) as n:  # one net listed twice is patched once
        assert n == 1
        first = emb(image)
        assert emb(image) is first  # a hit returns the stored tensor
        other = emb(image.clone())
        assert other is not first and torch.equal(other, first)
        image.mul_(0.5)  # in place: same object, new version
        changed = emb(image)
    assert "forward" not in vars(emb)
    assert torch.equal(changed, emb(image))
    assert not torch.allclose(changed, first)


def test_disabled_changes_nothing():
    net = tiny_controlnet(seed=1)
    with condition_embedding_cache(net, enabled=False) as n:
        assert n == 0
        assert "forward" not in vars(net.controlnet_cond_embedding)
