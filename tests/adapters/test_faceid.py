"""FaceIDAdapter: embeddings checks, identity tokens, install/unload lifecycle."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipelines"))
import tiny_faceid as T  # noqa: E402

from faceanchor.adapters.faceid import FaceIDAdapter, check_embedding_space  # noqa: E402
from faceanchor.adapters.faceid_attention import IPAttnProcessor, LoRAAttnProcessor, LoRAIPAttnProcessor  # noqa: E402
from faceanchor.errors import EmbeddingMismatchError, InvalidInputError  # noqa: E402


@pytest.fixture(scope="module")
def unet(tmp_path_factory):
    return T.build_sd15(tmp_path_factory.mktemp("sd15")).unet


def test_wrong_embedding_dimension_is_an_embedding_mismatch(unet):
    a = FaceIDAdapter.build(unet, "faceid", id_dim=512)
    with pytest.raises(EmbeddingMismatchError, match="size 512 but got shape \\(1, 128\\)"):
        a.project(torch.zeros(1, 128))


def test_too_many_references(unet):
    p = FaceIDAdapter.build(unet, "faceid-portrait", id_dim=512)
    p.project(T.embedding(n=5))
    with pytest.raises(InvalidInputError, match="at most 5 reference faces, got 6"):
        p.project(T.embedding(n=6))
    f = FaceIDAdapter.build(unet, "faceid", id_dim=512)
    with pytest.raises(InvalidInputError, match="one face embedding but got 2"):
        f.project(T.embedding(n=2))


def test_embedding_space_is_checked_when_weights_require_one(unet):
    check_embedding_space("buffalo_l", "buffalo_l")
    check_embedding_space("dlib", None)
    a = FaceIDAdapter.build(unet, "faceid", id_dim=512, required_space="buffalo_l")
    with pytest.raises(EmbeddingMismatchError, match="need 'buffalo_l'.*got 'antelopev2'"):
        a.project(T.embedding(), space="antelopev2")
    a.project(T.embedding(), space="buffalo_l")


def test_unconditional_tokens_are_the_projection_of_zeros(unet):
    a = FaceIDAdapter.build(unet, "faceid", id_dim=512)
    a.randomize(seed=1)
    e = T.embedding()
    cond, uncond = a.project(e)
    torch.testing.assert_close(cond, a.image_proj(e))
    torch.testing.assert_close(uncond, a.image_proj(torch.zeros(1, 512)))
    assert not torch.allclose(cond, uncond)


def test_plus_unconditional_uses_zero_embedding_and_given_zero_image_features(unet):
    a = FaceIDAdapter.build(unet, "faceid-plusv2", id_dim=512, clip_dim=48)
    a.randomize(seed=2)
    e, c, u = T.embedding(), torch.randn(1, 17, 48), torch.randn(1, 17, 48)
    cond, uncond = a.project(e, c, u, s_scale=0.5)
    torch.testing.assert_close(cond, a.image_proj(e, c, shortcut=True, scale=0.5))
    torch.testing.assert_close(uncond, a.image_proj(torch.zeros(1, 512), u, shortcut=True, scale=0.5))
    with pytest.raises(InvalidInputError, match="aligned face crop"):
        a.project(e)
    with pytest.raises(EmbeddingMismatchError, match="CLIP features of width 48"):
        a.project(e, torch.zeros(1, 17, 32), torch.zeros(1, 17, 32))


def test_portrait_tokens_concatenate_16_per_reference(unet):
    a = FaceIDAdapter.build(unet, "faceid-portrait", id_dim=512)
    a.randomize(seed=3)
    e = T.embedding(n=3)
    cond, uncond = a.project(e)
    assert cond.shape == (1, 48, T.CROSS) and uncond.shape == (1, 48, T.CROSS)
    for i in range(3):
        torch.testing.assert_close(cond[:, 16 * i:16 * (i + 1)], a.image_proj(e[i:i + 1]))
    torch.testing.assert_close(uncond[:, :16], uncond[:, 16:32])  # zeros for every reference
    c3, _ = a.project(e[None])  # (1, K, D) as the reference's portrait demo stacks them
    torch.testing.assert_close(c3, cond)


def test_install_replaces_every_processor_like_the_reference_and_unload_restores_objects(unet):
    before = dict(unet.attn_processors)
    weights = {k: v.clone() for k, v in unet.state_dict().items()}
    a = FaceIDAdapter.build(unet, "faceid", id_dim=512)
    a.randomize(seed=4)
    a.install()
    now = unet.attn_processors
    for name, p in now.items():
        expected = LoRAAttnProcessor if name.endswith("attn1.processor") else LoRAIPAttnProcessor
        assert type(p) is expected, name
    with pytest.raises(InvalidInputError, match="installed"):
        FaceIDAdapter.build(unet, "faceid-portrait", id_dim=512)
    a.unload()
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)
    assert {k: v for k, v in unet.state_dict().items()}.keys() == weights.keys()
    assert all(torch.equal(unet.state_dict()[k], w) for k, w in weights.items())

    p = FaceIDAdapter.build(unet, "faceid-portrait", id_dim=512)
    p.install()
    for name, proc in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            assert proc is before[name]  # Portrait has no LoRA: self-attention untouched
        else:
            assert isinstance(proc, IPAttnProcessor)
    p.unload()
    assert all(unet.attn_processors[k] is before[k] for k in before)


def test_scale_setters_reach_the_right_processors(unet):
    a = FaceIDAdapter.build(unet, "faceid", id_dim=512)
    a.set_scale(0.3)
    a.set_lora_scale(0.7)
    a.set_num_tokens(8)
    for name, p in a.processors.items():
        assert p.lora_scale == 0.7
        if not name.endswith("attn1.processor"):
            assert p.scale == 0.3 and p.num_tokens == 8
