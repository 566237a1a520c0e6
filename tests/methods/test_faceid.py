"""The FaceID family end to end: photo → face pack → embedding → pipeline, equal to the official
calling convention (``faces[0].normed_embedding`` into the adapter) on the same tiny weights.

The face pack is InsightFace-shaped (real SCRFD + a tiny ArcFace ONNX, see conftest): its raw
embeddings are far from unit length, so feeding the raw embedding (the bug this guards) gives
another image and these tests fail.
"""

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
OBAMA2 = small_copy("obama2.jpg")
BASE = dict(face_image=OBAMA, prompt="a portrait", negative_prompt="blurry", width=64, height=64, num_inference_steps=2, seed=11)


@pytest.fixture
def engine(packs_settings):
    return Engine(packs_settings, weights="tiny", face_pack="buffalo_l")


def official(engine, method, faces_embeds, crop=None, s_scale=1.0, seed=11):
    """The reference's calling convention on the engine's own loaded weights: ``normed_embedding`` in."""
    loaded = next(v for k, v in engine._loaded.items() if k[0] == "faceid")
    fp = loaded.pipe
    assert fp.adapter.variant.method == engine.method(method).variant
    latents = fp.generate(torch.from_numpy(np.asarray(faces_embeds)), face_image=crop, prompt="a portrait",
                          negative_prompt="blurry", num_images=1, num_inference_steps=2, guidance_scale=5.0, width=64,
                          height=64, generator=[torch.Generator().manual_seed(seed)], scale=0.8, s_scale=s_scale,
                          output_type="latent")
    return np.asarray(decode_latents(fp.pipe, latents)[0])


@pytest.mark.parametrize("method", ["faceid", "faceid-plusv2", "faceid-portrait"])
def test_engine_equals_the_official_calling_convention(engine, method, insightface_faces):
    an = engine.analyzer("buffalo_l")
    faces = insightface_faces("buffalo_l", OBAMA)  # InsightFace itself, as the official README calls it
    assert len(faces) == 1
    raw = faces[0].embedding
    assert abs(float(np.linalg.norm(raw)) - 1.0) > 0.05, "the test pack must give non-unit raw embeddings"
    res = engine.generate(GenerationRequest(method=method, **BASE))
    ours = np.asarray(res.images[0].image)
    crop = None
    if method == "faceid-plusv2":
        from faceanchor.face.align import clip_face_crop

        crop = clip_face_crop(an.load(OBAMA), faces[0].kps)  # the README's face_align.norm_crop(image, kps, 224)
    embeds = faces[0].normed_embedding[None] if method == "faceid-portrait" else faces[0].normed_embedding
    ref = official(engine, method, embeds, crop)
    assert np.array_equal(ours, ref), f"{method}: max diff {np.abs(ours.astype(int) - ref).max()}"
    # and the raw embedding would have given another image: the check can fail
    wrong = official(engine, method, raw[None] if method == "faceid-portrait" else raw, crop)
    assert not np.array_equal(ours, wrong)
    assert res.params["embedding_normalised"] is True


def test_portrait_takes_several_precomputed_embeddings(engine):
    an = engine.analyzer("buffalo_l")
    e1 = an.get_face(an.load(OBAMA)).embedding
    e2 = an.get_face(an.load(OBAMA2)).embedding
    from_photos = engine.generate(GenerationRequest(method="faceid-portrait", face_images=[OBAMA2], **BASE))
    stored = engine.generate(GenerationRequest(method="faceid-portrait", face_embeddings=[e1.tolist(), e2.tolist()],
                                               face_embedding_space="buffalo_l", **{k: v for k, v in BASE.items() if k != "face_image"}))
    assert np.array_equal(np.asarray(from_photos.images[0].image), np.asarray(stored.images[0].image))
    ident = engine.identity(GenerationRequest(method="faceid-portrait", face_embeddings=[e1.tolist(), e2.tolist()]))
    assert ident.embedding.shape == (2, e1.shape[0]) and np.allclose(np.linalg.norm(ident.embedding, axis=1), 1.0, atol=1e-6)


def test_plus_runs_from_a_precomputed_embedding_and_a_face_crop(engine):
    import io

    from faceanchor.face.align import clip_face_crop

    an = engine.analyzer("buffalo_l")
    img = an.load(OBAMA)
    face = an.get_face(img)
    crop = clip_face_crop(img, face.kps)
    buf = io.BytesIO()
    crop.save(buf, "PNG")
    from_photo = engine.generate(GenerationRequest(method="faceid-plusv2", **BASE))
    fields = {k: v for k, v in BASE.items() if k != "face_image"}
    stored = engine.generate(GenerationRequest(method="faceid-plusv2", face_embedding=face.embedding.tolist(),
                                               face_crop=buf.getvalue(), **fields))
    assert np.array_equal(np.asarray(from_photo.images[0].image), np.asarray(stored.images[0].image))
    with pytest.raises(InvalidInputError, match="face_crop"):
        engine.generate(GenerationRequest(method="faceid-plusv2", face_embedding=face.embedding.tolist(), **fields))


def test_plain_faceid_loads_no_clip_encoder(engine):
    res = engine.generate(GenerationRequest(method="faceid", **BASE))
    loaded = next(v for k, v in engine._loaded.items() if k[0] == "faceid")
    assert loaded.pipe.image_encoder is None and "image_encoder" not in res.models
    res = engine.generate(GenerationRequest(method="faceid-plusv2", **BASE))
    assert loaded.pipe.image_encoder is not None and res.models["image_encoder"] == "tiny:clip-vit-h"


def test_fields_faceid_does_not_use_are_refused(engine):
    for field, value in (("identity_strength", 0.4), ("pose_image", OBAMA2), ("controlnet_selection", ["canny"]),
                         ("control_guidance_start", 0.2), ("enhance_face_region", False), ("face_detail", True)):
        with pytest.raises(InvalidInputError, match=f"faceid does not use {field}"):
            engine.generate(GenerationRequest(method="faceid", **{**BASE, field: value}))
    with pytest.raises(InvalidInputError, match="faceid-portrait does not use lora_scale"):
        engine.generate(GenerationRequest(method="faceid-portrait", **{**BASE, "lora_scale": 0.5}))


def test_cancel_stops_between_denoising_steps(engine):
    from cancel_check import assert_cancels_between_steps

    request = GenerationRequest(method="faceid", **{**BASE, "num_inference_steps": 1})
    engine.generate(request)  # load
    loaded = next(v for k, v in engine._loaded.items() if k[0] == "faceid")
    assert_cancels_between_steps(engine, request, loaded.pipe.pipe.unet)
