"""Identity projections of the IP-Adapter-FaceID family.

Math and parameter names follow tencent-ailab/IP-Adapter (``ip_adapter_faceid.py`` and
``resampler.py``) so the official ``image_proj`` state dicts load key for key:

- :class:`MLPProjModel` (FaceID, and Portrait with 16 tokens): ``Linear(D, 2D) → GELU →
  Linear(2D, tokens × C)``, reshaped to ``(B, tokens, C)`` and layer-normalised over ``C``.
- :class:`ProjPlusModel` (Plus / PlusV2): the same MLP gives 4 query tokens that a
  :class:`FacePerceiverResampler` refines against CLIP penultimate hidden states; PlusV2 adds the
  shortcut ``tokens + s_scale × resampler_out``.

Pure torch modules; nothing here knows about faces or pipelines.
"""

from __future__ import annotations

import torch
from torch import nn

from faceanchor.adapters.resampler import PerceiverAttention, perceiver_feed_forward

__all__ = ["FacePerceiverResampler", "MLPProjModel", "PerceiverAttention", "ProjPlusModel", "perceiver_feed_forward"]


class FacePerceiverResampler(nn.Module):
    """Perceiver whose queries are given (the MLP's identity tokens) instead of learned."""

    def __init__(
        self,
        *,
        dim: int = 768,
        depth: int = 4,
        dim_head: int = 64,
        heads: int = 16,
        embedding_dim: int = 1280,
        output_dim: int = 768,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.proj_in = nn.Linear(embedding_dim, dim)
        self.proj_out = nn.Linear(dim, output_dim)
        self.norm_out = nn.LayerNorm(output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads), perceiver_feed_forward(dim, ff_mult)])
            for _ in range(depth)
        )

    def forward(self, latents: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class MLPProjModel(nn.Module):
    """Face embedding ``(B, D)`` → ``(B, num_tokens, cross_attention_dim)`` identity tokens."""

    def __init__(self, cross_attention_dim: int = 768, id_embeddings_dim: int = 512, num_tokens: int = 4):
        super().__init__()
        self.cross_attention_dim = cross_attention_dim
        self.id_embeddings_dim = id_embeddings_dim
        self.num_tokens = num_tokens
        self.proj = nn.Sequential(
            nn.Linear(id_embeddings_dim, id_embeddings_dim * 2),
            nn.GELU(),
            nn.Linear(id_embeddings_dim * 2, cross_attention_dim * num_tokens),
        )
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, id_embeds: torch.Tensor) -> torch.Tensor:
        x = self.proj(id_embeds).reshape(-1, self.num_tokens, self.cross_attention_dim)
        return self.norm(x)


class ProjPlusModel(MLPProjModel):
    """FaceID-Plus projection: MLP tokens refined by a perceiver over CLIP hidden states.

    ``forward(id_embeds, clip_embeds, shortcut, scale)``: without ``shortcut`` (Plus) the output
    is the resampler's; with it (PlusV2) ``tokens + scale × resampler_out``.
    """

    def __init__(
        self,
        cross_attention_dim: int = 768,
        id_embeddings_dim: int = 512,
        clip_embeddings_dim: int = 1280,
        num_tokens: int = 4,
    ):
        super().__init__(cross_attention_dim, id_embeddings_dim, num_tokens)  # proj + norm: the MLP's tokens
        self.clip_embeddings_dim = clip_embeddings_dim
        self.perceiver_resampler = FacePerceiverResampler(
            dim=cross_attention_dim,
            depth=4,
            dim_head=64,
            heads=cross_attention_dim // 64,
            embedding_dim=clip_embeddings_dim,
            output_dim=cross_attention_dim,
            ff_mult=4,
        )

    def forward(
        self, id_embeds: torch.Tensor, clip_embeds: torch.Tensor, shortcut: bool = False, scale: float = 1.0
    ) -> torch.Tensor:
        x = super().forward(id_embeds)
        out = self.perceiver_resampler(x, clip_embeds)
        if shortcut:
            out = x + scale * out
        return out
