"""The perceiver Resampler that turns an identity embedding into identity tokens.

Same architecture, parameter names (so the official ``image_proj`` state dict loads as is) and
arithmetic as InstantID's ``ip_adapter/resampler.py``:

* ``latents``: ``num_queries`` learned queries of width ``dim`` (initialised ``randn / sqrt(dim)``);
* ``proj_in``: embedding (``embedding_dim``) -> ``dim``;
* ``depth`` blocks, each ``latents = attn(x, latents) + latents`` then
  ``latents = ff(latents) + latents``;
* attention: LayerNorm on the features (``norm1``) and on the latents (``norm2``); queries from
  the latents, keys/values from ``cat(features, latents)``; ``q`` and ``k`` are *both* scaled by
  ``dim_head ** -0.25`` before the product (fp16-stable placement), softmax in float32 and cast
  back, no bias anywhere;
* feed-forward: LayerNorm, Linear(dim, dim*ff_mult, no bias), GELU, Linear(back, no bias);
* ``proj_out`` to ``output_dim`` (the UNet's cross-attention width), then ``norm_out``.

InstantID uses ``dim=1280, depth=4, dim_head=64, heads=20, num_queries=16,
embedding_dim=512, output_dim=2048, ff_mult=4``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int = 1280
    depth: int = 4
    dim_head: int = 64
    heads: int = 20
    num_queries: int = 16
    embedding_dim: int = 512
    output_dim: int = 2048
    ff_mult: int = 4

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def perceiver_feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """``LayerNorm → Linear(no bias) → GELU → Linear(no bias)`` (state-dict keys ``0``, ``1``, ``3``)."""
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(), nn.Linear(inner, dim, bias=False))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(b, n, heads*d)`` -> ``(b, heads, n, d)``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


class PerceiverAttention(nn.Module):
    """Latents attend to ``cat(features, latents)``; q and k both scaled by ``dim_head**-0.25``.

    Shared by InstantID's Resampler and FaceID-Plus's perceiver (the same IP-Adapter block)."""

    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8):
        super().__init__()
        self.dim_head = dim_head
        self.heads = heads
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x)
        latents = self.norm2(latents)
        b, n_latents, _ = latents.shape
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2)).chunk(2, dim=-1)
        q, k, v = (_split_heads(t, self.heads) for t in (q, k, v))
        s = 1 / math.sqrt(math.sqrt(self.dim_head))
        weight = (q * s) @ (k * s).transpose(-2, -1)
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(b, n_latents, -1)
        return self.to_out(out)


class Resampler(nn.Module):
    """Perceiver resampler: ``(B, T, embedding_dim)`` -> ``(B, num_queries, output_dim)``."""

    def __init__(self, config: ResamplerConfig | None = None, **overrides: int):
        super().__init__()
        cfg = config or ResamplerConfig()
        if overrides:
            cfg = ResamplerConfig(**{**cfg.to_dict(), **overrides})
        self.config = cfg
        self.latents = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) / cfg.dim**0.5)
        self.proj_in = nn.Linear(cfg.embedding_dim, cfg.dim)
        self.proj_out = nn.Linear(cfg.dim, cfg.output_dim)
        self.norm_out = nn.LayerNorm(cfg.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=cfg.dim, dim_head=cfg.dim_head, heads=cfg.heads), perceiver_feed_forward(cfg.dim, cfg.ff_mult)])
            for _ in range(cfg.depth)
        )

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    @property
    def num_queries(self) -> int:
        return self.config.num_queries

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        latents = self.latents.repeat(x.size(0), 1, 1)
        x = self.proj_in(x)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


def resampler_config_from_state_dict(state: dict[str, torch.Tensor], *, dim_head: int = 64) -> ResamplerConfig:
    """Read a Resampler's sizes from its weights (``heads`` = inner width / ``dim_head``).

    Raises ``KeyError`` / ``ValueError`` on a state dict that is not a Resampler's; the
    checkpoint reader turns them into a teaching :class:`~faceanchor.errors.CheckpointError`.
    """
    latents = state["latents"]
    if latents.ndim != 3 or latents.shape[0] != 1:
        raise ValueError(f"'latents' should be (1, num_queries, dim), found {tuple(latents.shape)}")
    num_queries, dim = int(latents.shape[1]), int(latents.shape[2])
    embedding_dim = int(state["proj_in.weight"].shape[1])
    output_dim = int(state["proj_out.weight"].shape[0])
    depth = 0
    while f"layers.{depth}.0.to_q.weight" in state:
        depth += 1
    if depth == 0:
        raise KeyError("layers.0.0.to_q.weight")
    inner = int(state["layers.0.0.to_q.weight"].shape[0])
    if inner % dim_head:
        raise ValueError(f"attention width {inner} is not a multiple of dim_head {dim_head}")
    ff_inner = int(state["layers.0.1.1.weight"].shape[0])
    if ff_inner % dim:
        raise ValueError(f"feed-forward width {ff_inner} is not a multiple of dim {dim}")
    return ResamplerConfig(
        dim=dim, depth=depth, dim_head=dim_head, heads=inner // dim_head, num_queries=num_queries,
        embedding_dim=embedding_dim, output_dim=output_dim, ff_mult=ff_inner // dim,
    )
