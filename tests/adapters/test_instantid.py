"""InstantID adapter: official ip-adapter.bin layout, teaching errors, load/set_scale/unload."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_sdxl import CROSS_DIM, EMBED_DIM, random_official_checkpoint, tiny_resampler_config, tiny_unet  # noqa: E402

from faceanchor.adapters.attention import IPAttnProcessor  # noqa: E402
from faceanchor.adapters.instantid import InstantIDAdapter, load_instantid_adapter  # noqa: E402
from faceanchor.errors import CheckpointError, EmbeddingMismatchError, InvalidInputError, ModelNotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture(scope="module")
def ckpt(unet):
    return random_official_checkpoint(unet)


def _official_resampler_keys(depth: int) -> set[str]:
    """The official ip_adapter/resampler.py parameter names, written out independently."""
    keys = {"latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm_out.weight", "norm_out.bias"}
    for i in range(depth):
        keys |= {f"layers.{i}.0.{n}" for n in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "to_q.weight", "to_kv.weight", "to_out.weight")}
        keys |= {f"layers.{i}.1.{n}" for n in ("0.weight", "0.bias", "1.weight", "3.weight")}
    return keys


def _assert_all_loaded(adapter: InstantIDAdapter, unet, ckpt: dict) -> None:
    proj = adapter.image_proj.state_dict()
    assert set(proj) == set(ckpt["image_proj"]) == _official_resampler_keys(2)
    for k, v in ckpt["image_proj"].items():
        assert torch.equal(proj[k], v), k
    names = list(unet.attn_processors)
    n_cross = sum(1 for n in names if n.endswith("attn2.processor"))
    assert len(ckpt["ip_adapter"]) == 2 * n_cross
    for key, v in ckpt["ip_adapter"].items():
        index, _, param = key.partition(".")
        proc = adapter.processors[names[int(index)]]  # ModuleList(unet.attn_processors.values())[i]
        assert torch.equal(proc.get_parameter(param), v), key
    assert adapter.state_dict()["ip_adapter"].keys() == ckpt["ip_adapter"].keys()


def test_official_bin_layout_loads_every_tensor(unet, ckpt, tmp_path):
    path = tmp_path / "ip-adapter.bin"
    torch.save(ckpt, path)
    adapter = InstantIDAdapter.from_checkpoint(path, unet, scale=0.5, dim_head=8)
    _assert_all_loaded(adapter, unet, ckpt)
    assert adapter.image_proj.config == tiny_resampler_config()
    assert adapter.embedding_dim == EMBED_DIM and adapter.num_tokens == 16 and adapter.scale == 0.5
    assert sorted(int(k.split(".")[0]) for k in ckpt["ip_adapter"])[:3] == [1, 1, 3]


def test_flattened_safetensors_layout_loads(unet, ckpt, tmp_path):
    from safetensors.torch import save_file

    flat = {f"{s}.{k}": v.contiguous() for s in ("image_proj", "ip_adapter") for k, v in ckpt[s].items()}
    path = tmp_path / "ip-adapter.safetensors"
    save_file(flat, str(path))
    _assert_all_loaded(InstantIDAdapter.from_checkpoint(path, unet, dim_head=8), unet, ckpt)


def _mutated(ckpt, section, fn):
    out = {s: dict(v) for s, v in ckpt.items()}
    fn(out[section])
    return out


@pytest.mark.parametrize(
    "section,mutate,needle",
    [
        ("ip_adapter", lambda d: d.pop("3.to_v_ip.weight"), "1 missing (e.g. '3.to_v_ip.weight')"),
        ("ip_adapter", lambda d: d.__setitem__("2.to_k_ip.weight", torch.zeros(64, 64)), "1 unexpected (e.g. '2.to_k_ip.weight')"),
        ("ip_adapter", lambda d: d.__setitem__("1.to_k_ip.weight", torch.zeros(64, 32)), "'1.to_k_ip.weight' expected (64, 64), found (64, 32)"),
        ("image_proj", lambda d: d.pop("layers.1.0.to_out.weight"), "missing (e.g. 'layers.1.0.to_out.weight')"),
        ("image_proj", lambda d: d.__setitem__("extra.weight", torch.zeros(1)), "unexpected (e.g. 'extra.weight')"),
    ],
)
def test_wrong_layouts_are_teaching_errors(unet, ckpt, section, mutate, needle):
    with pytest.raises(CheckpointError) as err:
        InstantIDAdapter.from_checkpoint(_mutated(ckpt, section, mutate), unet, dim_head=8)
    assert needle in str(err.value)
    if section == "ip_adapter":
        assert "processor indices 1, 3, 5" in str(err.value)


def test_other_bad_checkpoints(unet, ckpt, tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        InstantIDAdapter.from_checkpoint(tmp_path / "nope.bin", unet)
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="could not read"):
        InstantIDAdapter.from_checkpoint(garbage, unet)
    with pytest.raises(CheckpointError, match="not in the IP-Adapter layout"):
        InstantIDAdapter.from_checkpoint({"state_dict": {"a": torch.zeros(1)}}, unet)
    bad_out = _mutated(ckpt, "image_proj", lambda d: d.update({"proj_out.weight": torch.zeros(32, 32), "proj_out.bias": torch.zeros(32)}))
    with pytest.raises(CheckpointError, match="cross-attention width is 64"):
        InstantIDAdapter.from_checkpoint(bad_out, unet, dim_head=8)
    with pytest.raises(CheckpointError, match="not an InstantID Resampler"):
        InstantIDAdapter.from_checkpoint(_mutated(ckpt, "image_proj", lambda d: d.pop("latents")), unet, dim_head=8)


def test_embedding_dimension_checks(unet, ckpt):
    with pytest.raises(EmbeddingMismatchError, match="expects 128-D identity embeddings but the encoder gives 512-D"):
        InstantIDAdapter.from_checkpoint(ckpt, unet, dim_head=8, embedding_dim=512)
    adapter = InstantIDAdapter.from_checkpoint(ckpt, unet, dim_head=8, embedding_dim=EMBED_DIM)
    with pytest.raises(EmbeddingMismatchError, match="expects 128-D identity embeddings, got 512-D"):
        adapter.project(torch.randn(512))
    with pytest.raises(EmbeddingMismatchError, match="NaN"):
        adapter.project(torch.full((EMBED_DIM,), float("nan")))
    tokens = adapter.project(torch.randn(3, EMBED_DIM))
    assert tokens.shape == (3, 16, CROSS_DIM)


def test_load_unload_restores_unet_exactly(ckpt):
    unet = tiny_unet(seed=3)
    torch.manual_seed(0)
    sample, t = torch.randn(2, 4, 16, 16), torch.tensor(10)
    text = torch.randn(2, 7, CROSS_DIM)
    cond = {"text_embeds": torch.randn(2, 32), "time_ids": torch.randn(2, 6)}
    base_state = {k: v.clone() for k, v in unet.state_dict().items()}
    originals = dict(unet.attn_processors)
    with torch.no_grad():
        before = unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=cond).sample

        adapter = load_instantid_adapter(unet, ckpt, scale=0.9, dim_head=8)
        assert sum(isinstance(p, IPAttnProcessor) for p in unet.attn_processors.values()) == len(ckpt["ip_adapter"]) // 2
        ids = adapter.project(torch.randn(1, EMBED_DIM)).expand(2, -1, -1)
        patched = unet(sample, t, encoder_hidden_states=torch.cat([text, ids], dim=1), added_cond_kwargs=cond).sample
        assert (patched - before).abs().max() > 1e-4
        adapter.set_scale(0.0)
        zero = unet(sample, t, encoder_hidden_states=torch.cat([text, ids], dim=1), added_cond_kwargs=cond).sample
        assert torch.equal(zero, before)  # scale 0 adds exactly nothing
        for k, v in base_state.items():  # base weights untouched while loaded
            assert torch.equal(unet.state_dict()[k], v)
        with pytest.raises(InvalidInputError, match="already carries"):
            InstantIDAdapter.from_checkpoint(ckpt, unet, dim_head=8).load(unet)

        adapter.unload()
        after = unet(sample, t, encoder_hidden_states=text, added_cond_kwargs=cond).sample
    assert torch.equal(after, before)
    assert all(unet.attn_processors[n] is p for n, p in originals.items())
    assert set(unet.state_dict()) == set(base_state)
    with pytest.raises(InvalidInputError):
        adapter.set_scale(-1)
    adapter.unload()  # idempotent
