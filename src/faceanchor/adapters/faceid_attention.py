"""Attention processors of the IP-Adapter-FaceID family.

Math as tencent-ailab/IP-Adapter ``attention_processor_faceid.py`` (``LoRAAttnProcessor2_0``,
``LoRAIPAttnProcessor2_0``) and ``attention_processor.py`` (``IPAttnProcessor2_0``, used by
FaceID-Portrait, which has no LoRA). Parameter names equal the reference's, so the official
``ip_adapter`` state dict keys (``<i>.to_q_lora.down.weight``, ``<i>.to_k_ip.weight``...) load
unchanged when the processors are indexed in ``unet.attn_processors`` order.

The LoRA lives in the processors only: ``attn.to_q(x) + lora_scale × to_q_lora(x)``. The base
``Attention`` weights are read, never written, so removing the processors restores the base
model exactly (see :mod:`faceanchor.adapters.faceid`).

For decoupled cross-attention the UNet's encoder states are ``cat(text, id_tokens)``; the last
``num_tokens`` are split off, attended with ``to_k_ip``/``to_v_ip`` using the same query, and
``scale ×`` that result is added before the output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Module):
    """``up(down(x))`` with optional ``network_alpha / rank`` scaling; keys ``down.weight``, ``up.weight``.

    Same math and initialisation as diffusers' (deprecated) ``LoRALinearLayer``, which the
    reference uses: the input is cast to the LoRA's dtype and the result back to the input's.
    """

    def __init__(self, in_features: int, out_features: int, rank: int = 4, network_alpha: float | None = None):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        self.rank = rank
        self.network_alpha = network_alpha
        nn.init.normal_(self.down.weight, std=1 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        orig = x.dtype
        y = self.up(self.down(x.to(self.down.weight.dtype)))
        if self.network_alpha is not None:
            y = y * (self.network_alpha / self.rank)
        return y.to(orig)


def _heads(x: torch.Tensor, batch: int, heads: int, head_dim: int) -> torch.Tensor:
    return x.view(batch, -1, heads, head_dim).transpose(1, 2)


def _merge(x: torch.Tensor, batch: int, heads: int, head_dim: int) -> torch.Tensor:
    return x.transpose(1, 2).reshape(batch, -1, heads * head_dim)


class _FaceIDProcessorBase(nn.Module):
    """Shared forward. Subclasses decide whether LoRA terms and an identity branch exist."""

    has_lora = False
    has_ip = False

    def __init__(self) -> None:
        super().__init__()
        self.lora_scale = 1.0
        self.scale = 1.0
        self.num_tokens = 4

    def _lora(self, name: str, x: torch.Tensor) -> torch.Tensor | float:
        if not self.has_lora:
            return 0.0
        return self.lora_scale * getattr(self, name)(x)

    def __call__(  # type: ignore[override]
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states) + self._lora("to_q_lora", hidden_states)

        ip_hidden_states = None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        else:
            if self.has_ip:
                end = encoder_hidden_states.shape[1] - self.num_tokens
                encoder_hidden_states, ip_hidden_states = encoder_hidden_states[:, :end], encoder_hidden_states[:, end:]
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        key = attn.to_k(encoder_hidden_states) + self._lora("to_k_lora", encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states) + self._lora("to_v_lora", encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        q = _heads(query, batch_size, attn.heads, head_dim)
        k = _heads(key, batch_size, attn.heads, head_dim)
        v = _heads(value, batch_size, attn.heads, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        hidden_states = _merge(out, batch_size, attn.heads, head_dim).to(q.dtype)

        if ip_hidden_states is not None:
            ip_k = _heads(self.to_k_ip(ip_hidden_states), batch_size, attn.heads, head_dim)
            ip_v = _heads(self.to_v_ip(ip_hidden_states), batch_size, attn.heads, head_dim)
            ip_out = F.scaled_dot_product_attention(q, ip_k, ip_v, attn_mask=None, dropout_p=0.0, is_causal=False)
            ip_out = _merge(ip_out, batch_size, attn.heads, head_dim).to(q.dtype)
            hidden_states = hidden_states + self.scale * ip_out

        hidden_states = attn.to_out[0](hidden_states) + self._lora("to_out_lora", hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class LoRAAttnProcessor(_FaceIDProcessorBase):
    """Self-attention with rank-``rank`` LoRA on q, k, v and out (FaceID's ``attn1`` layers)."""

    has_lora = True

    def __init__(
        self,
        hidden_size: int,
        cross_attention_dim: int | None = None,
        rank: int = 128,
        network_alpha: float | None = None,
        lora_scale: float = 1.0,
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.cross_attention_dim = cross_attention_dim
        self.rank = rank
        self.lora_scale = lora_scale
        kv_in = cross_attention_dim or hidden_size
        self.to_q_lora = LoRALinear(hidden_size, hidden_size, rank, network_alpha)
        self.to_k_lora = LoRALinear(kv_in, hidden_size, rank, network_alpha)
        self.to_v_lora = LoRALinear(kv_in, hidden_size, rank, network_alpha)
        self.to_out_lora = LoRALinear(hidden_size, hidden_size, rank, network_alpha)


class LoRAIPAttnProcessor(LoRAAttnProcessor):
    """Cross-attention with LoRA plus the decoupled identity branch (``to_k_ip``, ``to_v_ip``)."""

    has_ip = True

    def __init__(
        self,
        hidden_size: int,
        cross_attention_dim: int | None = None,
        rank: int = 128,
        network_alpha: float | None = None,
        lora_scale: float = 1.0,
        scale: float = 1.0,
        num_tokens: int = 4,
    ):
        super().__init__(hidden_size, cross_attention_dim, rank, network_alpha, lora_scale)
        self.scale = scale
        self.num_tokens = num_tokens
        self.to_k_ip = nn.Linear(cross_attention_dim or hidden_size, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim or hidden_size, hidden_size, bias=False)


class IPAttnProcessor(_FaceIDProcessorBase):
    """Decoupled identity cross-attention without LoRA (FaceID-Portrait)."""

    has_ip = True

    def __init__(self, hidden_size: int, cross_attention_dim: int | None = None, scale: float = 1.0, num_tokens: int = 16):
        super().__init__()
        self.hidden_size = hidden_size
        self.cross_attention_dim = cross_attention_dim
        self.scale = scale
        self.num_tokens = num_tokens
        self.to_k_ip = nn.Linear(cross_attention_dim or hidden_size, hidden_size, bias=False)
        self.to_v_ip = nn.Linear(cross_attention_dim or hidden_size, hidden_size, bias=False)
