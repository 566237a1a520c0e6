"""Attention slicing inside faceanchor's processors (setting speed_attention_slicing): every
attention call of the UNet and IdentityNet sees at most ``chunk`` query tokens, the identity
processors stay installed, and the images equal the unsliced ones (fp32, tiny weights)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "pipelines"))
import official_layout as O  # noqa: E402
import tiny_faceid as T  # noqa: E402
from tiny_sdxl import tiny_instantid_pipeline  # noqa: E402

from faceanchor.adapters.attention import DecoupledAttnProcessor  # noqa: E402
from faceanchor.adapters.attention_slicing import sliced_attention  # noqa: E402
from faceanchor.errors import InvalidInputError  # noqa: E402
from faceanchor.pipelines.acceleration import SpeedOptions, accelerate  # noqa: E402
from faceanchor.pipelines.faceid import FaceIDPipeline  # noqa: E402

CHUNK = 7  # fewer query tokens than any attention layer has at 64², and not a divisor of them


@contextmanager
def watch(monkeypatch, *modules):
    """Record, inside ``modules``' forwards only, the query length of every attention call and
    the processors installed at that moment."""
    seen = {"queries": [], "processors": []}
    inside = []
    real = F.scaled_dot_product_attention

    def sdpa(query, *a, **kw):
        if inside:
            seen["queries"].append(query.shape[-2])
        return real(query, *a, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", sdpa)
    def enter(mod, args):
        inside.append(mod)
        seen["processors"].append(dict(mod.attn_processors))

    def leave(mod, args, out):
        inside.pop()

    hooks = [h for m in modules for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


@pytest.fixture(scope="module")
def instantid(tmp_path_factory):
    return tiny_instantid_pipeline(tmp_path_factory.mktemp("tok"), 64)


def _instantid(pipe, kps, emb):
    return pipe("a photo of a man", emb, kps, num_inference_steps=2, guidance_scale=5.0,
                generator=[torch.Generator().manual_seed(0)], output_type="np").images


@pytest.mark.parametrize("cache", [True, False])
def test_instantid_sliced_equals_unsliced_and_keeps_the_identity_processors(instantid, monkeypatch, cache):
    _, pipe, kps, emb = instantid
    pipe.cache_cross_attention = cache
    identity = dict(pipe.identity_adapter.processors)
    before = {m: dict(m.attn_processors) for m in (pipe.unet, pipe.controlnet)}
    ref = _instantid(pipe, kps, emb)
    with watch(monkeypatch, pipe.unet, pipe.controlnet) as unsliced:
        _instantid(pipe, kps, emb)
    assert max(unsliced["queries"]) > CHUNK
    accelerate(pipe, SpeedOptions(attention_slicing=CHUNK), "cpu")
    try:
        with watch(monkeypatch, pipe.unet, pipe.controlnet) as seen:
            got = _instantid(pipe, kps, emb)
        assert seen["queries"] and max(seen["queries"]) <= CHUNK  # every attention call, self and cross, sliced
        assert len(seen["queries"]) > len(unsliced["queries"])
        # during the run the identity processors are the installed ones, the adapter's own objects
        for procs in seen["processors"]:
            if set(identity) <= set(procs):
                assert all(procs[k] is p for k, p in identity.items())
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    finally:
        accelerate(pipe, SpeedOptions(), "cpu")
        pipe.cache_cross_attention = True
    # afterwards every processor is the one from before, none left sliced
    for m, procs in before.items():
        assert all(m.attn_processors[k] is p for k, p in procs.items())
    assert all(p.query_chunk is None for m in before for p in m.attn_processors.values() if isinstance(p, DecoupledAttnProcessor))
    assert pipe.attention_slice_size is None


@pytest.fixture(scope="module")
def faceid(tmp_path_factory):
    d = tmp_path_factory.mktemp("faceid")
    fp = FaceIDPipeline(T.build_sd15(d / "base"), image_encoder=T.build_clip_vision())
    return fp, d


@pytest.mark.parametrize("method", ["faceid", "faceid-plusv2", "faceid-portrait"])
def test_faceid_sliced_equals_unsliced_and_keeps_the_faceid_processors(faceid, monkeypatch, method):
    fp, d = faceid
    ckpt = O.write_bin(O.faceid_checkpoint(fp.pipe.unet, method, id_dim=T.ID_DIM, clip_dim=48, seed=3, std=0.05), d / f"{method}.bin")
    adapter = fp.load(method, ckpt, required_space=None)
    n_refs = 2 if method == "faceid-portrait" else 1

    def run():
        return np.stack(fp.generate(T.embedding(n=n_refs), face_image=T.face_crop(), prompt="a photo of a person",
                                    negative_prompt="blurry", num_images=1, num_inference_steps=2, guidance_scale=5.0,
                                    width=64, height=64, generator=[torch.Generator().manual_seed(0)], output_type="np"))

    try:
        ref = run()
        accelerate(fp, SpeedOptions(attention_slicing=CHUNK), "cpu")
        with watch(monkeypatch, fp.pipe.unet) as seen:
            got = run()
        assert seen["queries"] and max(seen["queries"]) <= CHUNK
        own = {k: p for k, p in adapter.processors.items() if isinstance(p, DecoupledAttnProcessor)}  # identity / LoRA ones
        assert own and len(seen["processors"]) == 2  # one UNet call per step (CFG batched)
        for procs in seen["processors"]:
            assert all(procs[k] is p for k, p in own.items())
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    finally:
        accelerate(fp, SpeedOptions(), "cpu")
        fp.unload()


def test_masks_are_sliced_with_the_queries():
    proc = DecoupledAttnProcessor()
    q, k, v = (torch.randn(2, 3, n, 8) for n in (20, 11, 11))
    rows = torch.randn(2, 3, 20, 11)
    broadcast = torch.randn(2, 3, 1, 11)
    for mask in (None, rows, broadcast):
        whole = proc._sdpa(q, k, v, mask)
        proc.query_chunk = 6
        torch.testing.assert_close(proc._sdpa(q, k, v, mask), whole, rtol=0, atol=1e-6)
        proc.query_chunk = None


def test_refusals_and_the_teaching_error(instantid):
    _, pipe, _, _ = instantid
    with pytest.raises(InvalidInputError, match="speed_attention_slicing"):
        pipe.enable_attention_slicing()  # diffusers' switch stays refused, pointing at the setting
    with pytest.raises(InvalidInputError, match="do not combine"):
        accelerate(pipe, SpeedOptions(attention_slicing=64, fuse_qkv=True), "cpu")

    class OtherPipeline:  # a pipeline without faceanchor's processors (e.g. FLUX)
        pass

    with pytest.raises(InvalidInputError, match="not by OtherPipeline"):
        accelerate(OtherPipeline(), SpeedOptions(attention_slicing=64), "cpu")
    with pytest.raises(ValueError, match="positive"):
        with sliced_attention(pipe.unet, query_chunk=-1):
            pass
