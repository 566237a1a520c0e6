"""InfiniteYou end to end on tiny FLUX weights: the facexlib pack, the engine, local folders in the
official layout (real loader), the API and a character."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from official_layout import facexlib_arcface_checkpoint, infiniteyou_projection_checkpoint, write_bin  # noqa: E402
from photos import small_copy  # noqa: E402

from faceanchor.engine import Engine  # noqa: E402
from faceanchor.errors import EmbeddingMismatchError, InvalidInputError, ModelNotFoundError  # noqa: E402
from faceanchor.types import GenerationRequest  # noqa: E402

OBAMA, OBAMA2 = small_copy("obama.jpg"), small_copy("obama2.jpg")
TINY_ARC = dict(stages=((8, 1), (16, 1), (24, 1), (32, 1)), stem=8, emb=512, reduction=4)
BASE = dict(method="infiniteyou", face_image=OBAMA, prompt="a portrait", num_inference_steps=1, seed=4)


@pytest.fixture(scope="module")
def fx_settings(tmp_path_factory, scrfd_model_path):
    """The facexlib pack: antelopev2's SCRFD (the real SCRFD model) + facexlib-layout ArcFace weights."""
    from faceanchor.config import Settings

    tmp = tmp_path_factory.mktemp("infu")
    s = Settings(home=tmp / "home", insightface_root=tmp / "insightface", device="cpu")
    ante = tmp / "insightface" / "models" / "antelopev2"
    ante.mkdir(parents=True)
    shutil.copy(scrfd_model_path, ante / "scrfd_10g_bnkps.onnx")
    (s.models_dir / "facexlib").mkdir(parents=True)
    torch.save(facexlib_arcface_checkpoint(**TINY_ARC), s.models_dir / "facexlib" / "recognition_arcface_ir_se50.pth")
    return s


@pytest.fixture(scope="module")
def engine(fx_settings):
    return Engine(fx_settings, weights="tiny", face_pack="facexlib")


def _px(result):
    return [np.asarray(g.image, dtype=np.float32) / 255 for g in result.images]


def test_generates_in_the_facexlib_space_with_the_method_defaults(engine):
    r = engine.generate(GenerationRequest(**BASE, samples=2))
    assert [g.image.size for g in r.images] == [(64, 64), (64, 64)]  # tiny's native size; 864x1152 for full-size weights
    assert r.params["face_space"] == "facexlib" and r.params["embedding_normalised"] is True
    assert (r.params["guidance_scale"], r.params["identity_strength"], r.params["num_inference_steps"]) == (3.5, 1.0, 1)  # what ran
    assert r.models == {"base": "tiny:flux", "infusenet": "tiny:infiniteyou-aes_stage2(512-D)"}
    assert [g.seed for g in r.images] == [4, 5] and not np.array_equal(*_px(r))
    assert {"face", "load", "controls", "denoise", "decode", "score"} <= set(r.timings)
    again = engine.generate(GenerationRequest(**BASE, samples=1))
    assert np.abs(_px(again)[0] - _px(r)[0]).max() <= 2 / 255  # seeded (alone vs in a batch of 2: float rounding only)


def test_identity_scale_window_pose_and_variant_change_the_image(engine):
    def px(**kw):
        return _px(engine.generate(GenerationRequest(**{**BASE, **kw})))[0]

    a, b = px(), px(face_image=OBAMA2)
    assert np.abs(a - b).max() > 1e-3  # the identity decides
    z1, z2 = px(identity_strength=0.0), px(face_image=OBAMA2, identity_strength=0.0)
    assert np.array_equal(z1, z2) and np.abs(z1 - a).max() > 1e-3  # InfuseNet off: the face no longer matters
    assert np.abs(px(control_guidance_start=0.5) - a).max() > 1e-3
    assert np.abs(px(pose_image=OBAMA2) - a).max() > 1e-3  # keypoints of the pose photo instead of black
    assert np.abs(px(adapter_model="sim_stage1") - a).max() > 1e-3


def test_refuses_what_it_does_not_do(engine):
    for kw, words in (({"scheduler": "ddim"}, "flow-matching"), ({"negative_prompt": "ugly"}, "negative_prompt"),
                      ({"enhance_face_region": False}, "enhance_face_region"), ({"base": "sdxl"}, "FLUX only"),
                      ({"face_images": [OBAMA2], "combine": "concat"}, "average")):
        with pytest.raises(InvalidInputError, match=words):
            engine.generate(GenerationRequest(**{**BASE, **kw}))


def test_real_loader_reads_local_folders_in_the_official_layout(fx_settings, tmp_path):
    from diffusers import FluxPipeline

    from faceanchor.models import flux

    comps = flux.build_components("tiny", seed=0)
    FluxPipeline(**comps).save_pretrained(tmp_path / "FLUX.1-dev")
    version = tmp_path / "InfiniteYou" / "infu_flux_v1.0" / "aes_stage2"  # as ByteDance/InfiniteYou lays it out
    net = flux.build_infusenet("tiny", seed=0)
    net.save_pretrained(version / "InfuseNetModel")
    write_bin(infiniteyou_projection_checkpoint(dim=64, depth=2, dim_head=64, heads=2, output_dim=32), version / "image_proj_model.bin")
    e = Engine(fx_settings, weights="real")
    req = dict(BASE, model_name=str(tmp_path / "FLUX.1-dev"), adapter_model=str(tmp_path / "InfiniteYou"), width=64, height=64)
    r = e.generate(GenerationRequest(**req))
    assert r.images[0].image.size == (64, 64) and r.params["face_space"] == "facexlib"
    assert r.models == {"base": str(tmp_path / "FLUX.1-dev"), "infusenet": str(version)}
    with pytest.raises(EmbeddingMismatchError, match="need embeddings of the facexlib space, got antelopev2"):
        e.generate(GenerationRequest(**{**req, "face_image": None, "face_embedding": [0.1] * 512, "face_embedding_space": "antelopev2"}))
    with pytest.raises(ModelNotFoundError, match="InfuseNetModel/config.json"):
        e.generate(GenerationRequest(**{**req, "adapter_model": str(tmp_path)}))
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        e.generate(GenerationRequest(**{**req, "model_name": str(version)}))
    # no names given: the defaults' hub layouts under FACEANCHOR_HOME/models (as the HF cache would hold them)
    shutil.copytree(tmp_path / "FLUX.1-dev", fx_settings.models_dir / "black-forest-labs" / "FLUX.1-dev")
    shutil.copytree(tmp_path / "InfiniteYou", fx_settings.models_dir / "ByteDance" / "InfiniteYou")
    e2 = Engine(fx_settings, weights="real")
    r2 = e2.generate(GenerationRequest(**{**BASE, "width": 64, "height": 64}))
    assert r2.models == {"base": str(fx_settings.models_dir / "black-forest-labs" / "FLUX.1-dev"), "infusenet": "ByteDance/InfiniteYou:aes_stage2"}
    assert np.abs(_px(r2)[0] - _px(r)[0]).max() <= 1 / 255  # the same weights found the other way
    with pytest.raises(ModelNotFoundError, match="sim_stage1"):
        e2.generate(GenerationRequest(**{**BASE, "width": 64, "height": 64, "adapter_model": "sim_stage1"}))


def test_dummy_full_size_refuses_in_one_line_when_memory_lacks(fx_settings, monkeypatch):
    from faceanchor.pipelines import loading

    monkeypatch.setattr(loading, "available_memory_bytes", lambda: 24 * 10**9)
    e = Engine(fx_settings, weights="dummy", face_pack="facexlib", dtype=torch.bfloat16)
    with pytest.raises(InvalidInputError, match=r"infiniteyou on flux \(transformer, vae, text_encoder, text_encoder_2, infusenet\) needs about 4[0-9]\.[0-9] GB of memory in bfloat16"):
        e.generate(GenerationRequest(**BASE))


def test_8bit_runs_through_the_engine_and_the_real_loader(fx_settings, engine, tmp_path):
    from diffusers import FluxPipeline
    from optimum.quanto import QTensor

    from faceanchor.models import flux

    q8 = Engine(fx_settings.model_copy(update={"flux_quantize": "8bit"}), weights="tiny", face_pack="facexlib")
    r, want = q8.generate(GenerationRequest(**BASE)), engine.generate(GenerationRequest(**BASE))
    assert r.models["base"] == "tiny:flux-8bit"
    d = float(np.abs(_px(r)[0] - _px(want)[0]).max())
    assert 0 < d < 0.1, d  # int8 weights: close, not equal
    FluxPipeline(**flux.build_components("tiny", seed=0)).save_pretrained(tmp_path / "FLUX.1-dev")  # the official layouts, read back
    version = tmp_path / "aes_stage2"
    flux.build_infusenet("tiny", seed=0).save_pretrained(version / "InfuseNetModel")
    write_bin(infiniteyou_projection_checkpoint(dim=64, depth=2, dim_head=64, heads=2, output_dim=32), version / "image_proj_model.bin")
    real = Engine(fx_settings.model_copy(update={"flux_quantize": "8bit"}), weights="real")
    out = real.generate(GenerationRequest(**BASE, model_name=str(tmp_path / "FLUX.1-dev"), adapter_model=str(version), width=64, height=64))
    pipe = next(iter(real._loaded.values())).pipe
    assert out.images[0].image.size == (64, 64)
    for m in (pipe.base.transformer, pipe.base.text_encoder_2, pipe.infusenet):
        linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
        assert linears and all(isinstance(mod.weight, QTensor) for mod in linears)
    assert not any(isinstance(p, QTensor) for p in pipe.base.vae.parameters())


# ---------------------------------------------------------------------- several people

BIDEN = small_copy("biden.jpg")
LEFT, RIGHT = [0, 0, 64, 64], [64, 0, 128, 64]
PEOPLE = dict(BASE, width=128, height=64, prompt="two friends at a cafe")


def test_one_person_whose_box_is_the_whole_image_is_the_single_person_path(engine):
    from faceanchor.types import PlacedIdentity

    plain = engine.generate(GenerationRequest(**BASE, samples=2, width=64, height=64))
    boxed = engine.generate(GenerationRequest(**BASE, samples=2, width=64, height=64, face_box=[0, 0, 64, 64]))
    assert all(np.array_equal(a, b) for a, b in zip(_px(plain), _px(boxed)))
    # two people, the second at strength 0: the first one's picture, bit for bit
    alone = engine.generate(GenerationRequest(**PEOPLE, face_box=LEFT))
    silent = engine.generate(GenerationRequest(**PEOPLE, face_box=LEFT, more_identities=[
        PlacedIdentity(face_image=BIDEN, box=RIGHT, identity_strength=0.0)]))
    assert np.array_equal(_px(alone)[0], _px(silent)[0])
    two = engine.generate(GenerationRequest(**PEOPLE, face_box=LEFT, more_identities=[PlacedIdentity(face_image=BIDEN, box=RIGHT)]))
    assert np.abs(_px(two)[0] - _px(alone)[0]).max() > 1e-3
    assert len(two.images[0].identity_scores) == 2 and two.metadata()["params"]["more_identities"][0]["box"] == RIGHT
    stronger = engine.generate(GenerationRequest(**PEOPLE, face_box=LEFT, more_identities=[
        PlacedIdentity(face_image=BIDEN, box=RIGHT, identity_strength=1.5)]))
    assert np.abs(_px(stronger)[0] - _px(two)[0]).max() > 1e-3  # its own InfuseNet scale (default: the request's, 1.0)


def test_people_on_a_pose_photo_and_refusals(engine, tmp_path):
    from PIL import Image

    from faceanchor.errors import NoFaceError
    from faceanchor.types import PlacedIdentity

    a, b = Image.open(OBAMA).convert("RGB"), Image.open(BIDEN).convert("RGB")
    h = min(a.height, b.height)
    a, b = a.resize((a.width * h // a.height, h)), b.resize((b.width * h // b.height, h))
    group = Image.new("RGB", (a.width + b.width, h))
    group.paste(a, (0, 0))
    group.paste(b, (a.width, 0))
    pose = tmp_path / "group.jpg"
    group.save(pose)
    res = engine.generate(GenerationRequest(**PEOPLE, pose_image=str(pose), more_identities=[PlacedIdentity(face_image=BIDEN)]))
    assert len(res.images[0].identity_scores) == 2
    with pytest.raises(InvalidInputError, match="overlap"):
        engine.generate(GenerationRequest(**PEOPLE, pose_image=str(pose), more_identities=[PlacedIdentity(face_image=BIDEN, pose_index=0)]))
    with pytest.raises(NoFaceError, match="2 face"):
        engine.generate(GenerationRequest(**PEOPLE, pose_image=str(pose), more_identities=[PlacedIdentity(face_image=BIDEN, pose_index=2)]))
    with pytest.raises(InvalidInputError, match="needs a place"):
        engine.generate(GenerationRequest(**PEOPLE, more_identities=[PlacedIdentity(face_image=BIDEN)]))
    with pytest.raises(InvalidInputError, match="overlap"):
        engine.generate(GenerationRequest(**PEOPLE, face_box=LEFT, more_identities=[PlacedIdentity(face_image=BIDEN, box=[32, 0, 128, 64])]))
    with pytest.raises(InvalidInputError, match="leave pose_image out"):
        engine.generate(GenerationRequest(**PEOPLE, pose_image=str(pose), face_box=LEFT, more_identities=[PlacedIdentity(face_image=BIDEN, box=RIGHT)]))
