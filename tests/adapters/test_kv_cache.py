"""Cross-attention keys/values once per generation: identical outputs, one projection per layer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import tiny_faceid as T  # noqa: E402
from tiny_sdxl import tiny_controlnet, tiny_instantid_pipeline  # noqa: E402

from faceanchor.adapters.attention import DecoupledAttnProcessor, IPAttnProcessor  # noqa: E402
from faceanchor.adapters.kv_cache import cross_attention_cache  # noqa: E402
from faceanchor.pipelines.faceid import FaceIDPipeline  # noqa: E402
from faceanchor.pipelines.instantid_sdxl import ExtraControl  # noqa: E402

STEPS = 3


class _Counter:
    """Counts forward calls of every ``to_k`` (text keys) and ``to_k_ip`` (identity keys) of a model."""

    def __init__(self, *models):
        self.text = 0
        self.ip = 0
        self.handles = []
        for model in models:
            for name, mod in model.named_modules():
                if name.endswith("attn2.to_k"):
                    self.handles.append(mod.register_forward_hook(self._hit("text")))
            for proc in model.attn_processors.values():
                if hasattr(proc, "to_k_ip"):
                    self.handles.append(proc.to_k_ip.register_forward_hook(self._hit("ip")))

    def _hit(self, kind):
        def hook(*_):
            setattr(self, kind, getattr(self, kind) + 1)

        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _layers(model):
    return sum(1 for n in model.attn_processors if n.endswith("attn2.processor"))


@pytest.fixture(scope="module")
def iid(tmp_path_factory):
    return tiny_instantid_pipeline(tmp_path_factory.mktemp("tok"), 64)


def _instantid(pipe, kps, emb, cached, **kw):
    pipe.cache_cross_attention = cached
    n = kw.pop("num_images", 1)
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    return pipe("a photo of a man", emb, kps, num_inference_steps=STEPS, guidance_scale=5.0, num_images=n,
                generator=gens, output_type="np", **kw).images


@pytest.mark.parametrize(
    "case",
    ["default", "batch2", "region", "extra_control", "window"],
)
def test_instantid_cached_equals_uncached_bit_for_bit(iid, case):
    comps, pipe, kps, emb = iid
    kw = {}
    if case == "batch2":
        kw["num_images"] = 2
    elif case == "region":
        mask = np.zeros((64, 64, 3), np.uint8)
        mask[16:48, 20:44] = 255
        kw["face_mask"] = mask
    elif case == "extra_control":
        kw["extra_controls"] = [ExtraControl(controlnet=tiny_controlnet(seed=5), image=kps, scale=0.5)]
    elif case == "window":
        kw.update(control_guidance_start=0.3, control_guidance_end=0.7)
    before = dict(pipe.unet.attn_processors), dict(pipe.controlnet.attn_processors)
    ref = _instantid(pipe, kps, emb, cached=False, **kw)
    got = _instantid(pipe, kps, emb, cached=True, **kw)
    assert np.array_equal(ref, got)
    # the scope restores every processor object and leaves no cache behind
    assert all(a is b for a, b in zip(before[0].values(), pipe.unet.attn_processors.values()))
    assert all(a is b for a, b in zip(before[1].values(), pipe.controlnet.attn_processors.values()))
    assert all(getattr(p, "kv_cache", None) is None for p in pipe.unet.attn_processors.values())


def test_instantid_projects_keys_once_per_generation(iid):
    comps, pipe, kps, emb = iid
    counter = _Counter(pipe.unet, pipe.controlnet)
    try:
        _instantid(pipe, kps, emb, cached=False)
        uncached = (counter.text, counter.ip)
        counter.text = counter.ip = 0
        _instantid(pipe, kps, emb, cached=True)
        cached = (counter.text, counter.ip)
    finally:
        counter.close()
    unet_layers, net_layers = _layers(pipe.unet), _layers(pipe.controlnet)
    assert uncached == (STEPS * (unet_layers + net_layers), STEPS * unet_layers)
    assert cached == (unet_layers + net_layers, unet_layers)


@pytest.fixture(scope="module")
def faceid(tmp_path_factory):
    return FaceIDPipeline(T.build_sd15(tmp_path_factory.mktemp("base")), image_encoder=T.build_clip_vision())


@pytest.mark.parametrize("method", ["faceid", "faceid-plusv2", "faceid-portrait"])
def test_faceid_cached_equals_uncached_and_projects_once(faceid, method):
    faceid.load(method, None, id_dim=T.ID_DIM, lora_rank=4, required_space=None, seed=3)
    for proc in faceid.pipe.unet.attn_processors.values():  # random adapters start with zero LoRA up-weights
        for p in proc.parameters() if isinstance(proc, torch.nn.Module) else ():
            p.data.normal_(0, 0.05)
    args = dict(face_image=T.face_crop(), prompt="a photo", negative_prompt="blurry", num_images=1, num_inference_steps=STEPS,
                guidance_scale=5.0, width=64, height=64, output_type="np")
    n_refs = 5 if method == "faceid-portrait" else 1
    counter = _Counter(faceid.pipe.unet)
    try:
        faceid.cache_cross_attention = False
        ref = np.stack(faceid.generate(T.embedding(n=n_refs), generator=[torch.Generator().manual_seed(0)], **args))
        uncached = counter.text
        counter.text = 0
        faceid.cache_cross_attention = True
        got = np.stack(faceid.generate(T.embedding(n=n_refs), generator=[torch.Generator().manual_seed(0)], **args))
        cached = counter.text
    finally:
        counter.close()
        faceid.cache_cross_attention = True
    assert np.array_equal(ref, got)
    layers = _layers(faceid.pipe.unet)
    assert (uncached, cached) == (STEPS * layers, layers)


def test_plain_cross_attention_is_cached_and_restored(faceid):
    """A base UNet with diffusers' own processors: swapped for the scope, put back after."""
    faceid.unload()
    unet = faceid.pipe.unet
    before = dict(unet.attn_processors)
    with cross_attention_cache(unet) as n:
        assert n == _layers(unet)
        assert all(type(p) is DecoupledAttnProcessor for k, p in unet.attn_processors.items() if k.endswith("attn2.processor"))
    assert all(a is b for a, b in zip(before.values(), unet.attn_processors.values()))


def test_a_changed_tensor_misses_the_cache():
    torch.manual_seed(0)
    from diffusers.models.attention_processor import Attention

    attn = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8)
    proc = IPAttnProcessor(16, 8, num_tokens=2, scale=0.5)
    attn.set_processor(proc)
    x = torch.randn(1, 5, 16)
    states = torch.randn(1, 6, 8)
    proc.kv_cache = {}
    first = attn(x, encoder_hidden_states=states)
    assert torch.equal(attn(x, encoder_hidden_states=states), first)
    states.mul_(2.0)  # in place: same object, new version
    changed = attn(x, encoder_hidden_states=states)
    proc.kv_cache = None
    assert torch.equal(changed, attn(x, encoder_hidden_states=states))
    assert not torch.allclose(changed, first)
