"""InstantID end to end: photo → antelopev2-shaped pack → the **raw** embedding → pipeline, equal to
the official calling convention (``faces[0].embedding``) on the same weights; the real-weights path
from explicit local files (a diffusers base folder, an IdentityNet folder, an ``ip-adapter.bin``
written in the official layout by ``tests/official_layout.py``); cancellation between steps."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import small_copy  # noqa: E402

from faceanchor.engine import Engine  # noqa: E402
from faceanchor.errors import Cancelled, InvalidInputError  # noqa: E402
from faceanchor.pipelines.decode import decode_latents  # noqa: E402
from faceanchor.types import GenerationRequest  # noqa: E402

OBAMA = small_copy("obama.jpg")
BASE = dict(face_image=OBAMA, prompt="a portrait", negative_prompt="blurry", width=64, height=64, num_inference_steps=2, seed=3)


def pipeline_with(engine, request, embedding):
    """The pipeline called as the official demo calls it, with ``embedding`` and the engine's control images."""
    method = engine.method("instantid")
    loaded = next(v for k, v in engine._loaded.items() if k[0] == "instantid")
    ident = engine.identity(request)
    _, _, kps_image, mask, _ = method.controls(request, ident, engine._tools(method))
    latents = loaded.pipe(
        "a portrait", torch.from_numpy(np.asarray(embedding, np.float32)), kps_image, negative_prompt="blurry", face_mask=mask,
        height=64, width=64, num_inference_steps=2, guidance_scale=5.0, generator=[torch.Generator().manual_seed(3)],
        identity_scale=0.8, adapter_scale=0.8, output_type="latent",
    ).images
    return np.asarray(decode_latents(loaded.pipe, latents)[0])


def test_engine_feeds_the_raw_embedding_as_the_official_demo(packs_settings, insightface_faces):
    engine = Engine(packs_settings, weights="tiny", face_pack="antelopev2")
    # the official demo: face_info = sorted(app.get(cv2 image), key=box area)[-1]; face_info["embedding"]
    face = sorted(insightface_faces("antelopev2", OBAMA), key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))[-1]
    assert abs(float(np.linalg.norm(face.embedding)) - 1.0) > 0.05
    request = GenerationRequest(**BASE)
    res = engine.generate(request)
    ours = np.asarray(res.images[0].image)
    assert np.array_equal(ours, pipeline_with(engine, request, face.embedding))
    assert not np.array_equal(ours, pipeline_with(engine, request, face.normed_embedding))  # the check can fail
    assert res.params["embedding_normalised"] is False and res.params["face_space"] == "antelopev2"


def _local_checkpoints(root: Path, embedding_dim: int) -> tuple[Path, Path, Path]:
    """A tiny SDXL diffusers folder, an IdentityNet folder and an official-layout ip-adapter.bin."""
    import diffusers
    from official_layout import instantid_checkpoint, write_bin

    from faceanchor.models.dummy import build_components, build_controlnet

    comps = build_components("sdxl", "tiny", seed=0)
    base = root / "tiny-sdxl"
    diffusers.StableDiffusionXLPipeline(**{k: comps[k] for k in (
        "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")}).save_pretrained(base)
    identitynet = root / "InstantID" / "ControlNetModel"
    build_controlnet("sdxl", "tiny", seed=1).save_pretrained(identitynet)
    ckpt = instantid_checkpoint(comps["unet"], embedding_dim=embedding_dim, dim=64, depth=1, dim_head=64, heads=1, seed=9)
    adapter = write_bin(ckpt, root / "InstantID" / "ip-adapter.bin")
    return base, identitynet.parent, adapter


def test_real_weights_from_explicit_local_paths(packs_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base, identitynet, adapter = _local_checkpoints(tmp_path / "models", 512)
    engine = Engine(packs_settings, weights="real")  # the method's own pack: antelopev2
    request = GenerationRequest(**BASE, model_name=str(base), identitynet_model=str(identitynet), adapter_model=str(adapter))
    res = engine.generate(request)
    assert res.models == {"base": str(base), "identitynet": str(identitynet / "ControlNetModel"), "adapter": str(adapter)}
    assert res.params["face_space"] == "antelopev2" and res.images[0].image.size == (64, 64)
    # the adapter file really is what conditions the image: another file, another image
    from official_layout import instantid_checkpoint, write_bin

    unet = next(v for k, v in engine._loaded.items() if k[0] == "instantid").pipe.unet
    other = write_bin(instantid_checkpoint(unet, embedding_dim=512, dim=64, depth=1, dim_head=64, heads=1, seed=10),
                      tmp_path / "other" / "ip-adapter.bin")
    res2 = engine.generate(request.model_copy(update={"adapter_model": str(other)}))
    assert not np.array_equal(np.asarray(res.images[0].image), np.asarray(res2.images[0].image))
    assert res2.models["adapter"] == str(other)


def test_instantid_refuses_what_it_does_not_use(packs_settings):
    engine = Engine(packs_settings, weights="tiny", face_pack="antelopev2")
    for field, value in (("lora_scale", 0.5), ("s_scale", 0.2), ("face_crop", b"x")):
        with pytest.raises(InvalidInputError, match=f"instantid does not use {field}"):
            engine.generate(GenerationRequest(**{**BASE, field: value}))


def test_model_name_under_random_weights_is_a_warning_not_a_claim(packs_settings):
    engine = Engine(packs_settings, weights="tiny", face_pack="antelopev2")
    res = engine.generate(GenerationRequest(**BASE, model_name="wangqixun/YamerMIX_v8"))
    assert res.params["model_name"] is None and res.models["base"] == "tiny:sdxl"
    assert any("model_name" in w and "not used" in w for w in res.warnings)


def test_cancel_stops_between_denoising_steps(packs_settings):
    from cancel_check import assert_cancels_between_steps

    engine = Engine(packs_settings, weights="tiny", face_pack="antelopev2")
    request = GenerationRequest(**{**BASE, "num_inference_steps": 1})
    engine.generate(request)  # load
    assert_cancels_between_steps(engine, request, next(v for k, v in engine._loaded.items() if k[0] == "instantid").pipe.unet)


@pytest.mark.parametrize("method", ["instantid", "faceid"])
def test_weighted_prompts_through_every_method(packs_settings, method):
    engine = Engine(packs_settings, weights="tiny", face_pack="antelopev2" if method == "instantid" else "buffalo_l")
    fields = {**BASE, "method": method, "prompt": "a portrait of a man"}
    plain = engine.generate(GenerationRequest(**fields))
    same = engine.generate(GenerationRequest(**fields, prompt_weighting="compel"))  # no weights: plain's embeddings
    weighted = engine.generate(GenerationRequest(**{**fields, "prompt": "a portrait of a (man:1.6)"}, prompt_weighting="compel"))
    px = lambda r: np.asarray(r.images[0].image)  # noqa: E731
    assert np.array_equal(px(plain), px(same))
    assert not np.array_equal(px(plain), px(weighted))
    assert weighted.params["prompt_weighting"] == "compel" and plain.params["prompt_weighting"] == "plain"
