"""Official IP-Adapter-FaceID checkpoint layout: exact loading and teaching errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import tiny_faceid as T  # noqa: E402

from faceanchor.adapters.faceid import FaceIDAdapter  # noqa: E402
from faceanchor.adapters.faceid_checkpoint import describe_checkpoint, read_faceid_checkpoint  # noqa: E402
from faceanchor.errors import CheckpointError, ModelNotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    return T.build_sd15(tmp_path_factory.mktemp("sd15")).unet


def _reference_hidden_size(unet, name: str) -> int:
    """The reference's rule (ip_adapter_faceid.py set_ip_adapter) for a processor's width."""
    cfg = unet.config
    if name.startswith("mid_block"):
        return cfg.block_out_channels[-1]
    if name.startswith("up_blocks"):
        return list(reversed(cfg.block_out_channels))[int(name[len("up_blocks.")])]
    return cfg.block_out_channels[int(name[len("down_blocks.")])]


def _official_keys(unet, lora: bool, ip_tokens_only: bool = False) -> dict[str, tuple[int, ...]]:
    """Every ``ip_adapter`` key with its shape, as the reference's ModuleList would name it."""
    keys: dict[str, tuple[int, ...]] = {}
    rank = 128
    for i, name in enumerate(unet.attn_processors):
        h = _reference_hidden_size(unet, name)
        cross = None if name.endswith("attn1.processor") else unet.config.cross_attention_dim
        if lora:
            for lname, fin in (("to_q_lora", h), ("to_k_lora", cross or h), ("to_v_lora", cross or h), ("to_out_lora", h)):
                keys[f"{i}.{lname}.down.weight"] = (rank, fin)
                keys[f"{i}.{lname}.up.weight"] = (h, rank)
        if cross is not None:
            keys[f"{i}.to_k_ip.weight"] = (h, cross)
            keys[f"{i}.to_v_ip.weight"] = (h, cross)
    return keys


@pytest.mark.parametrize("method,lora", [("faceid", True), ("faceid-plusv2", True), ("faceid-portrait", False)])
def test_ip_adapter_keys_are_the_official_ones(unet, method, lora):
    a = FaceIDAdapter.build(unet, method, id_dim=512, clip_dim=48)
    got = {k: tuple(v.shape) for k, v in a.state()["ip_adapter"].items()}
    assert got == _official_keys(unet, lora)
    assert "0.to_q_lora.down.weight" in got if lora else "1.to_k_ip.weight" in got


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
@pytest.mark.parametrize("method", ["faceid", "faceid-plus", "faceid-portrait"])
def test_official_layout_with_random_weights_loads_exactly(unet, tmp_path, method, suffix):
    src = FaceIDAdapter.build(unet, method, id_dim=512, clip_dim=48)
    src.randomize(seed=7)
    path = src.save(tmp_path / f"ckpt{suffix}")
    raw = read_faceid_checkpoint(path)
    assert set(raw) == {"image_proj", "ip_adapter"}
    loaded = FaceIDAdapter.from_checkpoint(unet, method, path, clip_dim=48)
    a, b = src.state(), loaded.state()
    for section in ("image_proj", "ip_adapter"):
        assert set(a[section]) == set(b[section]) == set(raw[section])
        for k in a[section]:
            assert torch.equal(a[section][k], b[section][k]), k
    layout = describe_checkpoint(raw)
    assert method in layout.likely_methods and layout.id_dim == 512 and layout.cross_attention_dim == T.CROSS
    assert layout.num_tokens == (16 if method == "faceid-portrait" else 4)


def test_plain_torch_save_of_nested_dict_loads(unet, tmp_path):
    src = FaceIDAdapter.build(unet, "faceid", id_dim=64)
    src.randomize(seed=3)
    torch.save({"image_proj": src.image_proj.state_dict(), "ip_adapter": src.state()["ip_adapter"]}, tmp_path / "x.bin")
    loaded = FaceIDAdapter.from_checkpoint(unet, "faceid", tmp_path / "x.bin")
    assert loaded.id_dim == 64
    assert torch.equal(loaded.image_proj.proj[0].weight, src.image_proj.proj[0].weight)


def _state(unet, method="faceid"):
    a = FaceIDAdapter.build(unet, method, id_dim=512, clip_dim=48)
    return {k: dict(v) for k, v in a.state().items()}


def test_missing_unexpected_and_misshaped_keys_are_named(unet):
    s = _state(unet)
    del s["ip_adapter"]["1.to_v_ip.weight"]
    with pytest.raises(CheckpointError, match=r"1 missing \(e.g. \['1.to_v_ip.weight'\]\)"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", s)
    s = _state(unet)
    s["ip_adapter"]["99.to_k_ip.weight"] = torch.zeros(2, 2)
    with pytest.raises(CheckpointError, match="unexpected.*99.to_k_ip.weight"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", s)
    s = _state(unet)
    s["ip_adapter"]["0.to_q_lora.down.weight"] = torch.zeros(128, 7)
    with pytest.raises(CheckpointError, match="wrong shape.*0.to_q_lora.down.weight"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", s)


def test_wrong_top_level_layout_and_wrong_variant_are_clear(unet, tmp_path):
    s = _state(unet)
    with pytest.raises(CheckpointError, match="exactly 'image_proj'"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", {"image_proj": s["image_proj"]})
    with pytest.raises(CheckpointError, match="exactly 'image_proj'"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", {**s, "extra": {}})
    with pytest.raises(CheckpointError, match="faceid-plus / faceid-plusv2 checkpoint"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", _state(unet, "faceid-plus"))
    with pytest.raises(CheckpointError, match="faceid-portrait checkpoint"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", _state(unet, "faceid-portrait"))
    with pytest.raises(CheckpointError, match="CLIP features"):
        FaceIDAdapter.from_checkpoint(unet, "faceid-plusv2", _state(unet, "faceid-plus"), clip_dim=1280)
    (tmp_path / "junk.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not be read"):
        read_faceid_checkpoint(tmp_path / "junk.bin")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        read_faceid_checkpoint(tmp_path / "absent.bin")
    from safetensors.torch import save_file

    save_file({"foo.bar": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="outside 'image_proj.'"):
        read_faceid_checkpoint(tmp_path / "x.safetensors")


def test_checkpoint_for_another_cross_attention_width_is_refused(unet):
    s = _state(unet)
    wide = {k: v for k, v in s["image_proj"].items()}
    wide["norm.weight"] = torch.ones(2048)
    wide["norm.bias"] = torch.zeros(2048)
    wide["proj.2.weight"] = torch.zeros(4 * 2048, 1024)
    with pytest.raises(CheckpointError, match="2048-wide tokens.*64 wide"):
        FaceIDAdapter.from_checkpoint(unet, "faceid", {"image_proj": wide, "ip_adapter": s["ip_adapter"]})
