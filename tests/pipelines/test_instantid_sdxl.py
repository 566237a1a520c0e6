"""InstantID SDXL pipeline on tiny seeded components (64x64, 2 steps)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_sdxl import EMBED_DIM, tiny_controlnet, tiny_instantid_pipeline  # noqa: E402

from faceanchor.adapters.attention import IPAttnProcessor  # noqa: E402
from faceanchor.errors import Cancelled, EmbeddingMismatchError, InvalidInputError  # noqa: E402
from faceanchor.pipelines.callbacks import step_callback  # noqa: E402
from faceanchor.pipelines.instantid_sdxl import ExtraControl, InstantIDSDXLPipeline, face_box_mask, mask_to_tensor  # noqa: E402

SIZE = 64
PROMPT = "a photo of a man"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    return tiny_instantid_pipeline(tmp_path_factory.mktemp("tok"), SIZE)


def _run(pipe, kps, emb, seed=0, **kw):
    kw.setdefault("num_inference_steps", 2)
    kw.setdefault("guidance_scale", 5.0)
    n = kw.get("num_images", 1)
    gen = kw.pop("generator", [torch.Generator().manual_seed(seed + i) for i in range(n)])
    kw.setdefault("output_type", "np")
    return pipe(PROMPT, emb, kps, generator=gen, **kw).images


def test_zero_scales_equal_plain_sdxl(parts):
    from diffusers import StableDiffusionXLPipeline

    comps, pipe, kps, emb = parts
    plain = StableDiffusionXLPipeline(**{k: v for k, v in comps.items() if k != "controlnet"}, add_watermarker=False)
    plain.set_progress_bar_config(disable=True)
    adapter = pipe.identity_adapter
    adapter.unload()  # the plain pipeline shares the UNet: run it with the original processors
    try:
        ref = plain(PROMPT, height=SIZE, width=SIZE, num_inference_steps=2, guidance_scale=5.0,
                    generator=torch.Generator().manual_seed(0), output_type="np").images
    finally:
        adapter.load(pipe.unet)
    got = _run(pipe, kps, emb, adapter_scale=0.0, identity_scale=0.0)
    assert np.abs(got - ref).max() < 1e-6
    changed_ip = _run(pipe, kps, emb, adapter_scale=0.8, identity_scale=0.0)
    changed_net = _run(pipe, kps, emb, adapter_scale=0.0, identity_scale=0.8)
    pipe.set_ip_adapter_scale(0.8)
    assert np.abs(changed_ip - ref).max() > 1e-3
    assert np.abs(changed_net - ref).max() > 1e-3


def test_same_seed_same_image_and_batches(parts):
    _, pipe, kps, emb = parts
    a = _run(pipe, kps, emb, seed=0)
    assert np.array_equal(a, _run(pipe, kps, emb, seed=0))
    batch = _run(pipe, kps, emb, seed=0, num_images=4)
    assert batch.shape == (4, SIZE, SIZE, 3)
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(batch[i] - batch[j]).max() > 1e-3
    # image i of the batch is the single-image result of generator i (repeats are per image)
    assert np.abs(batch[0] - a[0]).max() < 1e-4
    assert np.abs(batch[3] - _run(pipe, kps, emb, seed=3)[0]).max() < 1e-4
    # per-image embeddings: image 0 keeps the shared identity, image 1 gets another one
    two_ids = _run(pipe, kps, torch.stack([emb, -emb]), seed=0, num_images=2)
    assert np.abs(two_ids[0] - batch[0]).max() < 1e-4 and np.abs(two_ids[1] - batch[1]).max() > 1e-3
    # one generator for the whole batch (the official calling convention) works too
    assert _run(pipe, kps, emb, num_images=2, generator=torch.Generator().manual_seed(0)).shape[0] == 2


def _capture_unet_residuals(pipe):
    seen = []

    def hook(module, args, kwargs):
        seen.append(([d.clone() for d in kwargs["down_block_additional_residuals"]], kwargs["mid_block_additional_residual"].clone()))
        region = [p.region_mask for p in pipe.unet.attn_processors.values() if isinstance(p, IPAttnProcessor)]
        seen[-1] += (region,)

    return seen, pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)


def test_enhance_face_region_zeroes_identitynet_outside_the_face(parts):
    _, pipe, kps, emb = parts
    mask = face_box_mask((8, 16, 40, 48), SIZE, SIZE)  # face box, edges on multiples of 8 px
    seen, handle = _capture_unet_residuals(pipe)
    try:
        masked = _run(pipe, kps, emb, face_mask=PIL.Image.fromarray(mask))
    finally:
        handle.remove()
    box = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    box[16:48, 8:40] = True
    for downs, mid, region in seen:
        for r in downs + [mid]:
            s = SIZE // r.shape[-1]
            inside = box[::s, ::s]
            assert torch.equal(r[..., ~inside], torch.zeros_like(r[..., ~inside]))
            assert r[..., inside].abs().sum() > 0
        assert all(m is not None and m.shape == (SIZE, SIZE) and float(m.sum()) == 32 * 32 for m in region)
    # the mask is cleared after the call, and it changes the image
    assert all(p.region_mask is None for p in pipe.unet.attn_processors.values() if isinstance(p, IPAttnProcessor))
    assert np.abs(masked - _run(pipe, kps, emb)).max() > 1e-3


def test_extra_controlnets(parts):
    _, pipe, kps, emb = parts
    pose = PIL.Image.fromarray((np.random.RandomState(5).rand(SIZE, SIZE, 3) * 255).astype(np.uint8))
    extra = tiny_controlnet(seed=7)
    base = _run(pipe, kps, emb)
    off = _run(pipe, kps, emb, extra_controls=[ExtraControl(extra, pose, scale=0.0)])
    on = _run(pipe, kps, emb, extra_controls=[ExtraControl(extra, pose, scale=0.4)])
    assert np.abs(off - base).max() < 1e-6
    assert np.abs(on[0] - base[0]).max() > 1e-3


def test_control_window_and_negative_noise(parts):
    _, pipe, kps, emb = parts
    base = _run(pipe, kps, emb)
    late = _run(pipe, kps, emb, control_guidance_start=0.5)
    assert np.abs(late - base).max() > 1e-3
    noisy = _run(pipe, kps, emb, negative_embedding_noise=1.0)
    assert np.abs(noisy - base).max() > 1e-3
    assert np.array_equal(noisy, _run(pipe, kps, emb, negative_embedding_noise=1.0))


def test_lcm_scheduler_with_and_without_cfg(parts):
    from diffusers import LCMScheduler

    _, pipe, kps, emb = parts
    original = pipe.scheduler
    pipe.scheduler = LCMScheduler.from_config(original.config)
    batches = []
    handle = pipe.unet.register_forward_pre_hook(lambda m, a, k: batches.append(a[0].shape[0]), with_kwargs=True)
    try:
        no_cfg = _run(pipe, kps, emb, guidance_scale=1.0, num_images=2)
        cfg = _run(pipe, kps, emb, guidance_scale=1.5)
    finally:
        handle.remove()
        pipe.scheduler = original
    assert batches == [2, 2, 2, 2]
    assert np.isfinite(no_cfg).all() and np.isfinite(cfg).all() and no_cfg.shape == (2, SIZE, SIZE, 3)


def _count_unet_calls(monkeypatch, unet):
    calls = []
    forward = unet.forward

    def counting(*args, **kwargs):
        calls.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", counting)
    return calls


def test_step_callback_reports_progress_and_cancels_between_steps(parts, monkeypatch):
    _, pipe, kps, emb = parts
    steps = []
    _run(pipe, kps, emb, num_inference_steps=3, callback_on_step_end=step_callback(on_step=lambda i, n: steps.append((i, n))))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    calls = _count_unet_calls(monkeypatch, pipe.unet)
    seen = []
    with pytest.raises(Cancelled, match="after step 2 of 5"):
        _run(pipe, kps, emb, num_inference_steps=5,
             callback_on_step_end=step_callback(on_step=lambda i, n: seen.append((i, n)), cancel=lambda: len(seen) >= 2))
    assert seen == [(1, 5), (2, 5)]
    assert len(calls) == 2  # no UNet call after the step that cancelled


def test_callback_on_step_end_replaces_tensors(parts):
    _, pipe, kps, emb = parts
    kw = dict(num_inference_steps=3, output_type="latent")
    base = _run(pipe, kps, emb, **kw)
    received = []

    def last_to_constant(p, i, t, tensors):
        received.append((i, sorted(tensors)))
        return {"latents": torch.full_like(tensors["latents"], 0.25)} if i == 2 else {}

    out = _run(pipe, kps, emb, callback_on_step_end=last_to_constant, **kw)
    assert torch.equal(out, torch.full_like(base, 0.25))
    assert received == [(0, ["latents"]), (1, ["latents"]), (2, ["latents"])]
    # a change after the first step carries into the next ones
    halved = _run(pipe, kps, emb, callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"] * 0.5} if i == 0 else {}, **kw)
    assert (halved - base).abs().max() > 1e-3
    # a callback returning its tensors unchanged changes nothing
    same = _run(pipe, kps, emb, callback_on_step_end=lambda p, i, t, k: dict(k),
                callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "id_tokens", "add_time_ids"], **kw)
    assert torch.equal(same, base)
    # replacing the identity tokens (CFG-batched, as the UNet sees them) takes effect too
    no_id = _run(pipe, kps, emb, callback_on_step_end=lambda p, i, t, k: {"id_tokens": torch.zeros_like(k["id_tokens"])},
                 callback_on_step_end_tensor_inputs=["id_tokens"], **kw)
    assert (no_id - base).abs().max() > 1e-3
    with pytest.raises(InvalidInputError, match="not available"):
        _run(pipe, kps, emb, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"], **kw)


def test_attention_slicing_is_refused_and_replaced_processors_are_caught(parts):
    _, pipe, kps, emb = parts
    before = dict(pipe.unet.attn_processors)
    image = _run(pipe, kps, emb)
    for switch in (pipe.enable_attention_slicing, pipe.enable_xformers_memory_efficient_attention):
        with pytest.raises(InvalidInputError, match="identity"):
            switch()
    pipe.disable_attention_slicing()  # nothing was sliced: a no-op that keeps the processors
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert np.array_equal(_run(pipe, kps, emb), image)
    # slicing switched on behind the pipeline's back (diffusers' own path) is caught before running
    pipe.unet.set_attention_slice("auto")
    try:
        with pytest.raises(InvalidInputError, match="no longer installed"):
            _run(pipe, kps, emb)
    finally:
        adapter = pipe.identity_adapter
        pipe.unload_instantid_adapter()  # restores the processors from before the adapter (unsliced)
        pipe.load_instantid_adapter(adapter, scale=0.8)
    assert np.array_equal(_run(pipe, kps, emb), image)


def test_precomputed_prompt_embeds_need_the_pooled_ones(parts):
    _, pipe, kps, emb = parts
    pe, npe, pooled, npooled = pipe.encode_prompt(PROMPT, None, "cpu", 1, True, None)
    kw = dict(num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    got = pipe(None, emb, kps, prompt_embeds=pe, negative_prompt_embeds=npe, pooled_prompt_embeds=pooled,
               negative_pooled_prompt_embeds=npooled, **kw).images
    assert np.array_equal(got, _run(pipe, kps, emb))
    with pytest.raises(InvalidInputError, match="pooled_prompt_embeds"):
        pipe(None, emb, kps, prompt_embeds=pe, **kw)
    with pytest.raises(InvalidInputError, match="not both"):
        pipe(PROMPT, emb, kps, prompt_embeds=pe, pooled_prompt_embeds=pooled, **kw)


def test_bad_inputs_are_clear_errors(parts):
    comps, pipe, kps, emb = parts
    with pytest.raises(EmbeddingMismatchError, match="expects 128-D identity embeddings, got 512-D"):
        _run(pipe, kps, torch.randn(512))
    with pytest.raises(InvalidInputError, match="3 rows"):
        _run(pipe, kps, torch.randn(3, EMBED_DIM), num_images=2)
    with pytest.raises(InvalidInputError, match="generators"):
        _run(pipe, kps, emb, num_images=2, generator=[torch.Generator()])
    with pytest.raises(InvalidInputError, match="start < end"):
        _run(pipe, kps, emb, control_guidance_start=0.8, control_guidance_end=0.2)
    with pytest.raises(InvalidInputError, match="multiple of 2"):
        _run(pipe, kps, emb, height=63)
    with pytest.raises(InvalidInputError, match="no InstantID adapter"):
        InstantIDSDXLPipeline(**comps)(PROMPT, emb, kps)


def test_face_box_mask_and_mask_inputs():
    m = face_box_mask((8.7, 16.2, 40.9, 48.0), SIZE, SIZE)
    assert m.shape == (SIZE, SIZE, 3) and m.dtype == np.uint8
    assert m[16:48, 8:40].min() == 255 and m.sum() == 255 * 3 * 32 * 32  # int() truncation like the official demo
    clipped = face_box_mask((-10, -5, 20, 30), SIZE, SIZE)
    assert clipped[:30, :20].min() == 255 and clipped.sum() == 255 * 3 * 30 * 20  # no wrap-around
    t = mask_to_tensor(PIL.Image.fromarray(m), SIZE, SIZE, "cpu", torch.float32)
    assert torch.equal(t, torch.from_numpy(m[:, :, 0]).float() / 255.0)
    assert torch.equal(mask_to_tensor(m[:, :, 0] > 0, SIZE, SIZE, "cpu", torch.float32), t)
    assert mask_to_tensor(m, 32, 32, "cpu", torch.float32).shape == (32, 32)
    with pytest.raises(InvalidInputError):
        mask_to_tensor("mask", SIZE, SIZE, "cpu", torch.float32)


def test_per_image_inputs_of_separate_requests_equal_their_single_calls(parts):
    """One call with a row per request (embedding, keypoint image, face mask, both strengths)
    gives each row what its own call gives (the batched worker's contract)."""
    comps, pipe, kps, emb = parts
    torch.manual_seed(3)
    embs = [emb.reshape(1, -1), torch.randn(1, emb.shape[-1])]
    kpss = [kps, kps.transpose(PIL.Image.FLIP_LEFT_RIGHT)]
    masks = [face_box_mask((8, 8, 40, 48), SIZE, SIZE), face_box_mask((20, 10, 60, 50), SIZE, SIZE)]
    ids, ads = [0.5, 1.1], [1.2, 0.3]
    single = [_run(pipe, kpss[i], embs[i], seed=10 + i, face_mask=masks[i], identity_scale=ids[i], adapter_scale=ads[i])[0]
              for i in range(2)]
    both = _run(pipe, kpss, torch.cat(embs), seed=10, num_images=2, face_mask=masks, identity_scale=ids, adapter_scale=ads)
    for i in range(2):
        assert np.abs(both[i] - single[i]).max() < 1e-4
    assert np.abs(single[0] - single[1]).max() > 1e-2
    assert pipe.identity_adapter.scale == 0.3  # the float scale of the last single call is back
    with pytest.raises(InvalidInputError, match="identity_scale has 3 values for 2 images"):
        _run(pipe, kpss, torch.cat(embs), num_images=2, identity_scale=[0.1, 0.2, 0.3])
    with pytest.raises(InvalidInputError, match="3 face masks for 2 images"):
        _run(pipe, kpss, torch.cat(embs), num_images=2, face_mask=masks + masks[:1])
