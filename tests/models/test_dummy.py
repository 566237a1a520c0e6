from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceanchor.errors import InvalidInputError
from faceanchor.models import dummy


def test_full_configs_have_official_sizes_on_meta():
    # Official parameter counts of SDXL base 1.0 / SD1.5 / InstantID IdentityNet / CLIP ViT-H.
    assert dummy.parameter_count("unet", "sdxl", "full") == 2_567_463_684
    assert dummy.parameter_count("unet", "sd15", "full") == 859_520_964
    assert dummy.parameter_count("controlnet", "sdxl", "full") == 1_251_014_160
    assert dummy.parameter_count("vae", "sdxl", "full") == 83_653_863
    assert dummy.parameter_count("text_encoder", "sdxl", "full") == 123_060_480
    assert dummy.parameter_count("text_encoder_2", "sdxl", "full") == 694_659_840
    assert dummy.parameter_count("image_encoder", "sd15", "full") == 632_076_800
    assert dummy.cross_attention_dim("sdxl") == 2048 and dummy.cross_attention_dim("sd15") == 768
    with pytest.raises(InvalidInputError):
        dummy.parameter_count("nope")


def test_full_sdxl_config_values():
    u = dummy.unet_config("sdxl", "full")
    assert u["transformer_layers_per_block"] == (1, 2, 10) and u["addition_embed_type"] == "text_time"
    assert u["projection_class_embeddings_input_dim"] == 2816 == 6 * 256 + 1280
    c = dummy.controlnet_config("sdxl", "full")
    assert c["cross_attention_dim"] == 2048 and c["conditioning_embedding_out_channels"] == (16, 32, 96, 256)
    te = dummy.text_encoder_configs("sdxl", "full")
    assert te[0]["hidden_size"] + te[1]["hidden_size"] == u["cross_attention_dim"]
    assert dummy.vae_config("sdxl")["scaling_factor"] == 0.13025 and dummy.vae_config("sd15")["scaling_factor"] == 0.18215
    assert dummy.scheduler_config("sdxl")["_class_name"] == "EulerDiscreteScheduler"
    with pytest.raises(InvalidInputError, match="sdxl or sd15"):
        dummy.unet_config("sd3")
    with pytest.raises(InvalidInputError, match="full or tiny"):
        dummy.unet_config("sdxl", "medium")


def test_tiny_configs_are_consistent():
    for fam in ("sdxl", "sd15"):
        u = dummy.unet_config(fam, "tiny")
        te = dummy.text_encoder_configs(fam, "tiny")
        assert sum(c["hidden_size"] for c in te) == u["cross_attention_dim"]
        if fam == "sdxl":
            assert u["projection_class_embeddings_input_dim"] == 6 * u["addition_time_embed_dim"] + te[1]["projection_dim"]


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_seeded_and_independent():
    a = dummy.build_components("sdxl", "tiny", seed=3, controlnet=True)
    b = dummy.build_components("sdxl", "tiny", seed=3)
    c = dummy.build_components("sdxl", "tiny", seed=4)
    for k in ("unet", "vae", "text_encoder", "text_encoder_2"):
        sa, sb, sc = _state(a[k]), _state(b[k]), _state(c[k])
        assert all(torch.equal(sa[n], sb[n]) for n in sa), k  # controlnet=True changed nothing else
        assert any(not torch.equal(sa[n], sc[n]) for n in sa if sa[n].is_floating_point()), k
    # no meta tensors left, no NaN, sane init
    for k in ("unet", "vae", "controlnet", "text_encoder", "text_encoder_2"):
        for n, p in a[k].named_parameters():
            assert p.device.type == "cpu" and torch.isfinite(p).all(), (k, n)
        for n, b_ in a[k].named_buffers():
            assert b_.device.type == "cpu", (k, n)
    ln = a["text_encoder"].final_layer_norm
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)
    pos = a["text_encoder"].embeddings.position_ids
    assert torch.equal(pos.flatten(), torch.arange(77))  # buffers kept real, not garbage
    w = a["unet"].conv_in.weight
    assert abs(float(w.std()) - 1 / np.sqrt(w[0].numel())) < 0.3 / np.sqrt(w[0].numel())
    # the dummy IdentityNet is random, not zero-initialised: its residuals matter
    assert a["controlnet"].controlnet_mid_block.weight.abs().sum() > 0


def test_components_keys_and_dtype():
    sd15 = dummy.build_components("sd15", "tiny", seed=0, image_encoder=True, dtype=torch.float16)
    assert set(sd15) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler", "image_encoder", "feature_extractor"}
    assert sd15["unet"].dtype == torch.float16 and sd15["image_encoder"].dtype == torch.float16
    assert type(sd15["scheduler"]).__name__ == "PNDMScheduler"
    assert sd15["text_encoder"].embeddings.position_ids.dtype == torch.int64
    xl = dummy.build_components("sdxl", "tiny", seed=0)
    assert {"text_encoder_2", "tokenizer_2"} <= set(xl) and "controlnet" not in xl


def test_tokenizer_tokenizes_like_clip_shapes():
    tok = dummy.build_tokenizer()
    ids = tok("a photo of the man, smiling", padding="max_length", max_length=tok.model_max_length, truncation=True).input_ids
    assert len(ids) == 77 and ids[0] == tok.bos_token_id
    assert tok.eos_token_id == max(tok.get_vocab().values())  # CLIP pools at argmax(ids)
    assert tok.tokenize("the")[0] == "the</w>"
    long = tok("word " * 200, truncation=True, max_length=77).input_ids
    assert len(long) == 77 and long[-1] == tok.eos_token_id
    xl2 = dummy.build_tokenizers("sdxl")[1]
    assert xl2.pad_token == "!"
    assert tok("é€ unicode ✓").input_ids  # any bytes tokenize


def test_tiny_sdxl_controlnet_pipeline_runs_and_is_seeded():
    from diffusers import StableDiffusionXLControlNetPipeline
    from PIL import Image

    comps = dummy.build_components("sdxl", "tiny", seed=0, controlnet=True)
    pipe = StableDiffusionXLControlNetPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    ctrl = Image.new("RGB", (64, 64), (255, 0, 0))

    def run(seed, scale=1.0):
        g = torch.Generator().manual_seed(seed)
        return pipe("a photo", image=ctrl, num_inference_steps=2, height=64, width=64, generator=g,
                    controlnet_conditioning_scale=scale, output_type="np").images[0]  # fmt: skip

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (64, 64, 3) and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert not np.allclose(a, run(0, scale=0.0))  # the random ControlNet changes the image


def test_tiny_sd15_pipeline_and_image_encoder():
    from diffusers import StableDiffusionPipeline

    comps = dummy.build_components("sd15", "tiny", seed=0, image_encoder=True)
    enc, proc = comps.pop("image_encoder"), comps.pop("feature_extractor")
    pipe = StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a face", num_inference_steps=2, height=64, width=64, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images[0].shape == (64, 64, 3) and np.isfinite(out.images[0]).all()
    pix = proc(images=np.zeros((224, 224, 3), np.uint8), return_tensors="pt").pixel_values
    assert pix.shape == (1, 3, 224, 224)
    hs = enc(pix, output_hidden_states=True).hidden_states[-2]
    assert hs.shape == (1, 257, 32)  # 16x16 patches + class token, as ViT-H/14 at 224 px


def test_full_vae_materialises_fast():
    vae = dummy.build_vae("sdxl", "full", seed=0)
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    with torch.no_grad():
        lat = vae.encode(torch.zeros(1, 3, 16, 16)).latent_dist.mean
    assert lat.shape == (1, 4, 2, 2) and torch.isfinite(lat).all()
    json.dumps(dict(vae.config))  # config is plain data


def test_build_leaves_modules_built_by_other_threads_alone(monkeypatch):
    """While one thread is inside a dummy build, a module another thread constructs is ordinary."""
    import threading

    import diffusers

    real_vae = diffusers.AutoencoderKL
    inside, release = threading.Event(), threading.Event()

    def vae_that_waits(**cfg):
        vae = real_vae(**cfg)  # constructed inside the build, before materialisation
        inside.set()
        assert release.wait(60)
        return vae

    monkeypatch.setattr(diffusers, "AutoencoderKL", vae_that_waits)
    built, errors = [], []

    def build():
        try:
            built.append(dummy.build_vae("sdxl", "tiny", seed=0))
        except BaseException as exc:  # reported below
            errors.append(exc)
            inside.set()

    worker = threading.Thread(target=build)
    worker.start()
    try:
        assert inside.wait(60) and not errors, errors
        linear = torch.nn.Linear(3, 2)
        conv = torch.nn.Conv2d(2, 2, 1)
        emb = torch.nn.Embedding(4, 2)
        scratch = torch.empty(2)
    finally:
        release.set()
        worker.join(60)
    assert not errors, errors
    for m in (linear, conv, emb):
        for name, p in m.named_parameters():
            assert p.device.type == "cpu", (type(m).__name__, name, p.device)
    assert scratch.device.type == "cpu"
    assert linear(torch.ones(1, 3)).shape == (1, 2)
    # and the build in the other thread still made the same weights as an undisturbed build
    monkeypatch.setattr(diffusers, "AutoencoderKL", real_vae)
    ref = dummy.build_vae("sdxl", "tiny", seed=0)
    got = built[0].state_dict()
    assert all(torch.equal(v, got[k]) for k, v in ref.state_dict().items())


def _clip_factories(family):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPVisionConfig, CLIPVisionModelWithProjection

    te = dummy.text_encoder_configs(family, "tiny")
    return {
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**te[0])),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(CLIPTextConfig(**te[-1])),
        "image_encoder": lambda: CLIPVisionModelWithProjection(CLIPVisionConfig(**dummy.image_encoder_config("tiny"))),
    }


def _buffers(module):
    out = {}
    for name, b in module.named_buffers():
        owner = module.get_submodule(name.rpartition(".")[0])
        out[name] = (b, tuple(b.stride()), name.rpartition(".")[2] in owner._non_persistent_buffers_set)
    return out


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
def test_buffers_equal_those_of_a_normally_constructed_module(family):
    built = dummy.build_components(family, "tiny", seed=1, controlnet=True, image_encoder=True)
    # diffusers components of these configs own no buffers; transformers' CLIP ones own position_ids
    for k in ("unet", "vae", "controlnet"):
        assert not list(built[k].buffers()), k
    for k, factory in _clip_factories(family).items():
        if k not in built:
            continue
        with torch.random.fork_rng():
            ref = factory()  # ordinary construction on CPU
        ours, want = _buffers(built[k]), _buffers(ref)
        assert ours.keys() == want.keys() and len(want) == 1, (k, list(ours))
        for name, (b, stride, non_persistent) in want.items():
            got, got_stride, got_np = ours[name]
            assert got.device.type == "cpu" and got.dtype == b.dtype and torch.equal(got, b), (k, name)
            assert got_stride == stride and got_np == non_persistent, (k, name)


def test_buffers_are_rebuilt_when_transformers_init_does_not_restore_them(monkeypatch):
    """transformers 4 has no buffer re-initialisation in ``_init_weights``: the submodule is rebuilt instead."""
    from transformers.models.clip.modeling_clip import CLIPPreTrainedModel

    monkeypatch.setattr(CLIPPreTrainedModel, "_init_weights", lambda self, module: None)
    for k, factory in _clip_factories("sd15").items():
        state = torch.random.get_rng_state()
        m = dummy._build(factory, 0, None, "cpu")
        assert torch.equal(torch.random.get_rng_state(), state), k
        with torch.random.fork_rng():
            ref = factory()
        want = dict(ref.named_buffers())
        assert want and all(torch.equal(b, want[n]) for n, b in m.named_buffers()), k


def test_a_buffer_that_cannot_be_restored_raises():
    class WithBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.register_buffer("scale", torch.full((2,), 3.0))

    with pytest.raises(RuntimeError, match="cannot re-create buffer.*scale"):
        dummy._build(WithBuffer, 0, None, "cpu")


def test_builds_draw_nothing_from_the_global_rng():
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    dummy.build_components("sdxl", "tiny", seed=0, controlnet=True)
    dummy.build_components("sd15", "tiny", seed=0, image_encoder=True)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_seeded_init_is_local_to_its_thread():
    import threading

    def expected(seed):
        return torch.rand(3, generator=torch.Generator().manual_seed(seed))

    inside, release = threading.Event(), threading.Event()
    got = {}

    def seeded():
        with dummy.seeded_init(5):
            inside.set()
            assert release.wait(60)
            got["seeded"] = torch.rand(3)
            got["linear"] = torch.nn.Linear(4, 3).weight.detach().clone()

    worker = threading.Thread(target=seeded)
    worker.start()
    try:
        assert inside.wait(60)
        torch.manual_seed(1)
        got["main"] = torch.rand(3)  # the other thread's mode does not capture this draw
    finally:
        release.set()
        worker.join(60)
    assert torch.equal(got["main"], expected(1))
    assert torch.equal(got["seeded"], expected(5))  # and this thread's generator was not consumed by main
    with torch.random.fork_rng():
        torch.manual_seed(5)
        torch.rand(3)
        ref = torch.nn.Linear(4, 3).weight.detach()
    assert torch.equal(got["linear"], ref)  # nn.init.kaiming_uniform_ drew from the local generator too
