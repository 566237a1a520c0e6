"""FaceID projections against hand computations of the reference formulas."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from faceanchor.adapters.faceid_projection import FacePerceiverResampler, MLPProjModel, PerceiverAttention, ProjPlusModel


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_mlp_projection_is_linear_gelu_linear_then_layernorm_per_token():
    torch.manual_seed(0)
    m = MLPProjModel(cross_attention_dim=64, id_embeddings_dim=32, num_tokens=4)
    _randomize(m, 1)
    e = torch.randn(3, 32)
    w1, b1 = m.proj[0].weight, m.proj[0].bias
    w2, b2 = m.proj[2].weight, m.proj[2].bias
    h = F.gelu(e @ w1.T + b1) @ w2.T + b2
    h = h.reshape(3, 4, 64)
    mu = h.mean(-1, keepdim=True)
    var = h.var(-1, unbiased=False, keepdim=True)
    expected = (h - mu) / torch.sqrt(var + 1e-5) * m.norm.weight + m.norm.bias
    out = m(e)
    assert out.shape == (3, 4, 64)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # Official key names (so image_proj state dicts load as they are).
    assert set(m.state_dict()) == {"proj.0.weight", "proj.0.bias", "proj.2.weight", "proj.2.bias", "norm.weight", "norm.bias"}


def test_perceiver_attention_matches_softmax_over_features_and_latents():
    torch.manual_seed(0)
    pa = PerceiverAttention(dim=64, dim_head=16, heads=4)
    _randomize(pa, 2)
    x = torch.randn(2, 7, 64)
    lat = torch.randn(2, 4, 64)
    xn, ln = pa.norm1(x), pa.norm2(lat)
    q = ln @ pa.to_q.weight.T
    kv = torch.cat([xn, ln], dim=1) @ pa.to_kv.weight.T
    k, v = kv[..., :64], kv[..., 64:]
    outs = []
    for h in range(4):
        sl = slice(16 * h, 16 * (h + 1))
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(16), dim=-1)
        outs.append(w @ v[..., sl])
    expected = torch.cat(outs, dim=-1) @ pa.to_out.weight.T
    torch.testing.assert_close(pa(x, lat), expected, rtol=1e-5, atol=1e-5)


def test_plus_projection_shortcut_is_tokens_plus_s_scale_times_resampler():
    torch.manual_seed(0)
    m = ProjPlusModel(cross_attention_dim=128, id_embeddings_dim=32, clip_embeddings_dim=48, num_tokens=4)
    assert m.perceiver_resampler.layers[0][0].heads == 2  # cross_attention_dim // 64
    assert len(m.perceiver_resampler.layers) == 4
    e, c = torch.randn(1, 32), torch.randn(1, 9, 48)
    tokens = m.norm(m.proj(e).reshape(-1, 4, 128))
    res = m.perceiver_resampler(tokens, c)
    torch.testing.assert_close(m(e, c), res)  # Plus: no shortcut, s_scale ignored
    torch.testing.assert_close(m(e, c, shortcut=False, scale=3.0), res)
    torch.testing.assert_close(m(e, c, shortcut=True, scale=0.0), tokens)
    torch.testing.assert_close(m(e, c, shortcut=True, scale=0.7), tokens + 0.7 * res)


def test_face_perceiver_resampler_layer_structure_and_key_names():
    r = FacePerceiverResampler(dim=64, depth=2, dim_head=64, heads=1, embedding_dim=48, output_dim=64)
    keys = set(r.state_dict())
    for k in ("proj_in.weight", "proj_out.bias", "norm_out.weight", "layers.0.0.norm1.weight", "layers.0.0.to_kv.weight",
              "layers.1.0.to_out.weight", "layers.0.1.0.weight", "layers.0.1.1.weight", "layers.0.1.3.weight"):
        assert k in keys, k
    assert "layers.0.1.1.bias" not in keys  # feed-forward linears have no bias
