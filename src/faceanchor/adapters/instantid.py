"""The InstantID identity adapter: Resampler projection + decoupled cross-attention.

Lifecycle, like diffusers' ``IPAdapterMixin``::

    adapter = InstantIDAdapter.from_checkpoint("ip-adapter.bin", unet, scale=0.8)
    adapter.load(unet)          # installs IP processors; base weights untouched
    adapter.set_scale(0.5)
    tokens = adapter.project(embeds)   # (B, T, D) -> (B, 16, cross_attention_dim)
    adapter.unload()            # restores the exact original processors

Identical to the official ``load_ip_adapter_instantid``: Resampler(dim=1280, depth=4,
dim_head=64, heads=20, num_queries=16, embedding_dim=512, output_dim=unet cross-attention
width, ff_mult=4) loaded from ``image_proj``; one :class:`IPAttnProcessor` per cross-attention
layer with ``to_k_ip`` / ``to_v_ip`` from ``ip_adapter["<i>.to_k_ip.weight"]`` where ``<i>``
counts every processor of the UNet. Sizes other than the official ones are read from the
checkpoint (tiny and dummy adapters use the embedding width of their encoder).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from faceanchor.adapters.attention import (
    IPAttnProcessor,
    cross_attention_layers,
    install_processors,
    iter_ip_processors,
    restore_processors,
)
from faceanchor.adapters.checkpoint import check_tensors, read_ip_adapter_checkpoint
from faceanchor.adapters.resampler import Resampler, ResamplerConfig, resampler_config_from_state_dict
from faceanchor.errors import CheckpointError, EmbeddingMismatchError, InvalidInputError

#: The official InstantID projection (output_dim is replaced by the UNet's width).
OFFICIAL_RESAMPLER = ResamplerConfig(dim=1280, depth=4, dim_head=64, heads=20, num_queries=16, embedding_dim=512, output_dim=2048, ff_mult=4)


class InstantIDAdapter:
    """Resampler + one IP processor per cross-attention layer of one UNet."""

    def __init__(self, image_proj: Resampler, processors: dict[str, IPAttnProcessor], layer_index: dict[str, int]):
        """``processors`` and ``layer_index`` are keyed by UNet processor name; the index is the
        official checkpoint number of that layer (see :func:`cross_attention_layers`)."""
        self.image_proj = image_proj.eval()
        self.processors = processors
        self.layer_index = dict(layer_index)
        self._unet: Any = None
        self._originals: dict[str, Any] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: str | Path | Mapping[str, Any],
        unet: Any,
        *,
        scale: float = 0.8,
        dim_head: int = 64,
        embedding_dim: int | None = None,
    ) -> "InstantIDAdapter":
        """Build the adapter for ``unet`` from an ``ip-adapter.bin`` / ``.safetensors`` / state dict.

        Every tensor is accounted for: missing, unexpected or mis-shaped keys raise
        :class:`CheckpointError` saying what was expected and what was found. When
        ``embedding_dim`` is given (the encoder's width) and the checkpoint wants another,
        :class:`EmbeddingMismatchError` is raised.
        """
        sections = read_ip_adapter_checkpoint(checkpoint)
        proj_state, ip_state = sections["image_proj"], sections["ip_adapter"]
        try:
            cfg = resampler_config_from_state_dict(proj_state, dim_head=dim_head)
        except (KeyError, ValueError, IndexError, AttributeError) as exc:
            raise CheckpointError(
                f"the 'image_proj' section is not an InstantID Resampler ({type(exc).__name__}: {exc}); expected "
                f"'latents', 'proj_in.*', 'proj_out.*', 'norm_out.*' and 'layers.<n>.0.*' / 'layers.<n>.1.*'"
            ) from exc
        cross_dim = int(unet.config.cross_attention_dim)
        if cfg.output_dim != cross_dim:
            raise CheckpointError(
                f"the Resampler outputs {cfg.output_dim}-wide tokens but the UNet's cross-attention width is {cross_dim}; "
                f"this adapter was made for another base model (InstantID is SDXL: 2048)"
            )
        if embedding_dim is not None and cfg.embedding_dim != embedding_dim:
            raise EmbeddingMismatchError(
                f"the adapter expects {cfg.embedding_dim}-D identity embeddings but the encoder gives {embedding_dim}-D"
            )
        adapter = cls.build(unet, cfg, scale=scale)
        check_tensors(
            proj_state,
            {k: tuple(v.shape) for k, v in adapter.image_proj.state_dict().items()},
            "the 'image_proj' (Resampler) section",
            f"Resampler read as {cfg}.",
        )
        layers = cross_attention_layers(unet)
        check_tensors(
            ip_state,
            {k: tuple(v.shape) for k, v in adapter.ip_state_dict().items()},
            "the 'ip_adapter' section",
            f"This UNet has {len(layers)} cross-attention layers at processor indices "
            f"{_short([layer.index for layer in layers])}, each needing '<i>.to_k_ip.weight' and '<i>.to_v_ip.weight'.",
        )
        with torch.no_grad():
            adapter.image_proj.load_state_dict(proj_state, strict=True)
            by_index = {layer.index: adapter.processors[layer.name] for layer in layers}
            for key, tensor in ip_state.items():
                index, _, param = key.partition(".")
                proc = by_index[int(index)]
                proc.get_parameter(param).copy_(tensor)
        return adapter

    @classmethod
    def build(cls, unet: Any, config: ResamplerConfig, *, scale: float = 0.8, seed: int = 0) -> "InstantIDAdapter":
        """A freshly initialised adapter: each module's own default init, drawn from a local
        generator seeded with ``seed`` (the global torch RNG is not touched), Resampler first,
        then the processors in the UNet's layer order."""
        from faceanchor.models.dummy import seeded_init

        device, dtype = unet.device, unet.dtype
        layers = cross_attention_layers(unet)
        with seeded_init(seed):
            image_proj = Resampler(config)
            processors = {
                layer.name: IPAttnProcessor(layer.hidden_size, layer.cross_attention_dim, num_tokens=config.num_queries, scale=scale)
                for layer in layers
            }
        image_proj = image_proj.to(device=device, dtype=dtype)
        processors = {name: proc.to(device=device, dtype=dtype) for name, proc in processors.items()}
        return cls(image_proj, processors, {layer.name: layer.index for layer in layers})

    @classmethod
    def random(
        cls, unet: Any, *, embedding_dim: int = 512, config: ResamplerConfig | None = None, scale: float = 0.8, seed: int = 0
    ) -> "InstantIDAdapter":
        """The official-size adapter (or ``config``) with random weights for ``unet``, seeded by ``seed``."""
        base = config or OFFICIAL_RESAMPLER
        cfg = ResamplerConfig(**{**base.to_dict(), "embedding_dim": embedding_dim, "output_dim": int(unet.config.cross_attention_dim)})
        return cls.build(unet, cfg, scale=scale, seed=seed)

    # ------------------------------------------------------------------ checkpoint layout
    def ip_state_dict(self) -> dict[str, torch.Tensor]:
        """``{"<i>.to_k_ip.weight": ..., "<i>.to_v_ip.weight": ...}`` in the official indexing."""
        out: dict[str, torch.Tensor] = {}
        for name, proc in self.processors.items():
            i = self.layer_index[name]
            for key, value in proc.state_dict().items():
                out[f"{i}.{key}"] = value
        return out

    def state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """The official ``ip-adapter.bin`` layout: ``{"image_proj": ..., "ip_adapter": ...}``."""
        return {"image_proj": self.image_proj.state_dict(), "ip_adapter": self.ip_state_dict()}

    # ------------------------------------------------------------------ properties
    @property
    def embedding_dim(self) -> int:
        return self.image_proj.embedding_dim

    @property
    def num_tokens(self) -> int:
        return self.image_proj.num_queries

    @property
    def scale(self) -> float:
        return next(iter(self.processors.values())).scale if self.processors else 0.0

    @property
    def loaded(self) -> bool:
        return self._unet is not None

    # ------------------------------------------------------------------ lifecycle
    def load(self, unet: Any) -> "InstantIDAdapter":
        """Install the processors on ``unet`` (keeping its originals to restore)."""
        if self._unet is not None:
            raise InvalidInputError("this InstantID adapter is already loaded on a UNet; unload it first")
        if any(True for _ in iter_ip_processors(unet)):
            raise InvalidInputError("the UNet already carries IP-Adapter processors; unload the other adapter first")
        self._originals = install_processors(unet, self.processors)
        self._unet = unet
        return self

    def unload(self) -> None:
        """Restore the UNet's original processors exactly (no-op when not loaded)."""
        if self._unet is None:
            return
        self.set_region_mask(None)
        restore_processors(self._unet, self._originals or {})
        self._unet, self._originals = None, None

    def set_scale(self, scale: float) -> None:
        """Weight of the identity attention in every cross-attention layer."""
        scale = float(scale)
        if not scale >= 0.0:
            raise InvalidInputError(f"adapter scale must be >= 0, got {scale}")
        for proc in self.processors.values():
            proc.scale = scale

    @contextmanager
    def sample_scales(self, scales: torch.Tensor | None) -> Iterator[None]:
        """Per-sample scales (one per UNet batch row: separate requests in one batch) for a
        ``with`` block; ``None`` keeps the float scale. The float scale is back afterwards."""
        if scales is None:
            yield
            return
        before = [proc.scale for proc in self.processors.values()]
        for proc in self.processors.values():
            proc.scale = scales
        try:
            yield
        finally:
            for proc, sc in zip(self.processors.values(), before):
                proc.scale = sc

    def set_region_mask(self, mask: torch.Tensor | None) -> None:
        """``(H, W)`` mask in [0, 1] at output resolution confining identity attention (``(N, H, W)``:
        one per UNet batch row), or None."""
        if mask is not None:
            if mask.ndim not in (2, 3):
                raise InvalidInputError(f"region mask must be (H, W) or (N, H, W), got shape {tuple(mask.shape)}")
            mask = mask.to(device=self.image_proj.latents.device, dtype=self.image_proj.latents.dtype)
        for proc in self.processors.values():
            proc.region_mask = mask

    @contextmanager
    def region(self, mask: torch.Tensor | None) -> Iterator[None]:
        """Set the region mask for the duration of a ``with`` block."""
        self.set_region_mask(mask)
        try:
            yield
        finally:
            self.set_region_mask(None)

    @contextmanager
    def identities(self, groups: list[tuple[float, torch.Tensor | None]] | None) -> Iterator[None]:
        """Several identities for a ``with`` block: one ``(adapter scale, (H, W) mask)`` per
        identity, in the order their tokens follow the text (None: the single-identity state)."""
        if groups is not None:
            dev, dt = self.image_proj.latents.device, self.image_proj.latents.dtype
            groups = [(float(sc), m.to(device=dev, dtype=dt) if m is not None else None) for sc, m in groups]
        for proc in self.processors.values():
            proc.identity_groups = groups
        try:
            yield
        finally:
            for proc in self.processors.values():
                proc.identity_groups = None

    # ------------------------------------------------------------------ projection
    def check_embedding(self, embeds: torch.Tensor) -> torch.Tensor:
        """Accept ``(D,)``, ``(B, D)`` or ``(B, T, D)``; return ``(B, T, D)`` or raise EmbeddingMismatchError."""
        if not isinstance(embeds, torch.Tensor):
            embeds = torch.as_tensor(embeds)
        if embeds.ndim == 1:
            embeds = embeds[None, None]
        elif embeds.ndim == 2:
            embeds = embeds[:, None]
        if embeds.ndim != 3 or embeds.shape[-1] != self.embedding_dim:
            got = embeds.shape[-1] if embeds.ndim >= 1 else 0
            raise EmbeddingMismatchError(
                f"the InstantID adapter expects {self.embedding_dim}-D identity embeddings, got {got}-D "
                f"(shape {tuple(embeds.shape)})"
            )
        if not torch.isfinite(embeds).all():
            raise EmbeddingMismatchError("the identity embedding contains NaN or infinite values")
        return embeds

    @torch.no_grad()
    def project(self, embeds: torch.Tensor) -> torch.Tensor:
        """Identity tokens ``(B, num_tokens, cross_attention_dim)`` for embeddings ``(B, T, D)``."""
        embeds = self.check_embedding(embeds)
        p = self.image_proj.latents
        return self.image_proj(embeds.to(device=p.device, dtype=p.dtype))


def _short(values: list[int]) -> str:
    if len(values) <= 6:
        return ", ".join(map(str, values))
    return ", ".join(map(str, values[:4])) + f", ..., {values[-1]}"


def load_instantid_adapter(
    unet: Any, checkpoint: str | Path | Mapping[str, Any], *, scale: float = 0.8, dim_head: int = 64, embedding_dim: int | None = None
) -> InstantIDAdapter:
    """Read ``checkpoint`` for ``unet`` and install it; returns the loaded adapter."""
    return InstantIDAdapter.from_checkpoint(checkpoint, unet, scale=scale, dim_head=dim_head, embedding_dim=embedding_dim).load(unet)
