"""Speed and memory options applied to a loaded pipeline, each one a setting.

Every method's loaded pipeline passes through :func:`accelerate` once, after loading. Options:

* ``tf32`` — TF32 matmuls/convolutions on CUDA (Ampere and newer); no effect elsewhere.
* ``channels_last`` — UNet and ControlNets in channels-last memory format (faster
  convolutions on GPUs with tensor cores).
* ``fuse_qkv`` — one ``to_qkv`` projection for the self-attention layers that still have
  diffusers' own processor (identity and LoRA processors are kept as they are: cross-attention
  keys/values are cached per generation anyway, see :mod:`faceanchor.adapters.kv_cache`).
* ``compile`` — ``torch.compile`` of the UNet (``"unet"``) or of UNet, ControlNets and the
  VAE decoder (``"all"``) in place (``Module.compile``), so adapters can still swap processors; the first
  generation pays the compilation (``faceanchor serve`` warms up at start).
* ``vae_slicing`` / ``vae_tiling`` — decode a batch one image at a time / in tiles (memory).
* ``cpu_offload`` — diffusers' model CPU offload (CUDA only; needs ``accelerate``).
* ``attention_slicing`` — attention over query chunks of that many tokens inside faceanchor's
  own processors, the identity processors kept (:mod:`faceanchor.adapters.attention_slicing`;
  0: off). diffusers' ``enable_attention_slicing()`` stays refused (it drops them).
* ``cross_attention_cache`` — keys/values once per generation (on by default; off is the
  official per-step recomputation, the benchmarks' baseline).
* ``condition_cache`` — ControlNet condition-image embeddings once per generation
  (:mod:`faceanchor.adapters.condition_cache`; on by default; off: the official per-step runs).

Combinations that cannot work are refused with one clear line (:class:`InvalidInputError`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from faceanchor.errors import InvalidInputError

Compile = Literal["off", "unet", "all"]


@dataclass(frozen=True)
class SpeedOptions:
    tf32: bool = True
    channels_last: bool = False
    fuse_qkv: bool = False
    compile: Compile = "off"
    compile_backend: str = "inductor"
    vae_slicing: bool = False
    vae_tiling: bool = False
    cpu_offload: bool = False
    cross_attention_cache: bool = True
    condition_cache: bool = True
    attention_slicing: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> "SpeedOptions":
        names = cls.__dataclass_fields__
        return cls(**{n: getattr(settings, f"speed_{n}") for n in names if hasattr(settings, f"speed_{n}")})


@dataclass
class Applied:
    """What :func:`accelerate` did (for logs, ``faceanchor doctor`` and tests)."""

    fused_layers: int = 0
    compiled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _diffusers_pipe(pipe: Any) -> Any:
    """The diffusers pipeline inside a faceanchor pipeline (FaceID wraps one in ``.pipe``)."""
    return pipe.pipe if hasattr(pipe, "pipe") and hasattr(pipe.pipe, "unet") else pipe


def _nets(dp: Any) -> list[Any]:
    net = getattr(dp, "controlnet", None)
    if net is None:
        return []
    return list(getattr(net, "nets", [net]))


def _fuse_self_attention(module: Any) -> int:
    """Fuse q/k/v of self-attention layers whose processor is diffusers' plain SDPA one."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0

    n = 0
    for _, attn in module.named_modules():
        if isinstance(attn, Attention) and not attn.is_cross_attention and type(attn.processor) is AttnProcessor2_0:
            attn.fuse_projections()
            attn.set_processor(FusedAttnProcessor2_0())
            n += 1
    return n


def accelerate(pipe: Any, options: SpeedOptions, device: str) -> Applied:
    """Apply ``options`` to a loaded faceanchor pipeline in place; return what was done."""
    import torch

    cuda = str(device).startswith("cuda")
    if options.cpu_offload and not cuda:
        raise InvalidInputError("cpu_offload moves models between a CUDA GPU and the CPU; on device "
                                f"{device!r} turn it off (FACEANCHOR_SPEED_CPU_OFFLOAD=false)")
    if options.cpu_offload and options.compile != "off":
        raise InvalidInputError("cpu_offload and compile do not combine (offload hooks move the compiled modules); choose one")
    if options.attention_slicing < 0:
        raise InvalidInputError(f"attention_slicing is a number of query tokens per chunk (0: off), got {options.attention_slicing}")
    if options.attention_slicing and not hasattr(pipe, "attention_slice_size"):
        raise InvalidInputError(f"attention slicing is offered by the SDXL and SD1.5 identity pipelines, not by {type(pipe).__name__}; "
                                "turn it off for this method (FACEANCHOR_SPEED_ATTENTION_SLICING=0)")
    if options.attention_slicing and options.fuse_qkv:
        raise InvalidInputError("attention_slicing and fuse_qkv do not combine (fused layers run diffusers' own unsliced processor); "
                                "choose one")
    applied = Applied()
    dp = _diffusers_pipe(pipe)
    if hasattr(pipe, "attention_slice_size"):
        pipe.attention_slice_size = options.attention_slicing or None
        if options.attention_slicing:
            applied.notes.append(f"attention in query chunks of {options.attention_slicing} tokens")
    if hasattr(pipe, "cache_cross_attention"):
        pipe.cache_cross_attention = options.cross_attention_cache
    if hasattr(pipe, "cache_control_condition"):
        pipe.cache_control_condition = options.condition_cache
    if options.tf32 and cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # the VAE stays contiguous: its mid-block attention views 4-D activations as (B, C, H*W)
    convs = [m for m in [getattr(dp, "unet", None), *_nets(dp)] if m is not None]
    if options.channels_last:
        for m in convs:
            m.to(memory_format=torch.channels_last)
    if options.fuse_qkv:
        for m in [getattr(dp, "unet", None), *_nets(dp)]:
            if m is not None:
                applied.fused_layers += _fuse_self_attention(m)
    vae = getattr(dp, "vae", None)
    if options.vae_slicing and vae is not None:
        vae.enable_slicing()
    if options.vae_tiling and vae is not None:
        vae.enable_tiling()
    if options.compile != "off":
        targets = {"unet": getattr(dp, "unet", None)}
        if options.compile == "all":
            targets.update({f"controlnet{i}": n for i, n in enumerate(_nets(dp))})
            targets["vae.decoder"] = getattr(vae, "decoder", None)  # pipelines call vae.decode, not forward
        for name, m in targets.items():
            if m is not None:
                # dynamic=False: UNet and ControlNet share diffusers' forward wrapper (one code
                # object) but see different encoder lengths (text+identity vs identity tokens);
                # automatic dynamic shapes would then turn both into slower dynamic-shape graphs.
                m.compile(backend=options.compile_backend, dynamic=False)
                applied.compiled.append(name)
    if options.cpu_offload:
        dp.enable_model_cpu_offload()
        applied.notes.append("model CPU offload")
    return applied
