"""FaceID attention processors: one forward against a hand computation, and scale-0 identity."""

from __future__ import annotations

import math

import torch

from faceanchor.adapters.faceid_attention import IPAttnProcessor, LoRAAttnProcessor, LoRAIPAttnProcessor, LoRALinear


def _attn(cross: int | None):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    a = Attention(query_dim=32, cross_attention_dim=cross, heads=4, dim_head=8, bias=False, out_bias=True).eval()
    a.set_processor(AttnProcessor2_0())
    return a


def _fill(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _mha(q, k, v, heads):
    d = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(d * h, d * (h + 1))
        w = torch.softmax(q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(d), dim=-1)
        outs.append(w @ v[..., sl])
    return torch.cat(outs, -1)


def test_lora_ip_processor_matches_hand_computation():
    attn = _attn(cross=24)
    proc = LoRAIPAttnProcessor(hidden_size=32, cross_attention_dim=24, rank=3, num_tokens=4)
    _fill(proc, 1)
    proc.scale, proc.lora_scale = 0.6, 0.8
    x = torch.randn(2, 10, 32)
    text = torch.randn(2, 7, 24)
    ids = torch.randn(2, 4, 24)
    out = proc(attn, x, encoder_hidden_states=torch.cat([text, ids], 1))

    def lora(layer, t):
        return t @ layer.down.weight.T @ layer.up.weight.T

    s, ls = 0.6, 0.8
    q = x @ attn.to_q.weight.T + ls * lora(proc.to_q_lora, x)
    k = text @ attn.to_k.weight.T + ls * lora(proc.to_k_lora, text)
    v = text @ attn.to_v.weight.T + ls * lora(proc.to_v_lora, text)
    h = _mha(q, k, v, 4)
    ip = _mha(q, ids @ proc.to_k_ip.weight.T, ids @ proc.to_v_ip.weight.T, 4)
    h = h + s * ip
    expected = h @ attn.to_out[0].weight.T + attn.to_out[0].bias + ls * lora(proc.to_out_lora, h)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert sorted(proc.state_dict()) == sorted(
        [f"{n}.{p}.weight" for n in ("to_q_lora", "to_k_lora", "to_v_lora", "to_out_lora") for p in ("down", "up")]
        + ["to_k_ip.weight", "to_v_ip.weight"]
    )
    assert proc.to_k_lora.down.weight.shape == (3, 24) and proc.to_k_ip.weight.shape == (32, 24)


def test_lora_self_attention_matches_hand_computation_on_4d_input():
    attn = _attn(cross=None)
    proc = LoRAAttnProcessor(hidden_size=32, rank=5, lora_scale=1.3)
    _fill(proc, 2)
    x4 = torch.randn(1, 32, 3, 4)  # (B, C, H, W) as spatial transformers may pass it
    out = proc(attn, x4)
    x = x4.view(1, 32, 12).transpose(1, 2)

    def lora(layer, t):
        return t @ layer.down.weight.T @ layer.up.weight.T

    q = x @ attn.to_q.weight.T + 1.3 * lora(proc.to_q_lora, x)
    k = x @ attn.to_k.weight.T + 1.3 * lora(proc.to_k_lora, x)
    v = x @ attn.to_v.weight.T + 1.3 * lora(proc.to_v_lora, x)
    h = _mha(q, k, v, 4)
    y = h @ attn.to_out[0].weight.T + attn.to_out[0].bias + 1.3 * lora(proc.to_out_lora, h)
    torch.testing.assert_close(out, y.transpose(1, 2).reshape(1, 32, 3, 4), rtol=1e-4, atol=1e-5)


def test_zero_scales_equal_the_base_processor_exactly():
    attn = _attn(cross=24)
    base = attn.processor
    x, text, ids = torch.randn(2, 10, 32), torch.randn(2, 7, 24), torch.randn(2, 4, 24)
    ref = base(attn, x, encoder_hidden_states=text)
    for proc in (LoRAIPAttnProcessor(32, 24, rank=4, num_tokens=4), IPAttnProcessor(32, 24, num_tokens=4)):
        _fill(proc, 3)
        proc.scale, proc.lora_scale = 0.0, 0.0
        out = proc(attn, x, encoder_hidden_states=torch.cat([text, ids], 1))
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        proc.scale = 1.0
        assert not torch.allclose(proc(attn, x, encoder_hidden_states=torch.cat([text, ids], 1)), ref, atol=1e-4)


def test_ip_processor_uses_the_last_num_tokens_as_identity():
    attn = _attn(cross=24)
    proc = IPAttnProcessor(32, 24, num_tokens=16 * 3)
    _fill(proc, 4)
    x, text, ids = torch.randn(1, 5, 32), torch.randn(1, 7, 24), torch.randn(1, 48, 24)
    out = proc(attn, x, encoder_hidden_states=torch.cat([text, ids], 1))
    q = x @ attn.to_q.weight.T
    h = _mha(q, text @ attn.to_k.weight.T, text @ attn.to_v.weight.T, 4)
    h = h + _mha(q, ids @ proc.to_k_ip.weight.T, ids @ proc.to_v_ip.weight.T, 4)
    torch.testing.assert_close(out, h @ attn.to_out[0].weight.T + attn.to_out[0].bias, rtol=1e-4, atol=1e-5)


def test_lora_linear_matches_diffusers_lora_linear_layer():
    from diffusers.models.lora import LoRALinearLayer

    ours = LoRALinear(12, 20, rank=4, network_alpha=2.0)
    _fill(ours, 5)
    theirs = LoRALinearLayer(12, 20, rank=4, network_alpha=2.0)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(3, 12)
    torch.testing.assert_close(ours(x), theirs(x))
    fresh = LoRALinear(12, 20, rank=4)
    assert torch.count_nonzero(fresh.up.weight) == 0  # training init: the LoRA starts as a no-op
