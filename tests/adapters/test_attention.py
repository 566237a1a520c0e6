"""IP decoupled cross-attention: against a formula-level reference, region mask, install/restore."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from faceanchor.adapters.attention import (
    IPAttnProcessor,
    cross_attention_layers,
    install_processors,
    region_mask_for_sequence,
    restore_processors,
)


def _layer(seed=0, query_dim=32, cross_dim=24, heads=4, dim_head=8):
    torch.manual_seed(seed)
    attn = Attention(query_dim=query_dim, cross_attention_dim=cross_dim, heads=heads, dim_head=dim_head).eval()
    proc = IPAttnProcessor(heads * dim_head, cross_dim, num_tokens=4, scale=0.6)
    with torch.no_grad():
        proc.to_k_ip.weight.normal_(0, 0.3)
        proc.to_v_ip.weight.normal_(0, 0.3)
    return attn, proc


def _reference(attn, proc, x, text, ip, scale, token_mask=None):
    """Straight from the formula, in float64:
    out = to_out( softmax(q k_t^T / sqrt(d)) v_t + scale * mask * softmax(q k_ip^T / sqrt(d)) v_ip )."""
    d64 = lambda t: t.detach().double()  # noqa: E731
    x, text, ip = d64(x), d64(text), d64(ip)
    h = attn.heads
    q = x @ d64(attn.to_q.weight).T
    kt, vt = text @ d64(attn.to_k.weight).T, text @ d64(attn.to_v.weight).T
    ki, vi = ip @ d64(proc.to_k_ip.weight).T, ip @ d64(proc.to_v_ip.weight).T

    def heads_attn(q, k, v):
        b, n, c = q.shape
        d = c // h
        qh = q.view(b, n, h, d).permute(0, 2, 1, 3)
        kh = k.view(b, -1, h, d).permute(0, 2, 1, 3)
        vh = v.view(b, -1, h, d).permute(0, 2, 1, 3)
        w = torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(d), dim=-1)
        return (w @ vh).permute(0, 2, 1, 3).reshape(b, n, c)

    ip_part = heads_attn(q, ki, vi)
    if token_mask is not None:
        ip_part = ip_part * d64(token_mask).view(1, -1, 1)
    mixed = heads_attn(q, kt, vt) + scale * ip_part
    return mixed @ d64(attn.to_out[0].weight).T + d64(attn.to_out[0].bias)


def test_processor_matches_formula():
    attn, proc = _layer()
    attn.set_processor(proc)
    x, text, ip = torch.randn(2, 16, 32), torch.randn(2, 7, 24), torch.randn(2, 4, 24)
    out = attn(x, encoder_hidden_states=torch.cat([text, ip], dim=1))
    ref = _reference(attn, proc, x, text, ip, 0.6)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    # the identity part matters: a different scale gives a different result
    proc.scale = 1.3
    out2 = attn(x, encoder_hidden_states=torch.cat([text, ip], dim=1))
    assert torch.allclose(out2.double(), _reference(attn, proc, x, text, ip, 1.3), atol=1e-5)
    assert (out2 - out).abs().max() > 1e-3


def test_scale_zero_is_exactly_plain_attention_on_text():
    attn, proc = _layer(1)
    x, text, ip = torch.randn(1, 16, 32), torch.randn(1, 5, 24), torch.randn(1, 4, 24)
    attn.set_processor(AttnProcessor2_0())
    plain = attn(x, encoder_hidden_states=text)
    proc.scale = 0.0
    attn.set_processor(proc)
    assert torch.equal(attn(x, encoder_hidden_states=torch.cat([text, ip], dim=1)), plain)


def test_region_mask_confines_identity_to_the_face():
    attn, proc = _layer(2)
    attn.set_processor(proc)
    x, text, ip = torch.randn(2, 16, 32), torch.randn(2, 6, 24), torch.randn(2, 4, 24)
    enc = torch.cat([text, ip], dim=1)
    mask = torch.zeros(32, 32)
    mask[8:24, 16:32] = 1.0  # image-resolution mask; the layer sees a 4x4 token grid (ratio 8)
    token_mask = mask[::8, ::8].reshape(-1)  # nearest with scale 1/8 samples every 8th pixel
    proc.region_mask = mask
    masked = attn(x, encoder_hidden_states=enc)
    assert torch.allclose(masked.double(), _reference(attn, proc, x, text, ip, 0.6, token_mask), atol=1e-5)
    proc.region_mask, proc.scale = None, 0.0
    text_only = attn(x, encoder_hidden_states=enc)
    outside, inside = token_mask == 0, token_mask == 1
    assert outside.any() and inside.any()
    # outside the face the identity contribution is exactly zero
    assert torch.equal(masked[:, outside], text_only[:, outside])
    assert (masked[:, inside] - text_only[:, inside]).abs().min() > 0


def test_region_mask_resampling_matches_nearest_grid():
    mask = torch.arange(64 * 48, dtype=torch.float32).view(64, 48)
    got = region_mask_for_sequence(mask, 8 * 6)
    assert got.shape == (1, 48, 1)
    assert torch.equal(got.view(8, 6), mask[::8, ::8])
    with pytest.raises(ValueError, match="cannot be mapped"):
        region_mask_for_sequence(mask, 7)


def test_too_few_encoder_tokens_is_an_error():
    attn, proc = _layer(3)
    attn.set_processor(proc)
    with pytest.raises(ValueError, match="identity tokens"):
        attn(torch.randn(1, 16, 32), encoder_hidden_states=torch.randn(1, 4, 24))


def test_official_indices_count_self_attention_processors():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tiny_sdxl import tiny_unet

    unet = tiny_unet()
    names = list(unet.attn_processors)
    layers = cross_attention_layers(unet)
    assert [layer.name for layer in layers] == [n for n in names if n.endswith("attn2.processor")]
    assert [layer.index for layer in layers] == [names.index(layer.name) for layer in layers]
    assert all(i % 2 == 1 for i in (layer.index for layer in layers))  # attn1, attn2 alternate: 1, 3, 5, ...
    assert {layer.cross_attention_dim for layer in layers} == {64}
    originals = dict(unet.attn_processors)
    install_processors(unet, {layers[0].name: IPAttnProcessor(layers[0].hidden_size, 64, num_tokens=4)})
    assert isinstance(unet.attn_processors[layers[0].name], IPAttnProcessor)
    restore_processors(unet, originals)
    assert all(unet.attn_processors[n] is p for n, p in originals.items())
    with pytest.raises(KeyError):
        install_processors(unet, {"nope.processor": AttnProcessor2_0()})
