"""The engine end to end on tiny seeded weights with the real (offline) dlib face pack."""

import sys
from pathlib import Path

import numpy as np
import pytest

from faceanchor.config import Settings
from faceanchor.engine import Engine
from faceanchor.methods.instantid import cover_transform
from faceanchor.methods.sizing import output_size
from faceanchor.pipelines.instantid_sdxl import face_box_mask
from faceanchor.errors import Cancelled, EmbeddingMismatchError, InvalidInputError, ModelNotFoundError, NoFaceError
from faceanchor.types import GenerationRequest

sys.path.insert(0, str(Path(__file__).parent))
from photos import small_copy  # noqa: E402


OBAMA = small_copy("obama.jpg")
OBAMA2 = small_copy("obama2.jpg")
BIDEN = small_copy("biden.jpg")


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return Settings(home=tmp_path_factory.mktemp("home"), device="cpu")


@pytest.fixture(scope="module")
def engine(settings):
    return Engine(settings, weights="tiny", face_pack="dlib")


def req(**kw):
    base = dict(face_image=OBAMA, prompt="a portrait", width=64, height=64, num_inference_steps=2, seed=7)
    base.update(kw)
    return GenerationRequest(**base)


def pixels(im):
    return np.asarray(im.image, dtype=np.int16)


# --------------------------------------------------------------------------- pure helpers


def test_output_size_follows_the_photo_and_rounds_to_the_grid():
    assert output_size((600, 800), None, None, "sdxl") == (960, 1280)
    assert output_size((1000, 1000), None, None, "sdxl") == (1024, 1024)
    assert output_size((2000, 1000), None, None, "sdxl") == (1280, 640)
    assert output_size(None, 100, 130, "sdxl") == (64, 128)
    assert output_size((400, 200), 512, None, "sd15") == (512, 256)
    with pytest.raises(InvalidInputError):
        output_size(None, 32, 32, "sdxl")


def test_cover_transform_and_face_mask():
    s, dx, dy = cover_transform((200, 100), (100, 100))
    assert s == 1.0 and dx == 50.0 and dy == 0.0
    m = face_box_mask(np.array([10, 20, 30, 40]), 64, 64)
    assert m.shape == (64, 64, 3)
    assert (m[20:40, 10:30] == 255).all() and m.sum() == 20 * 20 * 3 * 255
    # fractional boxes (InsightFace's) are truncated with int(), as the official demo does
    t = face_box_mask(np.array([10.7, 20.6, 30.9, 40.5]), 64, 64)
    assert (t[20:40, 10:30] == 255).all() and t.sum() == 20 * 20 * 3 * 255


# --------------------------------------------------------------------------- generation


def test_generate_returns_images_seed_timings_and_scores(engine):
    events = []
    res = engine.generate(req(), on_progress=events.append)
    assert len(res.images) == 1
    im = res.images[0]
    assert im.image.size == (64, 64) and im.seed == 7 and res.seed == 7
    # a tiny random model draws no face: the score is null with a reason
    assert im.identity_score is None and "no face" in im.identity_reason
    for stage in ("face", "load", "controls", "prompt", "denoise", "decode", "score"):
        assert stage in res.timings
    steps = [e for e in events if e.stage == "denoise" and e.total]
    assert [e.step for e in steps] == [1, 2]
    assert res.params["num_inference_steps"] == 2 and res.params["face_space"] == "dlib"
    assert res.models["base"] == "tiny:sdxl" and "128-D" in res.models["adapter"]


def test_same_seed_same_image_and_four_distinct_samples(engine):
    a = engine.generate(req(seed=11)).images[0]
    b = engine.generate(req(seed=11)).images[0]
    assert np.array_equal(pixels(a), pixels(b))
    many = engine.generate(req(seed=11, samples=4))
    assert [im.seed for im in many.images] == [11, 12, 13, 14]
    arrs = [pixels(im) for im in many.images]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(arrs[i], arrs[j])
    # the first of a batch equals a single run with its seed
    assert np.abs(arrs[0] - pixels(a)).max() <= 2


def test_random_seed_is_reported(engine):
    res = engine.generate(req(seed=-1))
    assert 0 <= res.seed < 2**32 and res.images[0].seed == res.seed


def test_strengths_change_the_image(engine):
    base = pixels(engine.generate(req(identity_strength=0.0, adapter_strength=0.0)).images[0])
    ident = pixels(engine.generate(req(identity_strength=1.5, adapter_strength=0.0)).images[0])
    adapter = pixels(engine.generate(req(identity_strength=0.0, adapter_strength=2.0)).images[0])
    assert not np.array_equal(base, ident)
    assert not np.array_equal(base, adapter)


def test_other_faces_give_other_images(engine):
    a = pixels(engine.generate(req()).images[0])
    b = pixels(engine.generate(req(face_image=BIDEN)).images[0])
    assert not np.array_equal(a, b)


def _controls(engine, r, ident):
    method = engine.method("instantid")
    return method.controls(r, ident, engine._tools(method))


def test_pose_image_changes_the_keypoint_image(engine):
    r = req()
    ident = engine.identity(r)
    _, _, kps_a, _, _ = _controls(engine, r, ident)
    _, _, kps_b, _, _ = _controls(engine, req(pose_image=BIDEN), ident)
    assert not np.array_equal(np.asarray(kps_a), np.asarray(kps_b))
    # five coloured points are on the image
    arr = np.asarray(kps_a)
    assert (arr.reshape(-1, 3) == [255, 0, 0]).all(1).any()


def test_enhance_face_region_makes_a_face_mask(engine):
    r = req(width=256, height=256)
    ident = engine.identity(r)
    *_, mask, _ = _controls(engine, r, ident)
    m = np.asarray(mask)[..., 0] > 0
    assert 0.01 < m.mean() < 0.9
    *_, none, _ = _controls(engine, req(width=256, height=256, enhance_face_region=False), ident)
    assert none is None


def test_styles_and_lcm_and_other_schedulers_run(engine):
    res = engine.generate(req(style="Watercolor", scheduler="lcm", num_inference_steps=None))
    assert res.params["num_inference_steps"] == 5 and res.params["guidance_scale"] == 1.5
    assert "watercolor" in res.params["prompt_used"].lower()
    for sched in ("euler_a", "dpmpp_2m", "ddim", "unipc"):
        assert engine.generate(req(scheduler=sched)).images[0].image.size == (64, 64)


def test_best_of_keeps_the_requested_number(engine):
    res = engine.generate(req(best_of=2))
    assert len(res.images) == 1


def test_cancel_between_steps(engine):
    calls = {"n": 0}

    def cancel():
        calls["n"] += 1
        return calls["n"] > 4

    with pytest.raises(Cancelled):
        engine.generate(req(num_inference_steps=4), cancel=cancel)


def test_precomputed_embedding_skips_face_analysis(engine, monkeypatch):
    ident = engine.identity(req())
    an = engine.analyzer("dlib")
    calls = {"detect": 0, "detect_many": 0}

    def counting(name):
        real = getattr(an, name)

        def count(*a, **k):
            calls[name] += 1
            return real(*a, **k)
        return count

    monkeypatch.setattr(an, "detect", counting("detect"))
    monkeypatch.setattr(an, "detect_many", counting("detect_many"))
    r = GenerationRequest(
        prompt="x", face_embedding=ident.embedding.tolist(), face_embedding_space="dlib",
        face_kps=ident.kps.tolist(), face_image_size=ident.image_size, width=64, height=64, num_inference_steps=1, seed=1,
    )
    ident2 = engine.identity(r)
    assert calls == {"detect": 0, "detect_many": 0} and np.allclose(ident2.embedding, ident.embedding)
    engine.generate(r)  # scoring may detect on the output (all outputs in one call), analysis of a reference may not
    assert calls == {"detect": 0, "detect_many": 1}
    # with the stored face box too, the stored identity reproduces the photo path exactly
    from_photo = engine.generate(req(prompt="x", seed=1, num_inference_steps=1)).images[0]
    stored = engine.generate(r.model_copy(update={"face_bbox": ident.bbox.tolist()})).images[0]
    assert np.array_equal(pixels(from_photo), pixels(stored))


def test_several_references_combine(engine):
    avg = engine.identity(req(face_images=[OBAMA2]))
    assert avg.embedding.shape == (128,)
    cat = engine.identity(req(face_images=[OBAMA2], combine="concat"))
    assert cat.embedding.shape == (2, 128)
    assert engine.generate(req(face_images=[OBAMA2], combine="concat")).images


def test_bad_inputs_are_clear_errors(engine, tmp_path):
    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    with pytest.raises(NoFaceError, match="no face"):
        engine.generate(req(face_image=str(blank)))
    with pytest.raises(InvalidInputError, match="face"):
        engine.generate(GenerationRequest(prompt="x"))
    with pytest.raises(InvalidInputError, match="SDXL"):
        engine.generate(req(base="sd15"))
    with pytest.raises(InvalidInputError):
        engine.generate(req(style="No Such Style"))


def test_real_weights_need_the_antelopev2_space(settings):
    eng = Engine(settings, weights="real", face_pack="dlib")
    with pytest.raises(EmbeddingMismatchError, match="antelopev2"):
        eng.generate(req())
    with pytest.raises(EmbeddingMismatchError, match="antelopev2"):
        eng.generate(GenerationRequest(prompt="x", face_embedding=[0.0] * 128, face_embedding_space="dlib", face_kps=[[1, 1]] * 5))


def test_missing_real_model_is_one_clear_error(settings, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    eng = Engine(Settings(home=tmp_path / "home", device="cpu"), weights="real")
    r = GenerationRequest(
        prompt="x", face_embedding=[0.0] * 512, face_embedding_space="antelopev2",
        face_kps=[[30, 30], [60, 30], [45, 45], [35, 60], [55, 60]], face_image_size=(100, 100),
    )
    with pytest.raises(ModelNotFoundError) as e:
        eng.generate(r)
    assert "\n" not in str(e.value) and ("pull" in str(e.value) or "put" in str(e.value).lower())


# --------------------------------------------------------------------------- FaceID family


@pytest.mark.parametrize("method", ["faceid", "faceid-plus", "faceid-plusv2", "faceid-portrait"])
def test_faceid_methods_run_on_one_loaded_sd15(engine, method):
    r = req(method=method, face_images=[OBAMA2] if method == "faceid-portrait" else [])
    res = engine.generate(r)
    assert res.images[0].image.size == (64, 64)
    assert {"face", "prompt", "denoise", "decode", "score"} <= set(res.timings) and res.timings["denoise"] > 0
    assert res.models["base"] == "tiny:sd15" and method in res.models[f"adapter_{method}"]
    again = engine.generate(r)
    assert np.array_equal(pixels(res.images[0]), pixels(again.images[0]))


def test_faceid_switching_back_gives_the_same_image(engine):
    first = pixels(engine.generate(req(method="faceid")).images[0])
    engine.generate(req(method="faceid-plusv2"))
    engine.generate(req(method="faceid-portrait"))
    assert np.array_equal(first, pixels(engine.generate(req(method="faceid")).images[0]))


def test_s_scale_changes_plusv2_and_is_refused_elsewhere(engine):
    a = pixels(engine.generate(req(method="faceid-plusv2", s_scale=0.0)).images[0])
    b = pixels(engine.generate(req(method="faceid-plusv2", s_scale=2.0)).images[0])
    assert not np.array_equal(a, b)
    # a field a method does not use is refused, not silently ignored
    with pytest.raises(InvalidInputError, match="faceid does not use s_scale"):
        engine.generate(req(method="faceid", s_scale=2.0))


def test_faceid_rejects_concat_and_sdxl_plus(engine):
    with pytest.raises(InvalidInputError, match="concat"):
        engine.generate(req(method="faceid", face_images=[OBAMA2], combine="concat"))
    with pytest.raises(InvalidInputError, match="SD1.5"):
        engine.generate(req(method="faceid-plus", base="sdxl"))


def test_real_faceid_needs_buffalo_l(settings):
    eng = Engine(settings, weights="real", face_pack="dlib")
    with pytest.raises(EmbeddingMismatchError, match="buffalo_l"):
        eng.generate(req(method="faceid"))


def test_extra_controlnets_change_the_image_and_depth_needs_a_model(engine):
    plain = pixels(engine.generate(req(width=128, height=128)).images[0])
    res = engine.generate(req(width=128, height=128, controlnet_selection=["canny", "pose"], controlnet_conditioning_scale=1.5))
    assert not np.array_equal(plain, pixels(res.images[0]))
    assert res.models["controlnet_canny"] == "tiny:controlnet-canny" and "controlnet_pose" in res.models
    with pytest.raises(ModelNotFoundError, match="depth"):
        engine.generate(req(controlnet_selection=["depth"]))


def test_warmup_loads_models_before_the_first_request(settings):
    eng = Engine(settings, weights="tiny", face_pack="dlib")
    assert not eng._loaded
    eng.warmup()
    assert len(eng._loaded) == 1 and eng.analyzer("dlib").prepared
    res = eng.generate(req())
    assert res.timings["load"] < 0.5  # nothing left to load


def test_degenerate_precomputed_face_fields_are_clear_errors_not_crashes(engine):
    """A zero photo size used to divide by zero and a NaN keypoint to crash draw_kps."""
    from pydantic import ValidationError

    kps = [[20.0, 20.0], [40.0, 20.0], [30.0, 30.0], [22.0, 40.0], [38.0, 40.0]]
    for bad in (dict(face_image_size=(0, 0)), dict(face_kps=[[float("nan"), 1.0]] + kps[1:])):
        fields = dict(face_embedding=[0.1] * 128, face_kps=kps, width=64, height=64, num_inference_steps=1, seed=1)
        fields.update(bad)
        with pytest.raises(ValidationError):
            engine.generate(GenerationRequest(**fields))


def test_result_models_name_only_what_this_request_used():
    from faceanchor.engine import models_used

    loaded = {"base": "b", "identitynet": "i", "adapter": "a", "controlnet_canny": "c", "controlnet_pose": "p",
              "lcm_lora": "l", "adapter_faceid": "f", "adapter_faceid-portrait": "fp"}
    assert models_used(loaded, GenerationRequest(controlnet_selection=["pose"])) == {
        "base": "b", "identitynet": "i", "adapter": "a", "controlnet_pose": "p"}
    assert models_used(loaded, GenerationRequest(method="faceid-portrait", scheduler="lcm")) == {
        "base": "b", "identitynet": "i", "adapter": "a", "lcm_lora": "l", "adapter_faceid-portrait": "fp"}


def test_extra_controlnet_of_an_earlier_request_is_not_reported_later(engine):
    first = engine.generate(req(num_inference_steps=1, controlnet_selection=["canny"]))
    assert "controlnet_canny" in first.models
    later = engine.generate(req(num_inference_steps=1))
    assert "controlnet_canny" not in later.models


def test_decode_latents_on_an_fp16_sd15_pipeline():
    """SD1.5 pipelines have no upcast_vae: an fp16 VAE whose config says force_upcast (the
    default, as the real SD1.5 VAE) must still decode (as diffusers, in fp16)."""
    import diffusers
    import torch

    from faceanchor.pipelines.decode import decode_latents
    from faceanchor.models.dummy import build_components

    c = build_components("sd15", "tiny", seed=0, dtype=torch.float32, device="cpu")
    pipe = diffusers.StableDiffusionPipeline(
        **{k: c[k] for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")},
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.vae.register_to_config(force_upcast=True)
    pipe.vae.to(torch.float16)
    torch.manual_seed(0)
    images = decode_latents(pipe, torch.randn(2, pipe.vae.config.latent_channels, 8, 8, dtype=torch.float16))
    assert len(images) == 2 and images[0].size == (8 * pipe.vae_scale_factor,) * 2
    assert pipe.vae.dtype == torch.float16


def test_per_controlnet_scales(engine):
    both = dict(width=128, height=128, controlnet_selection=["canny", "pose"])
    shared = pixels(engine.generate(req(**both, controlnet_conditioning_scale=1.5)).images[0])
    # each scale given by name: the same as the shared scale
    named = pixels(engine.generate(req(**both, controlnet_scales={"canny": 1.5, "pose": 1.5})).images[0])
    assert np.array_equal(shared, named)
    # canny at 0 adds nothing: the picture of pose alone at 1.5
    pose_only = pixels(engine.generate(req(width=128, height=128, controlnet_selection=["pose"], controlnet_conditioning_scale=1.5)).images[0])
    muted = pixels(engine.generate(req(**both, controlnet_scales={"canny": 0.0, "pose": 1.5})).images[0])
    assert np.array_equal(pose_only, muted) and not np.array_equal(shared, muted)
    # one name given: the other takes controlnet_conditioning_scale
    mixed = pixels(engine.generate(req(**both, controlnet_conditioning_scale=1.5, controlnet_scales={"canny": 0.0})).images[0])
    assert np.array_equal(muted, mixed)
    with pytest.raises(ValueError, match="depth is not in controlnet_selection"):
        req(controlnet_selection=["pose"], controlnet_scales={"depth": 0.5})
    with pytest.raises(ValueError):
        req(controlnet_selection=["pose"], controlnet_scales={"pose": 2.5})
    with pytest.raises(InvalidInputError, match="controlnet_scales"):
        engine.generate(req(method="faceid", controlnet_selection=["pose"], controlnet_scales={"pose": 0.5}))


@pytest.mark.parametrize("pack", ["dlib", "buffalo_l"])
def test_scoring_all_outputs_at_once_equals_scoring_each(pack, request, tmp_path):
    """Engine.score takes every output in one face-stack call (batched SCRFD/ArcFace where the
    models take a batch); the scores are those of scoring each image alone."""
    from PIL import Image

    from faceanchor.face.analyzer import FaceAnalyzer
    from faceanchor.face.similarity import identity_score
    from faceanchor.imageio import load_image
    from faceanchor.types import Identity

    if pack == "dlib":
        batched = fixed = Settings(home=tmp_path / "h", device="cpu")
    else:
        batched, fixed = request.getfixturevalue("batched_pack_settings"), request.getfixturevalue("onnx_pack_settings")
    eng = Engine(batched, weights="tiny", face_pack="dlib")
    one = FaceAnalyzer(fixed, pack=pack).prepare()
    ref = one.get_face(load_image(OBAMA2)).embedding
    images = [load_image(OBAMA), Image.new("RGB", (256, 256), (40, 40, 40)), load_image(BIDEN), load_image(OBAMA)]
    got = eng.score(images, Identity(embedding=ref, space=pack, kps=None, bbox=None, image_size=None, reference=ref))
    expected = []
    for img in images:  # the per-image path
        faces = one.detect(img, max_attempts=2)
        expected.append(round(float(identity_score(one.embed(img, faces[0]).embedding, ref)), 4) if faces else None)
    assert [s for s, _ in got] == expected
    assert got[1] == (None, "no face found in the output") and None not in (got[0][0], got[2][0], got[3][0])
    assert got[0][0] > got[2][0]  # obama scores closer to obama than biden does
