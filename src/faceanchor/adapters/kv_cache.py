"""Cross-attention keys/values computed once per generation, reused at every denoising step.

A cross-attention layer's keys and values are ``to_k(text)``/``to_v(text)`` (and, for the
decoupled identity attention, ``to_k_ip(id_tokens)``/``to_v_ip(id_tokens)``): they depend on the
prompt and identity tokens only, which are the same tensor at every step of one generation. The
official pipelines recompute them at each of the 30 steps, for every layer of the UNet and of
IdentityNet. Inside :func:`cross_attention_cache` each processor keeps them per encoder-states
tensor (one entry per CFG-batched tensor; the entry holds the tensor, so its ``id`` cannot be
reused while the entry lives, and an in-place change bumps ``_version`` and misses). The math is
untouched: the same projections run once instead of ``steps`` times, so outputs are
bit-identical to the uncached run.

Plain cross-attention layers (diffusers' ``AttnProcessor2_0``: IdentityNet's, an SD1.5 UNet's
with FaceID-Portrait, any base UNet) get a :class:`DecoupledAttnProcessor` without identity
branch for the scope (same math as ``AttnProcessor2_0`` for layers without q/k norms); the
processors that were installed are put back on exit, so the base model is unchanged afterwards
(patches never touch base weights).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from faceanchor.adapters.attention import DecoupledAttnProcessor, is_cross_attention_name


def plain_replaceable(module: Any, name: str, proc: Any, cross_only: bool = True) -> bool:
    """A diffusers SDPA processor our shared forward reproduces exactly, on a cross-attention
    layer (``cross_only=False``: on any layer)."""
    try:
        from diffusers.models.attention_processor import AttnProcessor2_0
    except ImportError:  # pragma: no cover - diffusers is part of the `gen` extra
        return False
    if type(proc) is not AttnProcessor2_0 or (cross_only and not is_cross_attention_name(name)):
        return False
    attn = module.get_submodule(name[: -len(".processor")])
    plain = getattr(attn, "norm_q", None) is None and getattr(attn, "norm_k", None) is None
    return plain and (not cross_only or bool(getattr(attn, "is_cross_attention", True)))


@contextmanager
def cross_attention_cache(*modules: Any, enabled: bool = True) -> Iterator[int]:
    """Cache cross-attention keys/values of ``modules`` (UNets, ControlNets) for one generation.

    Yields the number of cross-attention layers that cache. ``enabled=False`` changes nothing
    (the baseline of benchmarks and equivalence tests).
    """
    if not enabled:
        yield 0
        return
    restored: list[tuple[Any, dict[str, Any]]] = []
    caching: list[DecoupledAttnProcessor] = []
    try:
        for module in modules:
            if module is None or not hasattr(module, "attn_processors"):
                continue
            current = dict(module.attn_processors)
            swapped = {name: DecoupledAttnProcessor() for name, proc in current.items() if plain_replaceable(module, name, proc)}
            if swapped:
                module.set_attn_processor({**current, **swapped})
                restored.append((module, current))
            for name, proc in module.attn_processors.items():
                if isinstance(proc, DecoupledAttnProcessor) and is_cross_attention_name(name):
                    proc.kv_cache = {}
                    caching.append(proc)
        yield len(caching)
    finally:
        for proc in caching:
            proc.kv_cache = None
        for module, original in reversed(restored):
            module.set_attn_processor(original)
