"""Keeping the identity attention processors installed.

diffusers' memory switches replace *every* attention processor of the UNet:
``enable_attention_slicing`` / ``disable_attention_slicing`` (through
``unet.set_attention_slice``: ``SlicedAttnProcessor`` / ``AttnProcessor``) and
``enable_xformers_memory_efficient_attention`` (``XFormersAttnProcessor``). On a pipeline
with an identity adapter that silently drops the identity (IP / LoRA) processors: images come
out without the identity and nothing says so.

The identity pipelines therefore refuse those switches (:func:`refuse_processor_switch`; the
setting ``speed_attention_slicing`` slices inside faceanchor's processors instead, see
:mod:`faceanchor.adapters.attention_slicing`) and,
before every run, check that the adapter's processors are still the UNet's
(:func:`require_processors`), which also catches a switch flipped on a shared UNet or on the
wrapped diffusers pipeline directly.
"""

from __future__ import annotations

from typing import Any, Mapping, NoReturn

from faceanchor.errors import InvalidInputError

_WHY = (
    "it replaces every attention processor of the UNet, including the identity adapter's, so images would silently "
    "lose the identity. The identity processors already run torch's scaled_dot_product_attention (memory-efficient "
    "kernels); to slice the attention and keep them, use the setting speed_attention_slicing (e.g. "
    "FACEANCHOR_SPEED_ATTENTION_SLICING=1024: query tokens per chunk), or save memory with enable_vae_slicing(), "
    "enable_vae_tiling() or enable_model_cpu_offload()"
)


def refuse_processor_switch(what: str, pipeline: str) -> NoReturn:
    """Raise the error explaining why ``what`` (e.g. ``enable_attention_slicing()``) is refused."""
    raise InvalidInputError(f"{pipeline} does not support {what}: {_WHY}")


def require_processors(unet: Any, processors: Mapping[str, Any], adapter: str) -> None:
    """Raise :class:`InvalidInputError` unless every processor in ``processors`` is installed on ``unet``."""
    current = unet.attn_processors
    gone = [name for name, proc in processors.items() if current.get(name) is not proc]
    if gone:
        found = type(current.get(gone[0])).__name__
        raise InvalidInputError(
            f"{len(gone)} of the {len(processors)} {adapter} attention processors are no longer installed on the UNet "
            f"(e.g. {gone[0]} is now a {found}); something replaced them (enable_attention_slicing, xformers, "
            f"set_attn_processor...). Unload the adapter and load it again"
        )
