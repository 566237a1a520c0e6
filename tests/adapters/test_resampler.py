"""The InstantID Resampler against a hand-written forward pass (float64, textbook attention)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from faceanchor.adapters.resampler import Resampler, ResamplerConfig, resampler_config_from_state_dict

CFG = ResamplerConfig(dim=32, depth=2, dim_head=8, heads=4, num_queries=6, embedding_dim=20, output_dim=24, ff_mult=4)


def _by_hand(sd: dict, x: torch.Tensor, cfg: ResamplerConfig) -> torch.Tensor:
    sd = {k: v.double() for k, v in sd.items()}
    x = x.double()
    ln = lambda t, p: F.layer_norm(t, (t.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)  # noqa: E731
    b = x.shape[0]
    lat = sd["latents"].expand(b, -1, -1)
    feats = x @ sd["proj_in.weight"].T + sd["proj_in.bias"]
    for i in range(cfg.depth):
        p = f"layers.{i}.0"
        f_n, l_n = ln(feats, p + ".norm1"), ln(lat, p + ".norm2")
        q = l_n @ sd[p + ".to_q.weight"].T
        kv = torch.cat([f_n, l_n], dim=1) @ sd[p + ".to_kv.weight"].T
        inner = cfg.heads * cfg.dim_head
        k, v = kv[..., :inner], kv[..., inner:]
        split = lambda t: t.view(b, -1, cfg.heads, cfg.dim_head).transpose(1, 2)  # noqa: E731
        w = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(cfg.dim_head), dim=-1)
        att = (w @ split(v)).transpose(1, 2).reshape(b, -1, inner)
        lat = att @ sd[p + ".to_out.weight"].T + lat
        p = f"layers.{i}.1"
        hdn = F.gelu(ln(lat, p + ".0") @ sd[p + ".1.weight"].T)
        lat = hdn @ sd[p + ".3.weight"].T + lat
    out = lat @ sd["proj_out.weight"].T + sd["proj_out.bias"]
    return ln(out, "norm_out")


def test_forward_equals_hand_computation():
    torch.manual_seed(0)
    model = Resampler(CFG).eval()
    with torch.no_grad():  # move LayerNorm affine away from the identity so it is exercised
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(3, 2, CFG.embedding_dim)
    with torch.no_grad():
        got = model(x)
    assert got.shape == (3, CFG.num_queries, CFG.output_dim)
    assert torch.allclose(got.double(), _by_hand(model.state_dict(), x, CFG), atol=1e-5)


def test_official_parameter_names_and_init_scale():
    torch.manual_seed(0)
    model = Resampler(ResamplerConfig())  # official InstantID sizes
    keys = set(model.state_dict())
    for i in range(4):
        for name in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "to_q.weight", "to_kv.weight", "to_out.weight"):
            assert f"layers.{i}.0.{name}" in keys
        for name in ("0.weight", "0.bias", "1.weight", "3.weight"):
            assert f"layers.{i}.1.{name}" in keys
    assert {"latents", "proj_in.weight", "proj_in.bias", "proj_out.weight", "proj_out.bias", "norm_out.weight", "norm_out.bias"} <= keys
    assert model.latents.shape == (1, 16, 1280)
    assert abs(model.latents.std().item() - 1280**-0.5) < 2e-3  # randn / sqrt(dim)
    assert model.state_dict()["layers.0.0.to_kv.weight"].shape == (2 * 20 * 64, 1280)
    assert model.state_dict()["layers.0.1.1.weight"].shape == (4 * 1280, 1280)
    assert resampler_config_from_state_dict(model.state_dict(), dim_head=64) == ResamplerConfig()


def test_zero_embedding_still_gives_tokens_deterministically():
    torch.manual_seed(1)
    model = Resampler(CFG).eval()
    z = torch.zeros(2, 1, CFG.embedding_dim)
    with torch.no_grad():
        a, b = model(z), model(z)
    assert torch.equal(a, b) and torch.equal(a[0], a[1])
    assert torch.isfinite(a).all()
