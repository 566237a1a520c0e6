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

from typing import Any

import torch
from torch import nn

from faceanchor.adapters.attention import DecoupledAttnProcessor, IPAttnProcessor

__all__ = ["IPAttnProcessor", "LoRAAttnProcessor", "LoRAIPAttnProcessor", "LoRALinear"]


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


class LoRAAttnProcessor(DecoupledAttnProcessor):
    """Self-attention with rank-``rank`` LoRA on q, k, v and out (FaceID's ``attn1`` layers).

    The shared forward of :class:`DecoupledAttnProcessor` with LoRA terms in its projection
    hooks: ``attn.to_x(h) + lora_scale × to_x_lora(h)``.
    """

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

    def project_query(self, attn: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        return attn.to_q(hidden_states) + self.lora_scale * self.to_q_lora(hidden_states)

    def project_key_value(self, attn: Any, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            attn.to_k(states) + self.lora_scale * self.to_k_lora(states),
            attn.to_v(states) + self.lora_scale * self.to_v_lora(states),
        )

    def project_out(self, attn: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        return attn.to_out[1](attn.to_out[0](hidden_states) + self.lora_scale * self.to_out_lora(hidden_states))


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
