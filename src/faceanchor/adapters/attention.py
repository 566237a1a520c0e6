"""Decoupled cross-attention (IP-Adapter) processors and their install / restore on a UNet.

The math is the one of the official IP-Adapter / InstantID ``IPAttnProcessor2_0``:

* the UNet's encoder states of a cross-attention layer are ``cat(text_tokens, id_tokens)``;
  the **last** ``num_tokens`` tokens are the identity tokens, everything before is text;
* text attention is the layer's own attention (``to_q``/``to_k``/``to_v``, optional
  ``norm_cross`` on the text part only, the text attention mask);
* identity attention reuses the same query and attends to the identity tokens through this
  processor's own ``to_k_ip`` / ``to_v_ip`` (no bias, no mask);
* optionally the identity result is multiplied by a region mask (InstantID's
  ``enhance_face_region``), then ``hidden = text + scale * identity`` before ``to_out``.

Self-attention layers keep their processors: identity tokens only enter cross-attention.

Reusable by every IP-Adapter flavour (InstantID 16 tokens, FaceID 4, Portrait 80): give
``num_tokens`` and ``scale``; subclass and override :meth:`IPAttnProcessor.project_query` /
``project_text`` hooks if a flavour needs LoRA on the base projections.

Checkpoint indices: the official loaders build ``ModuleList(unet.attn_processors.values())``
and load ``"<i>.to_k_ip.weight"`` into it, so ``<i>`` counts **every** processor of the UNet
in ``attn_processors`` order, self-attention ones included (SDXL: 1, 3, 5, ...).
:func:`cross_attention_layers` yields exactly those indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


def is_cross_attention_name(name: str) -> bool:
    """The official rule: a processor is a cross-attention one unless its name ends in
    ``attn1.processor`` (``attn1`` is the self-attention of every transformer block)."""
    return not name.endswith("attn1.processor")


@dataclass(frozen=True)
class CrossAttentionLayer:
    """One cross-attention layer of a UNet as the official checkpoints index it."""

    index: int  # position in unet.attn_processors (self-attention included)
    name: str  # the processor name, e.g. "mid_block.attentions.0.transformer_blocks.0.attn2.processor"
    hidden_size: int  # width of the layer's query (out_features of to_k_ip / to_v_ip)
    cross_attention_dim: int  # width of the encoder states (in_features of to_k_ip / to_v_ip)


def cross_attention_layers(unet: Any) -> list[CrossAttentionLayer]:
    """The UNet's cross-attention layers with their official checkpoint index and sizes.

    Sizes are read from the layer itself (``to_q.out_features``, ``to_k.in_features``), which
    equals the official ``block_out_channels`` rule for SD1.5 and SDXL UNets.
    """
    out: list[CrossAttentionLayer] = []
    for index, name in enumerate(unet.attn_processors.keys()):
        if not is_cross_attention_name(name):
            continue
        attn = unet.get_submodule(name[: -len(".processor")])
        out.append(
            CrossAttentionLayer(
                index=index,
                name=name,
                hidden_size=int(attn.to_q.out_features),
                cross_attention_dim=int(attn.to_k.in_features),
            )
        )
    return out


def region_mask_for_sequence(region_mask: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Resample an image-resolution mask ``(H, W)`` to a layer's token grid, as ``(1, seq_len, 1)``
    (a batch of per-sample masks ``(N, H, W)``: ``(N, seq_len, 1)``).

    Same computation as the official region control: ``ratio = sqrt(H*W / seq_len)`` and
    nearest-neighbour interpolation with ``scale_factor = 1 / ratio``. When the float ratio
    does not land on a whole grid (sizes not multiples of the UNet's stride), the grid size is
    taken by rounding instead of failing.
    """
    h, w = region_mask.shape[-2:]
    grid = region_mask[None, None] if region_mask.ndim == 2 else region_mask[:, None]  # (N, H, W): one mask per sample
    n = grid.shape[0]
    ratio = (h * w / seq_len) ** 0.5
    mask = F.interpolate(grid, scale_factor=1 / ratio, mode="nearest")
    if mask.numel() != n * seq_len:
        mask = F.interpolate(grid, size=(round(h / ratio), round(w / ratio)), mode="nearest")
    if mask.numel() != n * seq_len:
        raise ValueError(f"region mask {h}x{w} cannot be mapped onto {seq_len} attention tokens")
    return mask.reshape([n, -1, 1])


class DecoupledAttnProcessor(nn.Module):
    """The attention forward every adapter processor shares (diffusers ``AttnProcessor2_0`` math).

    Subclasses change the projections through three hooks (:meth:`project_query`,
    :meth:`project_key_value`, :meth:`project_out`; e.g. LoRA terms) and, when ``has_ip`` is
    true, split the last ``num_tokens`` encoder tokens off as identity tokens attended with
    ``to_k_ip``/``to_v_ip`` and added with ``scale`` (optionally masked by ``region_mask``).
    """

    has_ip = False

    def __init__(self, num_tokens: int = 4, scale: float = 1.0):
        super().__init__()
        self.num_tokens = int(num_tokens)
        self.scale = float(scale)
        self.region_mask: torch.Tensor | None = None
        # Set by faceanchor.adapters.kv_cache.cross_attention_cache for one generation: the
        # cross-attention keys/values of each encoder-states tensor, computed once, reused by
        # every denoising step (they depend on the prompt and identity tokens only).
        self.kv_cache: dict[int, tuple] | None = None
        # Several identities in one picture (InstantID region control): None is one identity
        # (``scale``, ``region_mask``); else one ``(scale, mask)`` per identity, whose
        # ``num_tokens`` tokens follow the text in that order, each confined to its mask.
        self.identity_groups: list[tuple[float, torch.Tensor | None]] | None = None
        # Set by faceanchor.adapters.attention_slicing.sliced_attention: attend this many query
        # tokens at a time (memory: the attention matrix is chunk × keys, not tokens × keys).
        self.query_chunk: int | None = None

    def _groups(self) -> list[tuple[float, torch.Tensor | None]]:
        return self.identity_groups if self.identity_groups is not None else [(self.scale, self.region_mask)]

    # Hooks for flavours that modify the base projections (e.g. LoRA). Default: the layer's own.
    def project_query(self, attn: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        return attn.to_q(hidden_states)

    def project_key_value(self, attn: Any, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return attn.to_k(states), attn.to_v(states)

    def project_out(self, attn: Any, hidden_states: torch.Tensor) -> torch.Tensor:
        return attn.to_out[1](attn.to_out[0](hidden_states))

    def forward(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **_: Any,
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

        query = self.project_query(attn, hidden_states)

        # Inside a torch.compile'd module the cache stands aside: its per-tensor bookkeeping (id,
        # _version) would break the graph at every cross-attention layer, and the compiled graph
        # fuses the key/value projections anyway.
        use_cache = self.kv_cache is not None and not torch.compiler.is_compiling()
        cached = None
        if encoder_hidden_states is not None and use_cache:
            cached = self._cached(encoder_hidden_states)
        if cached is not None:
            key, value, ip_kv = cached
            return self._attend(attn, query, key, value, ip_kv, attention_mask, batch_size, residual, input_ndim)

        source = encoder_hidden_states
        ip_tokens: torch.Tensor | None = None
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        else:
            if self.has_ip:
                n_id = self.num_tokens * len(self._groups())
                if encoder_hidden_states.shape[1] <= n_id:
                    raise ValueError(
                        f"cross-attention got {encoder_hidden_states.shape[1]} encoder tokens but expects text tokens "
                        f"followed by {n_id} identity tokens"
                    )
                end = encoder_hidden_states.shape[1] - n_id
                encoder_hidden_states, ip_tokens = encoder_hidden_states[:, :end, :], encoder_hidden_states[:, end:, :]
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        key, value = self.project_key_value(attn, encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        ip_kv = None
        if ip_tokens is not None:
            n = self.num_tokens
            ip_kv = [self.identity_key_value(attn, ip_tokens[:, j * n : (j + 1) * n], batch_size, head_dim)
                     for j in range(ip_tokens.shape[1] // n)]
        if use_cache and source is not None:
            self.kv_cache[id(source)] = (source, source._version, self._cache_tag(), key, value, ip_kv)
        return self._attend(attn, query, key, value, ip_kv, attention_mask, batch_size, residual, input_ndim)

    def _cache_tag(self) -> Any:
        """What besides the encoder states the keys/values depend on (LoRA flavours: their scale)."""
        return getattr(self, "lora_scale", None), len(self._groups())

    def _cached(self, states: torch.Tensor) -> tuple | None:
        """This tensor's keys/values from an earlier step, if it is the same, unmodified tensor.

        The entry holds the tensor itself, so its ``id`` cannot be reused by another tensor while
        the entry lives; an in-place change bumps ``_version`` and misses.
        """
        entry = self.kv_cache.get(id(states)) if self.kv_cache is not None else None
        if entry is None or entry[0] is not states or entry[1] != states._version or entry[2] != self._cache_tag():
            return None
        return entry[3], entry[4], entry[5]

    def _attend(
        self, attn: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, ip_kv: list | None,
        attention_mask: torch.Tensor | None, batch_size: int, residual: torch.Tensor, input_ndim: int,
    ) -> torch.Tensor:
        """Attention over head-split keys/values (and the identity ones), output projection, residual."""
        if input_ndim == 4:
            channel, height, width = residual.shape[1], residual.shape[2], residual.shape[3]
        head_dim = key.shape[-1]
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)

        hidden_states = self._sdpa(query, key, value, attention_mask)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)

        # Each identity: its attention, times its region mask, times its scale. A zero scale adds
        # exactly nothing (0 * finite == 0): skip that identity's branch.
        # A per-sample scale (a tensor, one value per batch row: separate requests batched) gives
        # each row what a float scale gives it alone: the product in float32, rounded once.
        for (scale, region), kv in zip(self._groups(), ip_kv or ()):
            per_sample = isinstance(scale, torch.Tensor)
            if not per_sample and scale == 0.0:
                continue
            ip_hidden = self.identity_attention_kv(attn, query, kv, batch_size, head_dim)
            if region is not None:
                mask = region_mask_for_sequence(region, query.shape[-2])
                ip_hidden = ip_hidden * mask.to(device=ip_hidden.device, dtype=ip_hidden.dtype)
            if per_sample:
                scaled = (scale.to(device=ip_hidden.device, dtype=torch.float32).view(-1, 1, 1) * ip_hidden.float()).to(ip_hidden.dtype)
                hidden_states = hidden_states + scaled
            else:
                hidden_states = hidden_states + scale * ip_hidden

        hidden_states = self.project_out(attn, hidden_states)

        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        hidden_states = hidden_states / attn.rescale_output_factor
        return hidden_states

    def _sdpa(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Scaled dot-product attention of head-split tensors; with :attr:`query_chunk`, over
        chunks of that many query tokens (each query row's attention is independent of the
        others, so the result is the unsliced one)."""
        chunk = self.query_chunk
        n = query.shape[-2]
        if not chunk or n <= chunk:
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        rows_masked = mask is not None and mask.shape[-2] != 1  # else the mask broadcasts over the queries
        out = [
            F.scaled_dot_product_attention(
                query[..., i : i + chunk, :], key, value, dropout_p=0.0, is_causal=False,
                attn_mask=mask[..., i : i + chunk, :] if rows_masked else mask,  # type: ignore[index]
            )
            for i in range(0, n, chunk)
        ]
        return torch.cat(out, dim=-2)

    def identity_key_value(
        self, attn: Any, ip_tokens: torch.Tensor, batch_size: int, head_dim: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The identity tokens' head-split keys and values (``to_k_ip`` / ``to_v_ip``)."""
        ip_key = self.to_k_ip(ip_tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        ip_value = self.to_v_ip(ip_tokens).view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        return ip_key, ip_value

    def identity_attention(
        self, attn: Any, query: torch.Tensor, ip_tokens: torch.Tensor, batch_size: int, head_dim: int
    ) -> torch.Tensor:
        """Attention of the (already head-split) query over the identity tokens, ``(B, L, C)``."""
        return self.identity_attention_kv(attn, query, self.identity_key_value(attn, ip_tokens, batch_size, head_dim), batch_size, head_dim)

    def identity_attention_kv(
        self, attn: Any, query: torch.Tensor, ip_kv: tuple[torch.Tensor, torch.Tensor], batch_size: int, head_dim: int
    ) -> torch.Tensor:
        """Attention of the head-split query over the identity keys/values, ``(B, L, C)``."""
        ip_key, ip_value = ip_kv
        ip_hidden = self._sdpa(query, ip_key, ip_value, None)
        ip_hidden = ip_hidden.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        return ip_hidden.to(query.dtype)


class IPAttnProcessor(DecoupledAttnProcessor):
    """Decoupled cross-attention for IP-Adapter-style identity tokens.

    Args:
        hidden_size: width of the layer's attention (``to_q.out_features``).
        cross_attention_dim: width of the encoder states (``to_k.in_features``).
        num_tokens: how many trailing encoder tokens are identity tokens.
        scale: weight of the identity attention (``set_scale`` on the adapter changes it).

    Attributes:
        region_mask: ``None`` or a float ``(H, W)`` tensor at output-image resolution with
            values in [0, 1]; the identity attention output is multiplied by it (resampled to
            each layer's token grid), so identity acts only where the mask is non-zero.
    """

    has_ip = True

    def __init__(self, hidden_size: int, cross_attention_dim: int | None = None, num_tokens: int = 4, scale: float = 1.0):
        super().__init__(num_tokens=num_tokens, scale=scale)
        self.hidden_size = int(hidden_size)
        self.cross_attention_dim = int(cross_attention_dim or hidden_size)
        self.to_k_ip = nn.Linear(self.cross_attention_dim, self.hidden_size, bias=False)
        self.to_v_ip = nn.Linear(self.cross_attention_dim, self.hidden_size, bias=False)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, cross_attention_dim={self.cross_attention_dim}, num_tokens={self.num_tokens}, scale={self.scale}"


@contextmanager
def identity_groups(processors: Iterable[Any], groups: list[tuple[float, torch.Tensor | None]] | None) -> Iterator[None]:
    """Several identities on ``processors`` for a ``with`` block: one ``(scale, (H, W) mask)``
    per identity, in the order their token groups follow the text; None changes nothing."""
    procs = [p for p in processors if isinstance(p, DecoupledAttnProcessor) and p.has_ip]
    for p in procs:
        p.identity_groups = groups
    try:
        yield
    finally:
        for p in procs:
            p.identity_groups = None


def install_processors(unet: Any, new: dict[str, Any]) -> dict[str, Any]:
    """Replace some of the UNet's attention processors; return the originals of every layer.

    Base weights are untouched: processors are separate modules. Pass the returned dict to
    :func:`restore_processors` to put the UNet back exactly as it was.
    """
    originals = dict(unet.attn_processors)
    unknown = sorted(set(new) - set(originals))
    if unknown:
        raise KeyError(f"the UNet has no attention processor named {unknown[0]!r}")
    merged = {name: new.get(name, proc) for name, proc in originals.items()}
    unet.set_attn_processor(merged)
    return originals


def restore_processors(unet: Any, originals: dict[str, Any]) -> None:
    """Put back the processors :func:`install_processors` returned (drops the added modules)."""
    unet.set_attn_processor(dict(originals))


def iter_ip_processors(unet: Any) -> Iterator[IPAttnProcessor]:
    """Every :class:`IPAttnProcessor` (or subclass) installed on the UNet."""
    for proc in unet.attn_processors.values():
        if isinstance(proc, IPAttnProcessor):
            yield proc
