"""InfiniteYou's projection against an ``image_proj_model.bin`` written in the official layout."""

from __future__ import annotations

import pytest
import torch

from faceanchor.adapters.infiniteyou import (
    OFFICIAL_PROJECTION, identity_tokens, load_projection, projection_state, random_projection, tiny_projection_config,
)
from faceanchor.errors import CheckpointError, ModelNotFoundError
from tests.official_layout import infiniteyou_projection_checkpoint, official_perceiver_forward, resampler_shapes, write_bin

TINY = dict(dim=64, depth=2, dim_head=64, heads=2, num_queries=8, embedding_dim=512, output_dim=48, ff_mult=4)


def test_official_config_matches_the_released_resampler():
    assert OFFICIAL_PROJECTION.to_dict() == dict(dim=1280, depth=4, dim_head=64, heads=20, num_queries=8,
                                                 embedding_dim=512, output_dim=4096, ff_mult=4)
    with torch.device("meta"):
        from faceanchor.adapters.resampler import Resampler

        keys = {k: tuple(v.shape) for k, v in Resampler(OFFICIAL_PROJECTION).state_dict().items()}
    assert keys == resampler_shapes(dim=1280, depth=4, dim_head=64, heads=20, num_queries=8, embedding_dim=512, output_dim=4096, ff_mult=4)


def test_official_layout_file_loads_and_projects_like_the_official_forward(tmp_path):
    ckpt = infiniteyou_projection_checkpoint(**TINY)
    path = write_bin(ckpt, tmp_path / "aes_stage2" / "image_proj_model.bin")
    proj = load_projection(path.parent, output_dim=48, embedding_dim=512)  # the folder finds the file
    assert proj.num_queries == 8 and proj.config.heads == 2 and proj.config.depth == 2
    emb = torch.nn.functional.normalize(torch.randn(2, 512, generator=torch.Generator().manual_seed(1)), dim=-1)
    tokens = identity_tokens(proj, emb)
    expected = official_perceiver_forward(ckpt["image_proj"], emb.reshape(2, -1, 512), heads=2, dim_head=64)
    assert tokens.shape == (2, 8, 48)
    assert torch.allclose(tokens, expected, atol=1e-5)
    assert tokens.std() > 0.1


def test_flattened_layout_and_errors_teach(tmp_path):
    ckpt = infiniteyou_projection_checkpoint(**TINY)
    flat = {f"image_proj.{k}": v for k, v in ckpt["image_proj"].items()}
    assert projection_state(flat).keys() == ckpt["image_proj"].keys()
    with pytest.raises(ModelNotFoundError, match="image_proj_model.bin"):
        load_projection(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="InstantID file"):
        projection_state({"ip_adapter": {"1.to_k_ip.weight": torch.zeros(1)}})
    with pytest.raises(CheckpointError, match="InfuseNet takes 4096"):
        load_projection(ckpt, output_dim=4096)
    with pytest.raises(CheckpointError, match="512-D"):
        load_projection(ckpt, embedding_dim=128)
    broken = dict(ckpt["image_proj"])
    broken.pop("layers.1.1.3.weight")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_projection({"image_proj": broken})
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="could not read"):
        load_projection(bad)


def test_random_projection_is_seeded_and_leaves_the_global_rng():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    a = random_projection(tiny_projection_config(output_dim=16), seed=4)
    b = random_projection(tiny_projection_config(output_dim=16), seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert identity_tokens(a, torch.ones(512)).shape == (1, 8, 16)
