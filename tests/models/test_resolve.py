from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from faceanchor.errors import CheckpointError, InvalidInputError, ModelNotFoundError
from faceanchor.models.registry import ModelFile, base_config_files, default_registry
from faceanchor.models.resolve import (
    find_model,
    hf_cache_dir,
    is_offline,
    pull_model,
    resolve_base,
    resolve_model,
    search_locations,
    verify_model,
)

IDN = {"ControlNetModel/config.json": b'{"a": 1}', "ControlNetModel/diffusion_pytorch_model.safetensors": b"weights"}


def test_env_read_at_call_time(hf_cache):
    assert hf_cache_dir() == hf_cache
    assert is_offline()


def test_hf_cache_layout_resolves(hf_cache, settings, cached):
    snap = cached(hf_cache, "InstantX/InstantID", {**IDN, "ip-adapter.bin": b"adapter"})
    r = resolve_model("instantid-identitynet", settings)
    assert r.source == "hf-cache"
    assert r.root == snap
    assert r.load_dir == snap / "ControlNetModel"
    assert r.path("ControlNetModel/diffusion_pytorch_model.safetensors").read_bytes() == b"weights"
    a = resolve_model("instantid-adapter", settings)
    assert a.path().read_bytes() == b"adapter" and a.path().name == "ip-adapter.bin"


def test_revision_ref_is_followed(hf_cache, settings, cached):
    cached(hf_cache, "InstantX/InstantID", {"ip-adapter.bin": b"old"}, revision="b" * 40, ref="old")
    cached(hf_cache, "InstantX/InstantID", {"ip-adapter.bin": b"new"}, revision="c" * 40)
    assert resolve_model("instantid-adapter", settings).path().read_bytes() == b"new"


def test_missing_model_error_names_repo_files_and_fix(hf_cache, settings):
    with pytest.raises(ModelNotFoundError) as e:
        resolve_model("instantid-identitynet", settings)
    msg = str(e.value)
    assert "InstantX/InstantID" in msg
    assert "ControlNetModel/config.json" in msg and "ControlNetModel/diffusion_pytorch_model.safetensors" in msg
    assert "faceanchor models pull instantid-identitynet" in msg
    assert str(settings.models_dir / "instantid-identitynet") in msg
    assert "HF_HUB_OFFLINE" in msg
    assert "\n" not in msg


def test_partial_cache_is_missing(hf_cache, settings, cached):
    cached(hf_cache, "InstantX/InstantID", {"ControlNetModel/config.json": b"{}"})
    assert find_model(default_registry().get("instantid-identitynet"), settings) is None


def test_local_dir_wins_over_cache(hf_cache, settings, cached):
    cached(hf_cache, "InstantX/InstantID", {"ip-adapter.bin": b"cache"})
    local = settings.models_dir / "instantid-adapter"
    local.mkdir(parents=True)
    (local / "ip-adapter.bin").write_bytes(b"local")
    r = resolve_model("instantid-adapter", settings)
    assert r.source == "local" and r.path().read_bytes() == b"local"
    # org/repo layout under models_dir works too
    org = settings.models_dir / "h94" / "IP-Adapter-FaceID"
    org.mkdir(parents=True)
    (org / "ip-adapter-faceid_sd15.bin").write_bytes(b"x")
    r2 = resolve_model("faceid-sd15", settings)
    assert r2.root == org and r2.missing_optional == ("ip-adapter-faceid_sd15_lora.safetensors",)


def test_explicit_ref_path_wins(hf_cache, settings, cached, tmp_path):
    cached(hf_cache, "InstantX/InstantID", IDN)
    mine = tmp_path / "my_identitynet"  # the ControlNetModel folder itself
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "diffusion_pytorch_model.safetensors").write_bytes(b"mine")
    r = resolve_model("instantid-identitynet", settings, ref=mine)
    assert r.source == "local" and r.load_dir == mine
    one = tmp_path / "adapter.bin"
    one.write_bytes(b"z")
    assert resolve_model("instantid-adapter", settings, ref=one).path() == one
    with pytest.raises(InvalidInputError, match="needs a folder"):
        resolve_model("instantid-identitynet", settings, ref=one)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="lacks ControlNetModel/config.json"):
        resolve_model("instantid-identitynet", settings, ref=empty)


def test_ref_hub_id_replaces_repo(hf_cache, settings, cached):
    cached(hf_cache, "someone/InstantID-mirror", {"ip-adapter.bin": b"m"})
    r = resolve_model("instantid-adapter", settings, ref="someone/InstantID-mirror")
    assert r.path().read_bytes() == b"m"
    with pytest.raises(ModelNotFoundError, match="neither an existing path"):
        resolve_model("instantid-adapter", settings, ref="./nope/a/b")


def test_safetensors_preferred_when_both_exist(hf_cache, settings, cached):
    cached(hf_cache, "InstantX/InstantID", {"ip-adapter.bin": b"bin", "ip-adapter.safetensors": b"st"})
    r = resolve_model("instantid-adapter", settings)
    assert r.path("ip-adapter.bin").name == "ip-adapter.safetensors"
    cached(hf_cache, "thibaud/controlnet-openpose-sdxl-1.0", {"config.json": b"{}", "diffusion_pytorch_model.bin": b"b"})
    r2 = resolve_model("controlnet-pose-sdxl", settings)
    assert r2.path("diffusion_pytorch_model.safetensors").name == "diffusion_pytorch_model.bin"
    local = settings.models_dir / "clip-vit-h"
    local.mkdir(parents=True)
    for n, b in {"config.json": b"{}", "model.safetensors": b"s", "pytorch_model.bin": b"p"}.items():
        (local / n).write_bytes(b)
    assert resolve_model("clip-vit-h", settings).path("model.safetensors").read_bytes() == b"s"


def test_models_dir_hub_cache_is_searched(hf_cache, settings, cached):
    cached(settings.models_dir / "hub", "latent-consistency/lcm-lora-sdxl", {"pytorch_lora_weights.safetensors": b"l"})
    r = resolve_model("lcm-lora-sdxl", settings)
    assert r.source == "hf-cache" and r.path().read_bytes() == b"l"
    locs = search_locations(default_registry().get("lcm-lora-sdxl"), settings)
    assert [l.found for l in locs] == [False, False, False, True]


def test_no_download_when_offline_or_disabled(hf_cache, settings, monkeypatch):
    import huggingface_hub

    def boom(*a, **k):
        raise AssertionError("network used")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", boom)
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        pull_model("instantid-adapter", settings)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelNotFoundError, match="were not found"):
        resolve_model("instantid-adapter", settings, download=False)


def test_download_path_uses_hf_hub_download(hf_cache, settings, cached, monkeypatch):
    """Online: files come from hf_hub_download into the HF cache; a 404 safetensors falls back to .bin."""
    import huggingface_hub
    import httpx
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    calls = []

    def fake(repo_id, filename, revision=None, cache_dir=None, **_):
        calls.append(filename)
        if filename.endswith(".safetensors"):
            raise RemoteEntryNotFoundError("404", response=httpx.Response(404, request=httpx.Request("HEAD", "http://hub")))
        snap = cached(Path(cache_dir), repo_id, {filename: b"dl"})
        return str(snap / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    r = resolve_model("instantid-adapter", settings)
    assert r.source == "download" and calls == ["ip-adapter.safetensors", "ip-adapter.bin"]
    assert r.path().read_bytes() == b"dl"

    def unreachable(*a, **k):
        raise OSError("Connection refused\nmore")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    with pytest.raises(ModelNotFoundError, match="cannot download ip-adapter.safetensors from x/y: Connection refused;"):
        pull_model(replace(default_registry().get("instantid-adapter"), repo_id="x/y"), settings)

    def no_network(*a, **k):  # what hf_hub_download raises when the hub cannot be reached
        raise LocalEntryNotFoundError("cannot reach")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    with pytest.raises(ModelNotFoundError, match="hub is unreachable"):
        resolve_model("instantid-identitynet", settings)


def test_checksums_verify(hf_cache, settings, cached):
    data = b"adapter bytes"
    good = hashlib.sha256(data).hexdigest()
    cached(hf_cache, "InstantX/InstantID", {"ip-adapter.bin": data})
    spec = default_registry().get("instantid-adapter")
    ok = resolve_model(replace(spec, files=(ModelFile("ip-adapter.bin", sha256=good),)), settings, verify=True)
    [check] = verify_model(ok)
    assert check.status == "ok" and check.sha256 == good
    bad_spec = replace(spec, files=(ModelFile("ip-adapter.bin", sha256="0" * 64),))
    with pytest.raises(CheckpointError, match="sha256"):
        resolve_model(bad_spec, settings, verify=True)
    [unc] = verify_model(resolve_model(spec, settings))
    assert unc.status == "unchecked" and unc.sha256 == good


def test_face_packs(settings):
    reg = default_registry()
    with pytest.raises(ModelNotFoundError, match="antelopev2"):
        resolve_model("antelopev2", settings, download=False)
    d = settings.insightface_root / "models" / "antelopev2"
    d.mkdir(parents=True)
    for n in ("scrfd_10g_bnkps.onnx", "glintr100.onnx"):
        (d / n).write_bytes(b"o")
    r = resolve_model("antelopev2", settings)
    assert r.root == d and set(r.missing_optional) == {"1k3d68.onnx", "2d106det.onnx", "genderage.onnx"}
    b = settings.models_dir / "insightface" / "buffalo_l"
    b.mkdir(parents=True)
    for n in ("det_10g.onnx", "w600k_r50.onnx"):
        (b / n).write_bytes(b"o")
    assert resolve_model("buffalo_l", settings).root == b
    dl = resolve_model("dlib", settings)
    assert dl.source == "package" and dl.path("shape_predictor_5_face_landmarks.dat").is_file()
    assert reg.get("antelopev2").repo_id is None


def _base_dir(root: Path, family: str, weights: bool = True) -> Path:
    for name in base_config_files(family):
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}")
    if weights:
        for comp in ("unet", "vae"):
            (root / comp / "diffusion_pytorch_model.safetensors").write_bytes(b"w")
        for te in ("text_encoder", "text_encoder_2") if family == "sdxl" else ("text_encoder",):
            (root / te / "model.safetensors").write_bytes(b"w")
    return root


def test_resolve_base_variants(hf_cache, settings, cached, tmp_path):
    with pytest.raises(ModelNotFoundError, match="stabilityai/stable-diffusion-xl-base-1.0"):
        resolve_base(None, "sdxl", settings)
    folder = _base_dir(tmp_path / "mybase", "sd15")
    b = resolve_base(folder, "sd15", settings)
    assert b.path == folder and not b.single_file
    single = tmp_path / "model.safetensors"
    single.write_bytes(b"x")
    s = resolve_base(str(single), "sdxl", settings)
    assert s.single_file and s.config_dir is None
    # once the default base's configs are in the cache, single files load offline
    files = {n: b"{}" for n in base_config_files("sdxl")}
    snap = cached(hf_cache, "stabilityai/stable-diffusion-xl-base-1.0", files)
    assert resolve_base(str(single), "sdxl", settings).config_dir == snap
    with pytest.raises(ModelNotFoundError):
        resolve_base(None, "sdxl", settings)  # configs only, no weights
    # a hub id of a fine-tune in the cache
    weights = {
        "unet/diffusion_pytorch_model.safetensors": b"w",
        "vae/diffusion_pytorch_model.safetensors": b"w",
        "text_encoder/model.safetensors": b"w",
        "text_encoder_2/model.safetensors": b"w",
    }
    snap2 = cached(hf_cache, "wangqixun/YamerMIX_v8", {**files, **weights})
    y = resolve_base("wangqixun/YamerMIX_v8", "sdxl", settings)
    assert y.path == snap2 and y.source == "hf-cache"
    with pytest.raises(InvalidInputError, match="model_index.json"):
        resolve_base(tmp_path, "sdxl", settings)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_base("missing.safetensors", "sdxl", settings)
    with pytest.raises(InvalidInputError, match="sdxl or sd15"):
        resolve_base(None, "sd3", settings)
