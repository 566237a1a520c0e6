"""Checkpoints written the official way (``tests/official_layout.py``, not faceanchor's ``save``)
load through faceanchor's public loaders with every tensor in the right parameter.

FaceID (``FaceIDAdapter.from_checkpoint``, ``FaceIDPipeline.load``) on tiny SD1.5 and SDXL UNets,
InstantID (``InstantIDAdapter.from_checkpoint``, ``load_instantid_adapter``,
``InstantIDSDXLPipeline.load_instantid_adapter``) on the tiny SDXL UNet, as ``.bin`` and
flattened ``.safetensors``; then wrong files (missing, extra, mis-shaped keys, wrong sections)
give the loaders' CheckpointError.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import official_layout as O  # noqa: E402
import tiny_faceid as T  # noqa: E402
from tiny_sdxl import EMBED_DIM, tiny_resampler_config, tiny_unet  # noqa: E402

from faceanchor.adapters.attention import IPAttnProcessor  # noqa: E402
from faceanchor.adapters.faceid import FaceIDAdapter  # noqa: E402
from faceanchor.adapters.instantid import InstantIDAdapter, load_instantid_adapter  # noqa: E402
from faceanchor.errors import CheckpointError  # noqa: E402

CLIP_DIM = 48
FACEID_METHODS = ["faceid", "faceid-plus", "faceid-plusv2", "faceid-portrait"]
SUFFIXES = [".bin", ".safetensors"]


@pytest.fixture(scope="module")
def unets(tmp_path_factory):
    d = tmp_path_factory.mktemp("bases")
    return {"sd15": T.build_sd15(d / "sd15").unet, "sdxl": T.build_sdxl(d / "sdxl").unet}


@pytest.fixture(scope="module")
def xl_unet():
    return tiny_unet()


def _tiny_instantid(unet, **kw):
    cfg = tiny_resampler_config()
    return O.instantid_checkpoint(
        unet, embedding_dim=EMBED_DIM, dim=cfg.dim, depth=cfg.depth, dim_head=cfg.dim_head, heads=cfg.heads,
        num_queries=cfg.num_queries, ff_mult=cfg.ff_mult, **kw,
    )


def _copy(ckpt):
    return {s: dict(v) for s, v in ckpt.items()}


def _every_parameter(image_proj: nn.Module, processors: dict) -> dict[tuple, torch.Tensor]:
    """All adapter weights, keyed ("image_proj", name) or (processor name, name)."""
    out = {("image_proj", k): p for k, p in image_proj.named_parameters()}
    for pname, proc in processors.items():
        if isinstance(proc, nn.Module):
            out.update({(pname, k): p for k, p in proc.named_parameters()})
    return out


def _assert_lands(ckpt, names: list[str], image_proj: nn.Module, processors: dict) -> None:
    """Each file tensor equals the parameter its official name designates; all used, none left.

    ``names`` is ``list(unet.attn_processors)`` of the base UNet: ``"<i>.x"`` goes to the
    processor at position ``i``, as the official ``ModuleList(unet.attn_processors.values())``.
    """
    targets = _every_parameter(image_proj, processors)
    hit: set[tuple] = set()
    for key, t in ckpt["image_proj"].items():
        p = targets[("image_proj", key)]
        assert torch.equal(p, t.to(p.dtype)), key
        hit.add(("image_proj", key))
    for key, t in ckpt["ip_adapter"].items():
        index, _, rest = key.partition(".")
        target = (names[int(index)], rest)
        assert target in targets, f"{key}: the processor at {names[int(index)]} has no {rest}"
        p = targets[target]
        assert torch.equal(p, t.to(p.dtype)), key
        hit.add(target)
    assert len(hit) == len(ckpt["image_proj"]) + len(ckpt["ip_adapter"])
    assert hit == set(targets), f"adapter weights the file did not set: {sorted(set(targets) - hit)[:5]}"


# ---------------------------------------------------------------------------- FaceID

@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("method", FACEID_METHODS)
def test_faceid_official_file_lands_in_every_parameter(unets, tmp_path, method, family, suffix):
    unet = unets[family]
    ckpt = O.faceid_checkpoint(unet, method, clip_dim=CLIP_DIM, seed=11)
    path = O.write(ckpt, tmp_path / f"{method}{suffix}")
    names = list(unet.attn_processors)
    adapter = FaceIDAdapter.from_checkpoint(unet, method, path, clip_dim=CLIP_DIM, required_space=None)
    _assert_lands(ckpt, names, adapter.image_proj, adapter.processors)
    n_cross = sum(not n.endswith("attn1.processor") for n in names)
    lora = method != "faceid-portrait"
    assert len(ckpt["ip_adapter"]) == (8 * len(names) if lora else 0) + 2 * n_cross
    assert adapter.lora_rank == (128 if lora else None) and adapter.id_dim == 512
    # installed, the processor holding "<i>.*" sits at position i of the UNet's processors
    adapter.install()
    try:
        installed = list(unet.attn_processors.values())
        for key, t in ckpt["ip_adapter"].items():
            index, _, rest = key.partition(".")
            assert torch.equal(installed[int(index)].get_parameter(rest), t), key
    finally:
        adapter.unload()


def test_faceid_projection_names_have_the_official_roles(unets):
    """``proj.0`` → GELU → ``proj.2`` → reshape → LayerNorm ``norm``, computed from the file alone."""
    unet = unets["sd15"]
    ckpt = O.faceid_checkpoint(unet, "faceid", seed=3)
    s = ckpt["image_proj"]
    s["norm.weight"] = 1 + 0.1 * torch.randn(s["norm.weight"].shape, generator=torch.Generator().manual_seed(0))
    s["norm.bias"] = 0.1 * torch.randn(s["norm.bias"].shape, generator=torch.Generator().manual_seed(1))
    adapter = FaceIDAdapter.from_checkpoint(unet, "faceid", ckpt, required_space=None)
    e = T.embedding()
    x = F.linear(F.gelu(F.linear(e, s["proj.0.weight"], s["proj.0.bias"])), s["proj.2.weight"], s["proj.2.bias"])
    want = F.layer_norm(x.reshape(1, 4, T.CROSS), (T.CROSS,), s["norm.weight"], s["norm.bias"])
    cond, uncond = adapter.project(e)
    torch.testing.assert_close(cond, want, rtol=0, atol=1e-6)
    assert uncond.shape == cond.shape


def test_faceid_half_precision_file_loads_into_a_float32_unet(unets, tmp_path):
    unet = unets["sd15"]
    ckpt = O.faceid_checkpoint(unet, "faceid-plusv2", clip_dim=CLIP_DIM, seed=4, dtype=torch.float16)
    path = O.write_bin(ckpt, tmp_path / "half.bin")
    adapter = FaceIDAdapter.from_checkpoint(unet, "faceid-plusv2", path, clip_dim=CLIP_DIM, required_space=None)
    assert next(adapter.image_proj.parameters()).dtype == torch.float32
    _assert_lands(ckpt, list(unet.attn_processors), adapter.image_proj, adapter.processors)


def test_faceid_pipeline_load_takes_the_official_file(unets, tmp_path):
    from faceanchor.pipelines.faceid import FaceIDPipeline

    pipe = T.build_sd15(tmp_path)
    fp = FaceIDPipeline(pipe, image_encoder=T.build_clip_vision(hidden=CLIP_DIM))
    names = list(pipe.unet.attn_processors)
    for method in FACEID_METHODS:
        ckpt = O.faceid_checkpoint(pipe.unet, method, clip_dim=CLIP_DIM, seed=21)
        adapter = fp.load(method, O.write_safetensors(ckpt, tmp_path / f"{method}.safetensors"), required_space=None)
        _assert_lands(ckpt, names, adapter.image_proj, adapter.processors)
        fp.unload()


def _faceid_error(unet, ckpt, method="faceid", **kw):
    with pytest.raises(CheckpointError) as err:
        FaceIDAdapter.from_checkpoint(unet, method, ckpt, clip_dim=kw.pop("clip_dim", CLIP_DIM), required_space=None, **kw)
    return str(err.value)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_faceid_wrong_keys_in_a_file_are_named(unets, tmp_path, suffix):
    unet = unets["sd15"]
    base = O.faceid_checkpoint(unet, "faceid", seed=1)

    def case(name, mutate):
        c = _copy(base)
        mutate(c)
        return O.write(c, tmp_path / f"{name}{suffix}")

    msg = _faceid_error(unet, case("missing", lambda c: c["ip_adapter"].pop("3.to_v_ip.weight")))
    assert "1 missing (e.g. ['3.to_v_ip.weight'])" in msg and "attention processors" in msg
    msg = _faceid_error(unet, case("extra", lambda c: c["ip_adapter"].__setitem__("3.to_q_ip.weight", torch.zeros(64, 64))))
    assert "1 unexpected (e.g. ['3.to_q_ip.weight'])" in msg
    msg = _faceid_error(unet, case("extra_proj", lambda c: c["image_proj"].__setitem__("proj.4.weight", torch.zeros(2, 2))))
    assert "1 unexpected (e.g. ['proj.4.weight'])" in msg and "projection" in msg
    msg = _faceid_error(unet, case("shape", lambda c: c["ip_adapter"].__setitem__("0.to_k_lora.down.weight", torch.zeros(128, 7))))
    assert "wrong shape (e.g. 0.to_k_lora.down.weight: file (128, 7), model (128, 64))" in msg
    msg = _faceid_error(unet, case("missing_proj", lambda c: c["image_proj"].pop("proj.2.weight")))
    assert "lacks ['proj.2.weight']" in msg


def test_faceid_wrong_sections_are_refused(unets, tmp_path):
    unet = unets["sd15"]
    base = O.faceid_checkpoint(unet, "faceid", seed=1)
    assert "exactly 'image_proj'" in _faceid_error(unet, O.write_bin({**_copy(base), "unet": {}}, tmp_path / "extra.bin"))
    assert "exactly 'image_proj'" in _faceid_error(unet, O.write_bin({"image_proj": base["image_proj"]}, tmp_path / "only.bin"))
    swapped = {"image_proj": base["ip_adapter"], "ip_adapter": base["image_proj"]}
    assert "lacks ['proj.0.weight'" in _faceid_error(unet, O.write_bin(swapped, tmp_path / "swapped.bin"))
    from safetensors.torch import save_file

    flat = O.flatten(base)
    flat["adapter_modules.0.weight"] = torch.zeros(1)  # training-checkpoint prefix left in
    save_file(flat, str(tmp_path / "stray.safetensors"))
    assert "outside 'image_proj.' and 'ip_adapter.'" in _faceid_error(unet, tmp_path / "stray.safetensors")
    save_file({k: v for k, v in O.flatten(base).items() if k.startswith("image_proj.")}, str(tmp_path / "half.safetensors"))
    assert "has no 'ip_adapter' tensors" in _faceid_error(unet, tmp_path / "half.safetensors")
    empty = {"image_proj": base["image_proj"], "ip_adapter": {}}
    assert "has no 'ip_adapter' tensors" in _faceid_error(unet, O.write_bin(empty, tmp_path / "empty.bin"))


def test_faceid_file_for_another_variant_or_base_is_refused(unets, tmp_path):
    sd15, sdxl = unets["sd15"], unets["sdxl"]
    portrait = O.write_bin(O.faceid_checkpoint(sd15, "faceid-portrait"), tmp_path / "portrait.bin")
    assert "looks like a faceid-portrait checkpoint" in _faceid_error(sd15, portrait, "faceid")
    plus = O.write_bin(O.faceid_checkpoint(sd15, "faceid-plus", clip_dim=CLIP_DIM), tmp_path / "plus.bin")
    assert "faceid-plus / faceid-plusv2 checkpoint" in _faceid_error(sd15, plus, "faceid")
    assert "expects 48-wide CLIP features but the image encoder gives 1280" in _faceid_error(sd15, plus, "faceid-plus", clip_dim=1280)
    xl_file = O.write_bin(O.faceid_checkpoint(sdxl, "faceid"), tmp_path / "xl.bin")
    msg = _faceid_error(sd15, xl_file)  # same widths, more attention layers: keys past SD1.5's processors
    assert "unexpected" in msg and "SD1.5 vs SDXL" in msg


def test_our_save_writes_the_official_keys(unets, tmp_path):
    """Round trip: faceanchor's ``save`` → file with exactly the official keys/shapes → same weights back."""
    from faceanchor.adapters.faceid_checkpoint import read_faceid_checkpoint

    unet = unets["sdxl"]
    for method in FACEID_METHODS:
        src = FaceIDAdapter.build(unet, method, clip_dim=CLIP_DIM)
        src.randomize(seed=2)
        state = read_faceid_checkpoint(src.save(tmp_path / f"{method}.bin"))
        official = O.faceid_checkpoint(unet, method, clip_dim=CLIP_DIM)
        for s in ("image_proj", "ip_adapter"):
            assert {k: tuple(v.shape) for k, v in state[s].items()} == {k: tuple(v.shape) for k, v in official[s].items()}, (method, s)
        back = FaceIDAdapter.from_checkpoint(unet, method, tmp_path / f"{method}.bin", clip_dim=CLIP_DIM)
        _assert_lands(state, list(unet.attn_processors), back.image_proj, back.processors)


# ---------------------------------------------------------------------------- InstantID

@pytest.mark.parametrize("suffix", SUFFIXES)
def test_instantid_official_file_lands_in_every_parameter(xl_unet, tmp_path, suffix):
    ckpt = _tiny_instantid(xl_unet, seed=9)
    path = O.write(ckpt, tmp_path / f"ip-adapter{suffix}")
    names = list(xl_unet.attn_processors)
    adapter = InstantIDAdapter.from_checkpoint(path, xl_unet, dim_head=8)
    _assert_lands(ckpt, names, adapter.image_proj, adapter.processors)
    assert sorted(int(k.split(".")[0]) for k in ckpt["ip_adapter"]) == sorted(2 * list(range(1, len(names), 2)))
    assert adapter.image_proj.config == tiny_resampler_config()
    loaded = load_instantid_adapter(xl_unet, path, dim_head=8)
    try:
        installed = list(xl_unet.attn_processors.values())
        for key, t in ckpt["ip_adapter"].items():
            index, _, rest = key.partition(".")
            assert torch.equal(installed[int(index)].get_parameter(rest), t), key
        assert not any(isinstance(installed[i], IPAttnProcessor) for i, n in enumerate(names) if n.endswith("attn1.processor"))
    finally:
        loaded.unload()


def test_instantid_pipeline_loads_the_official_file_from_a_path(tmp_path):
    from tiny_sdxl import tiny_components

    from faceanchor.pipelines.instantid_sdxl import InstantIDSDXLPipeline

    comps = tiny_components(tmp_path / "tok")
    pipe = InstantIDSDXLPipeline(**comps)
    names = list(pipe.unet.attn_processors)
    ckpt = _tiny_instantid(pipe.unet, seed=12)
    adapter = pipe.load_instantid_adapter(O.write_bin(ckpt, tmp_path / "ip-adapter.bin"), scale=0.6, dim_head=8)
    assert pipe.identity_adapter is adapter and adapter.scale == 0.6
    _assert_lands(ckpt, names, adapter.image_proj, adapter.processors)
    installed = list(pipe.unet.attn_processors.values())
    for key, t in ckpt["ip_adapter"].items():
        index, _, rest = key.partition(".")
        assert torch.equal(installed[int(index)].get_parameter(rest), t), key


def _instantid_error(unet, source):
    with pytest.raises(CheckpointError) as err:
        InstantIDAdapter.from_checkpoint(source, unet, dim_head=8)
    return str(err.value)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_instantid_wrong_keys_in_a_file_are_named(xl_unet, tmp_path, suffix):
    base = _tiny_instantid(xl_unet)

    def case(name, mutate):
        c = _copy(base)
        mutate(c)
        return O.write(c, tmp_path / f"{name}{suffix}")

    msg = _instantid_error(xl_unet, case("missing", lambda c: c["ip_adapter"].pop("5.to_k_ip.weight")))
    assert "1 missing (e.g. '5.to_k_ip.weight')" in msg and "processor indices 1, 3, 5, 7, ..., 23" in msg
    msg = _instantid_error(xl_unet, case("self_attn", lambda c: c["ip_adapter"].__setitem__("4.to_k_ip.weight", torch.zeros(64, 64))))
    assert "1 unexpected (e.g. '4.to_k_ip.weight')" in msg
    msg = _instantid_error(xl_unet, case("shape", lambda c: c["ip_adapter"].__setitem__("7.to_v_ip.weight", torch.zeros(64, 32))))
    assert "'7.to_v_ip.weight' expected (64, 64), found (64, 32)" in msg
    msg = _instantid_error(xl_unet, case("proj", lambda c: c["image_proj"].pop("layers.1.1.3.weight")))
    assert "missing (e.g. 'layers.1.1.3.weight')" in msg and "Resampler" in msg
    msg = _instantid_error(xl_unet, case("latents", lambda c: c["image_proj"].pop("latents")))
    assert "not an InstantID Resampler" in msg


def test_instantid_wrong_sections_are_refused(xl_unet, tmp_path):
    base = _tiny_instantid(xl_unet)
    msg = _instantid_error(xl_unet, O.write_bin({**_copy(base), "unet": {"a": torch.zeros(1)}}, tmp_path / "extra.bin"))
    assert "unexpected top-level entries ['unet']" in msg
    assert "not in the IP-Adapter layout" in _instantid_error(xl_unet, O.write_bin({"image_proj": base["image_proj"]}, tmp_path / "only.bin"))
    swapped = {"image_proj": base["ip_adapter"], "ip_adapter": base["image_proj"]}
    assert "not an InstantID Resampler" in _instantid_error(xl_unet, O.write_bin(swapped, tmp_path / "swapped.bin"))
    from safetensors.torch import save_file

    flat = O.flatten(base)
    flat["image_proj_model.latents"] = torch.zeros(1)
    save_file(flat, str(tmp_path / "stray.safetensors"))
    assert "not in the IP-Adapter layout" in _instantid_error(xl_unet, tmp_path / "stray.safetensors")


# ---------------------------------------------------------------------------- full-size names

def _meta_unet(**config):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config)


SD15 = dict(cross_attention_dim=768, attention_head_dim=8)  # diffusers' defaults are the SD1.5 UNet
SDXL = dict(
    block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


def test_full_size_official_names_match_what_the_adapters_build():
    """On real-size SD1.5/SDXL UNets (meta tensors, no memory): the official keys/shapes equal
    those the adapters create, and the cross-attention indices are the released files' (SD1.5:
    1..31 odd, SDXL: 1..139 odd)."""
    from faceanchor.adapters.faceid_projection import MLPProjModel, ProjPlusModel
    from faceanchor.adapters.instantid import OFFICIAL_RESAMPLER
    from faceanchor.adapters.resampler import Resampler

    def shapes(sd):
        return {k: tuple(v.shape) for k, v in sd.items()}

    for cfg, n_procs in ((SD15, 32), (SDXL, 140)):
        unet = _meta_unet(**cfg)
        assert len(unet.attn_processors) == n_procs
        cross_ids = sorted({int(k.split(".")[0]) for k in O.instantid_ip_adapter_shapes(unet)})
        assert cross_ids == list(range(1, n_procs, 2))
        with torch.device("meta"):
            for method in ("faceid", "faceid-portrait"):
                a = FaceIDAdapter.build(unet, method)
                assert shapes(a.state()["ip_adapter"]) == O.faceid_ip_adapter_shapes(unet, lora=method == "faceid")
            ours = InstantIDAdapter.random(unet)
        assert shapes(ours.ip_state_dict()) == O.instantid_ip_adapter_shapes(unet)
    with torch.device("meta"):
        assert shapes(MLPProjModel(768, 512, 4).state_dict()) == O.mlp_proj_shapes(768, 512, 4)
        assert shapes(MLPProjModel(2048, 512, 16).state_dict()) == O.mlp_proj_shapes(2048, 512, 16)
        assert shapes(ProjPlusModel(768, 512, 1280, 4).state_dict()) == O.proj_plus_shapes(768, 512, 1280, 4)
        assert shapes(ProjPlusModel(2048, 512, 1280, 4).state_dict()) == O.proj_plus_shapes(2048, 512, 1280, 4)
        assert shapes(Resampler(OFFICIAL_RESAMPLER).state_dict()) == O.resampler_shapes()
