"""FaceID pipelines on tiny seeded SD1.5 / SDXL bases (64x64, 2 steps, offline)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import official_layout as O  # noqa: E402
import tiny_faceid as T  # noqa: E402

from faceanchor.adapters.faceid_attention import IPAttnProcessor, LoRAAttnProcessor  # noqa: E402
from faceanchor.errors import Cancelled, EmbeddingMismatchError, InvalidInputError  # noqa: E402
from faceanchor.pipelines.callbacks import step_callback  # noqa: E402
from faceanchor.pipelines.faceid import FaceIDPipeline  # noqa: E402
from faceanchor.pipelines.prompts import encode_prompts  # noqa: E402

METHODS = ["faceid", "faceid-plus", "faceid-plusv2", "faceid-portrait"]
PROMPT, NEG = "a photo of a person", "blurry"


def _gen(seed: int = 0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """One official-layout checkpoint with random weights per method, written by official_layout
    (the official scripts' key naming, not our save) for a scratch base of the same shape."""
    d = tmp_path_factory.mktemp("ckpt")
    unet = T.build_sd15(d).unet
    return {
        m: O.write_bin(O.faceid_checkpoint(unet, m, id_dim=T.ID_DIM, clip_dim=48, seed=10 + i, std=0.05), d / f"{m}.bin")
        for i, m in enumerate(METHODS)
    }


@pytest.fixture(scope="module")
def fp(tmp_path_factory):
    return FaceIDPipeline(T.build_sd15(tmp_path_factory.mktemp("base")), image_encoder=T.build_clip_vision())


def _run(fp: FaceIDPipeline, n_refs: int = 1, seeds=(0,), **kw):
    args = dict(
        face_image=T.face_crop(), prompt=PROMPT, negative_prompt=NEG, num_images=len(seeds), num_inference_steps=2,
        guidance_scale=5.0, width=64, height=64, generator=[_gen(s) for s in seeds], output_type="np",
    )
    args.update(kw)
    return np.stack(fp.generate(T.embedding(n=n_refs), **args))


def _plain(pipe, seeds=(0,)):
    out = pipe(
        prompt=PROMPT, negative_prompt=NEG, num_inference_steps=2, guidance_scale=5.0, width=64, height=64,
        num_images_per_prompt=len(seeds), generator=[_gen(s) for s in seeds], output_type="np",
    )
    return np.asarray(out.images)


def _load(fp, ckpts, m):
    return fp.load(m, ckpts[m], required_space=None)


@pytest.mark.parametrize("method", METHODS)
def test_zero_scales_equal_the_plain_base_and_nonzero_changes_it(fp, ckpts, method):
    fp.unload()
    plain = _plain(fp.pipe)
    _load(fp, ckpts, method)
    zero = _run(fp, scale=0.0, lora_scale=0.0)
    np.testing.assert_allclose(zero, plain, atol=1e-5)
    with_id = _run(fp, scale=1.0, lora_scale=0.0)
    assert np.abs(with_id - plain).mean() > 1e-4
    if method != "faceid-portrait":  # Portrait has no LoRA
        lora_only = _run(fp, scale=0.0, lora_scale=1.0)
        assert np.abs(lora_only - plain).mean() > 1e-4
    fp.unload()


def test_seeds_reproduce_and_batches_equal_single_images(fp, ckpts):
    _load(fp, ckpts, "faceid")
    a = _run(fp, seeds=(3,))
    b = _run(fp, seeds=(3,))
    np.testing.assert_array_equal(a, b)
    batch = _run(fp, seeds=(3, 4))
    assert batch.shape == (2, 64, 64, 3)
    np.testing.assert_allclose(batch[0], a[0], atol=1e-4)
    np.testing.assert_allclose(batch[1], _run(fp, seeds=(4,))[0], atol=1e-4)
    assert np.abs(batch[0] - batch[1]).mean() > 1e-3
    pil = fp.generate(T.embedding(), prompt=PROMPT, num_images=1, num_inference_steps=2, width=64, height=64,
                      generator=_gen(0))
    assert pil[0].size == (64, 64) and pil[0].mode == "RGB"
    fp.unload()


def test_s_scale_changes_only_the_plusv2_shortcut_path(fp, ckpts):
    for method, changes in (("faceid", False), ("faceid-plus", False), ("faceid-plusv2", True), ("faceid-portrait", False)):
        _load(fp, ckpts, method)
        n = 2 if method == "faceid-portrait" else 1
        a, b = _run(fp, n_refs=n, s_scale=0.0), _run(fp, n_refs=n, s_scale=2.0)
        if changes:
            assert np.abs(a - b).mean() > 1e-4, method
        else:
            np.testing.assert_array_equal(a, b)
    fp.unload()


def test_portrait_with_one_and_five_references(fp, ckpts):
    _load(fp, ckpts, "faceid-portrait")
    one, five = _run(fp, n_refs=1), _run(fp, n_refs=5)
    assert np.isfinite(five).all() and np.abs(one - five).mean() > 1e-4
    assert all(p.num_tokens == 80 for p in fp.adapter.processors.values() if isinstance(p, IPAttnProcessor))
    with pytest.raises(InvalidInputError, match="at most 5"):
        _run(fp, n_refs=6)
    fp.unload()


def test_errors_wrong_dimension_space_missing_crop(fp, ckpts):
    _load(fp, ckpts, "faceid")
    with pytest.raises(EmbeddingMismatchError, match="size 512"):
        fp.generate(torch.zeros(1, 128), num_inference_steps=2, width=64, height=64)
    fp.load("faceid", ckpts["faceid"])  # official weights: buffalo_l only
    with pytest.raises(EmbeddingMismatchError, match="buffalo_l"):
        fp.generate(T.embedding(), embedding_space="dlib", num_inference_steps=2, width=64, height=64)
    _load(fp, ckpts, "faceid-plusv2")
    with pytest.raises(InvalidInputError, match="aligned face crop"):
        fp.generate(T.embedding(), num_inference_steps=2, width=64, height=64)
    fp.unload()
    with pytest.raises(InvalidInputError, match="no FaceID method is loaded"):
        fp.generate(T.embedding())
    with pytest.raises(InvalidInputError, match="needs a CLIP image encoder"):
        FaceIDPipeline(fp.pipe).load("faceid-plus")


def test_step_callback_reports_progress_and_cancels_between_steps(fp, ckpts, monkeypatch):
    _load(fp, ckpts, "faceid")
    steps = []
    _run(fp, callback_on_step_end=step_callback(on_step=lambda i, n: steps.append((i, n))))
    assert steps == [(1, 2), (2, 2)]
    calls = []
    forward = fp.pipe.unet.forward
    monkeypatch.setattr(fp.pipe.unet, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    seen = []
    with pytest.raises(Cancelled, match="after step 2 of 5"):
        _run(fp, num_inference_steps=5,
             callback_on_step_end=step_callback(on_step=lambda i, n: seen.append((i, n)), cancel=lambda: len(seen) >= 2))
    assert seen == [(1, 5), (2, 5)]
    assert len(calls) == 2  # the diffusers loop made no UNet call after the step that cancelled
    fp.unload()


def test_callback_on_step_end_replaces_latents(fp, ckpts):
    _load(fp, ckpts, "faceid")
    base = torch.stack(fp.generate(T.embedding(), prompt=PROMPT, num_inference_steps=3, width=64, height=64,
                                   generator=_gen(0), output_type="latent"))
    out = torch.stack(fp.generate(
        T.embedding(), prompt=PROMPT, num_inference_steps=3, width=64, height=64, generator=_gen(0), output_type="latent",
        callback_on_step_end=lambda p, i, t, k: {"latents": torch.full_like(k["latents"], 0.25)} if i == 2 else {},
    ))
    assert torch.equal(out, torch.full_like(base, 0.25))
    halved = torch.stack(fp.generate(
        T.embedding(), prompt=PROMPT, num_inference_steps=3, width=64, height=64, generator=_gen(0), output_type="latent",
        callback_on_step_end=lambda p, i, t, k: {"latents": k["latents"] * 0.5} if i == 0 else {},
    ))
    assert (halved - base).abs().max() > 1e-3
    fp.unload()


def test_attention_slicing_is_refused_and_replaced_processors_are_caught(fp, ckpts):
    adapter = _load(fp, ckpts, "faceid")
    image = _run(fp)
    before = dict(fp.pipe.unet.attn_processors)
    for switch in (fp.enable_attention_slicing, fp.enable_xformers_memory_efficient_attention):
        with pytest.raises(InvalidInputError, match="FaceIDPipeline does not support"):
            switch()
    fp.disable_attention_slicing()
    after = fp.pipe.unet.attn_processors
    assert all(after[k] is before[k] for k in before) and all(after[k] is p for k, p in adapter.processors.items())
    np.testing.assert_array_equal(_run(fp), image)
    fp.pipe.enable_attention_slicing()  # diffusers' own switch on the wrapped pipe replaces every processor...
    try:
        with pytest.raises(InvalidInputError, match="no longer installed"):  # ...which generate() catches
            _run(fp)
    finally:
        fp.unload()  # puts back the processors from before the adapter
    _load(fp, ckpts, "faceid")
    np.testing.assert_array_equal(_run(fp), image)
    fp.unload()


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_precomputed_prompt_embeds_equal_the_prompt_strings(tmp_path, family):
    pipe = T.build_sd15(tmp_path) if family == "sd15" else T.build_sdxl(tmp_path)
    fx = FaceIDPipeline(pipe)
    fx.load("faceid")
    fx.adapter.randomize(seed=3, std=0.05)
    kw = dict(num_images=2, num_inference_steps=2, guidance_scale=5.0, width=64, height=64, output_type="np")
    ref = np.stack(fx.generate(T.embedding(), prompt=PROMPT, negative_prompt=NEG, generator=[_gen(0), _gen(1)], **kw))
    embeds = encode_prompts(pipe, PROMPT, NEG, device="cpu")
    names = ["prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"]
    got = np.stack(fx.generate(T.embedding(), generator=[_gen(0), _gen(1)], **dict(zip(names, embeds)), **kw))
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(InvalidInputError, match="not both"):
        fx.generate(T.embedding(), prompt=PROMPT, prompt_embeds=embeds[0], **kw)
    if family == "sdxl":
        with pytest.raises(InvalidInputError, match="pooled_prompt_embeds"):
            fx.generate(T.embedding(), prompt_embeds=embeds[0], **kw)
    else:
        with pytest.raises(InvalidInputError, match="SDXL's"):
            fx.generate(T.embedding(), prompt_embeds=embeds[0], pooled_prompt_embeds=embeds[1][:, 0], **kw)
    fx.unload()


def test_unconditional_branch_reaches_the_unet(fp, ckpts):
    """With CFG the UNet sees [negative; positive]: their last tokens are the uncond / cond identity tokens."""
    adapter = _load(fp, ckpts, "faceid-plusv2")
    seen = []
    hook = fp.pipe.unet.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["encoder_hidden_states"].clone()), with_kwargs=True
    )
    try:
        _run(fp, s_scale=0.7)
    finally:
        hook.remove()
    states = seen[0]
    assert states.shape[0] == 2 and states.shape[1] == 16 + 4
    # hand computation of the reference's get_image_embeds
    pixels = fp.image_processor(images=T.face_crop(), return_tensors="pt").pixel_values
    enc = fp.image_encoder
    clip_c = enc(pixels, output_hidden_states=True).hidden_states[-2]
    clip_u = enc(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    with torch.no_grad():
        cond = adapter.image_proj(T.embedding(), clip_c, shortcut=True, scale=0.7)
        uncond = adapter.image_proj(torch.zeros(1, T.ID_DIM), clip_u, shortcut=True, scale=0.7)
    torch.testing.assert_close(states[1, -4:], cond[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(states[0, -4:], uncond[0], rtol=1e-5, atol=1e-5)
    # the zero pixel tensor is not a black image (which normalises to -mean/std)
    black = fp.image_processor(images=T.face_crop() .point(lambda _: 0), return_tensors="pt").pixel_values
    assert black.abs().min() > 0.5
    # text part equals the pipeline's own prompt encoding
    text, neg = fp.pipe.encode_prompt(PROMPT, "cpu", 1, True, NEG)
    torch.testing.assert_close(states[1, :16], text[0])
    torch.testing.assert_close(states[0, :16], neg[0])
    fp.unload()


def test_switching_methods_leaves_nothing_behind(tmp_path, ckpts):
    enc = T.build_clip_vision()
    fresh = FaceIDPipeline(T.build_sd15(tmp_path / "a"), image_encoder=enc)
    fresh_plain = _plain(fresh.pipe)
    _load(fresh, ckpts, "faceid")
    expected = _run(fresh)

    shared = FaceIDPipeline(T.build_sd15(tmp_path / "b"), image_encoder=enc)
    base_procs = dict(shared.pipe.unet.attn_processors)
    base_weights = {k: v.clone() for k, v in shared.pipe.unet.state_dict().items()}
    for m in ("faceid-plusv2", "faceid-portrait", "faceid-plus"):
        _load(shared, ckpts, m)
        _run(shared, n_refs=3 if m == "faceid-portrait" else 1)
    _load(shared, ckpts, "faceid")
    np.testing.assert_array_equal(_run(shared), expected)
    shared.unload()
    procs = shared.pipe.unet.attn_processors
    assert all(procs[k] is base_procs[k] for k in base_procs)
    assert not any(isinstance(p, (LoRAAttnProcessor, IPAttnProcessor)) for p in procs.values())
    sd = shared.pipe.unet.state_dict()
    assert sd.keys() == base_weights.keys() and all(torch.equal(sd[k], v) for k, v in base_weights.items())
    np.testing.assert_array_equal(_plain(shared.pipe), fresh_plain)


def test_sdxl_variants_on_one_base_zero_scale_equals_plain_identity_changes_it(tmp_path):
    pipe = T.build_sdxl(tmp_path)
    fx = FaceIDPipeline(pipe, image_encoder=T.build_clip_vision())
    kw = dict(prompt=PROMPT, negative_prompt=NEG, num_inference_steps=2, guidance_scale=5.0, width=64, height=64,
              output_type="np")
    plain = np.asarray(pipe(generator=_gen(0), **kw).images)
    for i, method in enumerate(["faceid", "faceid-plusv2", "faceid-portrait"]):
        fx.load(method)
        fx.adapter.randomize(seed=5 + i, std=0.05)
        n = 5 if method == "faceid-portrait" else 1
        zero = np.stack(fx.generate(T.embedding(n=n), face_image=T.face_crop(), generator=_gen(0), scale=0.0,
                                    lora_scale=0.0, **kw))
        np.testing.assert_allclose(zero, plain, atol=1e-5)
        full = np.stack(fx.generate(T.embedding(n=n), face_image=T.face_crop(), generator=_gen(0), scale=1.0,
                                    lora_scale=1.0, s_scale=1.0, **kw))
        assert np.abs(full - plain).mean() > 1e-4, method
    fx.unload()
    np.testing.assert_array_equal(np.asarray(pipe(generator=_gen(0), **kw).images), plain)


def test_clip_encoder_loads_from_a_local_folder_and_a_missing_one_is_clear(tmp_path):
    from faceanchor.errors import ModelNotFoundError
    from faceanchor.pipelines.faceid import clip_image_processor_for, load_clip_image_encoder

    enc = T.build_clip_vision()
    enc.save_pretrained(tmp_path / "clip")
    again = load_clip_image_encoder(tmp_path / "clip")
    assert torch.equal(again.vision_model.embeddings.patch_embedding.weight, enc.vision_model.embeddings.patch_embedding.weight)
    proc = clip_image_processor_for(again)
    assert proc(images=T.face_crop(size=50), return_tensors="pt").pixel_values.shape == (1, 3, 32, 32)
    with pytest.raises(ModelNotFoundError, match="could not be loaded"):
        load_clip_image_encoder(tmp_path / "absent", local_files_only=True)


def test_ensure_reuses_adapters_and_switching_back_gives_the_same_images(fp, ckpts):
    fp.unload()
    a = fp.ensure("faceid", ckpts["faceid"], required_space=None)
    first = _run(fp)
    assert fp.ensure("faceid", ckpts["faceid"], required_space=None) is a
    b = fp.ensure("faceid-portrait", ckpts["faceid-portrait"], required_space=None)
    assert b is not a and fp.method == "faceid-portrait"
    assert fp.ensure("faceid", ckpts["faceid"], required_space=None) is a and a.installed and not b.installed
    np.testing.assert_array_equal(_run(fp), first)
    fp.unload()
    fp.clear_cache()
