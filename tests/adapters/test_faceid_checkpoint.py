"""Official IP-Adapter-FaceID checkpoint layout (files from ``tests/official_layout.py``): reading,
describing, exact loading and teaching errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import official_layout as O  # noqa: E402
import tiny_faceid as T  # noqa: E402

from faceanchor.adapters.faceid import FaceIDAdapter  # noqa: E402
from faceanchor.adapters.faceid_checkpoint import describe_checkpoint, read_faceid_checkpoint  # noqa: E402
from faceanchor.errors import CheckpointError, ModelNotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    return T.build_sd15(tmp_path_factory.mktemp("sd15")).unet


@pytest.mark.parametrize("method,lora", [("faceid", True), ("faceid-plusv2", True), ("faceid-portrait", False)])
def test_ip_adapter_keys_are_the_official_ones(unet, method, lora):
    """What our adapter's ``state()`` names equals the official scripts' naming (official_layout)."""
    a = FaceIDAdapter.build(unet, method, id_dim=512, clip_dim=48)
    got = {k: tuple(v.shape) for k, v in a.state()["ip_adapter"].items()}
    assert got == O.faceid_ip_adapter_shapes(unet, lora=lora)
    assert "0.to_q_lora.down.weight" in got if lora else "1.to_k_ip.weight" in got


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
@pytest.mark.parametrize("method", ["faceid", "faceid-plus", "faceid-portrait"])
def test_official_file_is_read_and_described(unet, tmp_path, method, suffix):
    ckpt = O.faceid_checkpoint(unet, method, clip_dim=48, seed=7)
    path = O.write(ckpt, tmp_path / f"ckpt{suffix}")
    raw = read_faceid_checkpoint(path)
    assert set(raw) == {"image_proj", "ip_adapter"}
    for section in raw:
        assert raw[section].keys() == ckpt[section].keys()
        assert all(torch.equal(raw[section][k], v) for k, v in ckpt[section].items())
    layout = describe_checkpoint(raw)
    assert method in layout.likely_methods and layout.id_dim == 512 and layout.cross_attention_dim == T.CROSS
    assert layout.num_tokens == (16 if method == "faceid-portrait" else 4)
    assert layout.clip_dim == (48 if method == "faceid-plus" else None)
    assert layout.lora_rank == (None if method == "faceid-portrait" else 128)


def test_official_file_with_another_embedding_size_loads(unet, tmp_path):
    ckpt = O.faceid_checkpoint(unet, "faceid", id_dim=64, seed=3)
    loaded = FaceIDAdapter.from_checkpoint(unet, "faceid", O.write_bin(ckpt, tmp_path / "x.bin"))
    assert loaded.id_dim == 64
    assert torch.equal(loaded.image_proj.proj[0].weight, ckpt["image_proj"]["proj.0.weight"])


def _state(unet, method="faceid"):
    return O.faceid_checkpoint(unet, method, id_dim=512, clip_dim=48)


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
