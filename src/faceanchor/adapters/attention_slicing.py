"""Attention slicing that keeps the identity processors (setting ``speed_attention_slicing``).

diffusers' ``enable_attention_slicing()`` swaps *every* attention processor of the UNet for its
``SlicedAttnProcessor``, identity processors included (see
:mod:`faceanchor.pipelines.processors`). Here the slicing happens inside faceanchor's own
processors instead: within :func:`sliced_attention` every
:class:`~faceanchor.adapters.attention.DecoupledAttnProcessor` (InstantID's and FaceID's
identity processors, the LoRA ones, the key/value-caching plain ones) attends ``query_chunk``
query tokens at a time, and diffusers' plain ``AttnProcessor2_0`` layers (self-attention,
IdentityNet's) get a :class:`DecoupledAttnProcessor` without identity branch (the same math) for
the scope. Peak attention memory is then ``query_chunk × keys`` per head instead of
``tokens × keys``; each query row's attention does not depend on the others, so outputs equal
the unsliced ones (float rounding aside). On exit every processor is as before.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from faceanchor.adapters.attention import DecoupledAttnProcessor
from faceanchor.adapters.kv_cache import plain_replaceable


@contextmanager
def sliced_attention(*modules: Any, query_chunk: int | None) -> Iterator[int]:
    """Slice the attention of ``modules`` (UNets, ControlNets) into ``query_chunk``-token query
    chunks for a ``with`` block; yield the number of sliced layers. ``None`` or 0 changes nothing."""
    if not query_chunk:
        yield 0
        return
    if query_chunk < 0:
        raise ValueError(f"query_chunk must be positive, got {query_chunk}")
    restored: list[tuple[Any, dict[str, Any]]] = []
    sliced: list[tuple[DecoupledAttnProcessor, int | None]] = []
    try:
        for module in modules:
            if module is None or not hasattr(module, "attn_processors"):
                continue
            current = dict(module.attn_processors)
            swapped = {name: DecoupledAttnProcessor() for name, proc in current.items()
                       if plain_replaceable(module, name, proc, cross_only=False)}
            if swapped:
                module.set_attn_processor({**current, **swapped})
                restored.append((module, current))
            for proc in module.attn_processors.values():
                if isinstance(proc, DecoupledAttnProcessor):
                    sliced.append((proc, proc.query_chunk))
                    proc.query_chunk = int(query_chunk)
        yield len(sliced)
    finally:
        for proc, before in sliced:
            proc.query_chunk = before
        for module, original in reversed(restored):
            module.set_attn_processor(original)
