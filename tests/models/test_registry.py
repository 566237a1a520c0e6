from __future__ import annotations

import pytest

from faceanchor.errors import InvalidInputError
from faceanchor.methods.registry import get, methods, model_registry
from faceanchor.models.registry import ModelFile, base_config_files, default_registry


def _faceid_checkpoints() -> set[str]:
    return {n for m in methods() if m.app == "faceid" for n in m.checkpoints.values()}


def test_instantid_entries_match_official_readme():
    reg = default_registry()
    idn = reg.get("instantid-identitynet")
    assert idn.repo_id == "InstantX/InstantID"
    assert [f.path for f in idn.files] == ["ControlNetModel/config.json", "ControlNetModel/diffusion_pytorch_model.safetensors"]
    assert idn.subfolder == "ControlNetModel" and idn.space == "antelopev2" and idn.family == "sdxl"
    ad = reg.get("instantid-adapter")
    assert [f.path for f in ad.files] == ["ip-adapter.bin"] and ad.space == "antelopev2"
    assert reg.get("sdxl-base").repo_id == "stabilityai/stable-diffusion-xl-base-1.0"
    assert reg.get("lcm-lora-sdxl").repo_id == "latent-consistency/lcm-lora-sdxl"


def test_faceid_family_files():
    reg = model_registry()
    names = {reg.get(n).files[0].path for n in _faceid_checkpoints()}
    assert names == {
        "ip-adapter-faceid_sd15.bin",
        "ip-adapter-faceid_sdxl.bin",
        "ip-adapter-faceid-plus_sd15.bin",
        "ip-adapter-faceid-plusv2_sd15.bin",
        "ip-adapter-faceid-plusv2_sdxl.bin",
        "ip-adapter-faceid-portrait_sd15.bin",
        "ip-adapter-faceid-portrait_sdxl.bin",
        "ip-adapter-faceid-portrait_sdxl_unnorm.bin",
    }
    for n in _faceid_checkpoints():
        spec = reg.get(n)
        assert spec.repo_id == "h94/IP-Adapter-FaceID" and spec.space == "buffalo_l"
    assert reg.get("clip-vit-h").repo_id == "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
    assert reg.get("faceid-sd15").files[1].required is False  # the webui LoRA file is optional


def test_candidates_prefer_safetensors():
    assert ModelFile("ip-adapter.bin").candidates() == ("ip-adapter.safetensors", "ip-adapter.bin")
    assert ModelFile("te/pytorch_model.bin").candidates() == ("te/model.safetensors", "te/pytorch_model.bin")
    f = ModelFile("unet/diffusion_pytorch_model.safetensors", alternatives=("unet/diffusion_pytorch_model.bin",))
    assert f.candidates() == ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin")
    assert ModelFile("config.json").candidates() == ("config.json",)


def test_each_methods_models_and_helpers():
    reg = model_registry()
    inst = [reg.get(n) for n in get("instantid").model_names("sdxl")]
    names = [s.name for s in inst]
    assert {"instantid-identitynet", "instantid-adapter", "sdxl-base", "antelopev2"} <= set(names)
    assert "sd15-base" not in names
    assert "controlnet-pose-sdxl" in names and reg.get("controlnet-pose-sdxl").optional
    plus = set(get("faceid-plusv2").model_names("sdxl"))
    assert {"faceid-plusv2-sdxl", "clip-vit-h", "sdxl-base", "buffalo_l"} <= plus and "faceid-plusv2-sd15" not in plus
    assert "clip-vit-h" not in get("faceid").model_names("sd15") and "clip-vit-h" not in get("faceid-portrait").model_names()
    assert get("faceid").checkpoints["sd15"] == "faceid-sd15"
    assert get("faceid-portrait").checkpoints["sdxl"] == "faceid-portrait-sdxl"
    assert get("instantid").space == "antelopev2" and get("faceid").space == "buffalo_l"
    assert "unet/config.json" in base_config_files("sdxl") and "tokenizer_2/vocab.json" in base_config_files("sdxl")
    assert not any(p.endswith(".safetensors") for p in base_config_files("sd15"))


def test_unknown_model_suggests():
    with pytest.raises(InvalidInputError, match="did you mean instantid-adapter"):
        default_registry().get("instantid-adaptr")
