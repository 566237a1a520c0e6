"""8-bit weights for FLUX, as InfiniteYou's official code offers them (``--quantize_8bit``).

The official ``InfUFluxPipeline`` quantises InfuseNet, the FLUX transformer and T5
(``text_encoder_2``) with optimum-quanto: ``quantize(module, weights=qint8)`` then ``freeze(module)``
(weights stored as int8 with a scale per output channel; activations stay in the model's dtype).
Its README: peak VRAM about 24 GB instead of 43 GB (bf16), "performance remaining very similar".
CLIP and the VAE stay as they are. optimum-quanto is the ``quant`` extra.
"""

from __future__ import annotations

from typing import Any, Literal

Quantize = Literal["none", "8bit"]

#: The FLUX components the official code quantises (InfuseNet is loaded apart: see the loaders).
QUANTISED_COMPONENTS = ("transformer", "text_encoder_2", "infusenet")


def quantize_8bit(module: Any) -> Any:
    """``module`` with its linear (and conv) weights as quanto qint8, frozen, in place; returns it."""
    from optimum.quanto import freeze, qint8, quantize

    quantize(module, weights=qint8)
    freeze(module)
    return module


def is_quantized(module: Any) -> bool:
    """Whether any weight of ``module`` is a quanto quantised tensor."""
    from optimum.quanto import QTensor

    return any(isinstance(p, QTensor) for p in module.parameters())
