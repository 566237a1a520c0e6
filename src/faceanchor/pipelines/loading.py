"""Build the diffusers pipelines the engine runs, from real, dummy or tiny weights.

* ``real``: base model (hub id / local diffusers folder / single ``.safetensors``), InstantID's
  IdentityNet + ``ip-adapter.bin``, FaceID checkpoints, extra ControlNets and LCM-LoRA, found
  through :mod:`faceanchor.models.resolve` (local dirs, ``FACEANCHOR_HOME``, the HF cache,
  the hub unless ``HF_HUB_OFFLINE``). A missing file is one ``ModelNotFoundError``.
* ``dummy``: the full-size architectures with seeded random weights, no download (like vLLM's
  ``--load-format dummy``): integration runs and speed benchmarks.
* ``tiny``: the same builders with tiny configs: the whole path in seconds (tests, demos).

Adapters are built here too (random for dummy/tiny, taking the face encoder's dimension; from
the official checkpoints for real weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from faceanchor.errors import InvalidInputError, ModelNotFoundError

Weights = Literal["real", "dummy", "tiny"]

SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "lcm": ("LCMScheduler", {}),
}


def _size(weights: Weights) -> str:
    return "tiny" if weights == "tiny" else "full"


def make_scheduler(name: str, base_config: Any) -> Any:
    """A diffusers scheduler of kind ``name`` built from the base model's scheduler config."""
    import diffusers

    if name not in SCHEDULERS:
        raise InvalidInputError(f"scheduler {name!r} is unknown; use one of {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    return cls.from_config(base_config, **extra)


@dataclass
class LoadedBase:
    """One loaded base pipeline and what was loaded next to it."""

    family: str
    pipe: Any
    models: dict[str, str] = field(default_factory=dict)
    base_scheduler_config: Any = None
    lcm_lora: bool = False


def _base_components(family: str, weights: Weights, model_name: str | None, settings: Any, device: str, dtype: torch.dtype, seed: int) -> tuple[dict[str, Any], dict[str, str]]:
    if weights in ("dummy", "tiny"):
        from faceanchor.models.dummy import build_components

        comps = build_components(family, _size(weights), seed=seed, dtype=dtype, device=device)
        return comps, {"base": f"{weights}:{family}"}
    from faceanchor.models.resolve import resolve_base

    base = resolve_base(model_name, family, settings)
    import diffusers

    cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
    kwargs: dict[str, Any] = {"torch_dtype": dtype}
    if family == "sd15":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    try:
        if base.single_file:
            if base.config_dir is not None:
                kwargs["config"] = str(base.config_dir)
            pipe = cls.from_single_file(str(base.path), **kwargs)
        else:
            pipe = cls.from_pretrained(str(base.path), **kwargs)
    except OSError as e:
        raise ModelNotFoundError(f"base model {base.name} could not be loaded from {base.path}: {str(e).splitlines()[0]}") from None
    comps = {k: v for k, v in pipe.components.items() if v is not None}
    for k in ("safety_checker", "feature_extractor", "image_encoder"):
        comps.pop(k, None)
    return {k: (v.to(device) if isinstance(v, torch.nn.Module) else v) for k, v in comps.items()}, {"base": base.name}


def load_identitynet(weights: Weights, settings: Any, device: str, dtype: torch.dtype, seed: int) -> tuple[Any, str]:
    if weights in ("dummy", "tiny"):
        from faceanchor.models.dummy import build_controlnet

        return build_controlnet("sdxl", _size(weights), seed=seed + 1, dtype=dtype, device=device), f"{weights}:identitynet"
    from diffusers import ControlNetModel

    from faceanchor.models.resolve import resolve_model

    r = resolve_model("instantid-identitynet", settings)
    return ControlNetModel.from_pretrained(str(r.load_dir), torch_dtype=dtype).to(device), r.spec.repo_id or str(r.root)


def load_extra_controlnet(name: str, weights: Weights, settings: Any, device: str, dtype: torch.dtype, seed: int) -> tuple[Any, str]:
    """The SDXL ControlNet for ``pose``/``canny``/``depth``."""
    if weights in ("dummy", "tiny"):
        from faceanchor.models.dummy import build_controlnet

        offset = {"pose": 11, "canny": 12, "depth": 13}[name]
        return build_controlnet("sdxl", _size(weights), seed=seed + offset, dtype=dtype, device=device), f"{weights}:controlnet-{name}"
    from diffusers import ControlNetModel

    from faceanchor.models.registry import CONTROLNET_FOR
    from faceanchor.models.resolve import resolve_model

    r = resolve_model(CONTROLNET_FOR[name], settings)
    return ControlNetModel.from_pretrained(str(r.load_dir), torch_dtype=dtype).to(device), r.spec.repo_id or str(r.root)


def load_instantid(weights: Weights, settings: Any, model_name: str | None, device: str, dtype: torch.dtype, seed: int, embedding_dim: int) -> LoadedBase:
    """An :class:`InstantIDSDXLPipeline` with IdentityNet and the face adapter loaded."""
    from faceanchor.pipelines.instantid_sdxl import InstantIDSDXLPipeline

    comps, models = _base_components("sdxl", weights, model_name, settings, device, dtype, seed)
    identitynet, models["identitynet"] = load_identitynet(weights, settings, device, dtype, seed)
    pipe = InstantIDSDXLPipeline(
        vae=comps["vae"], text_encoder=comps["text_encoder"], text_encoder_2=comps["text_encoder_2"],
        tokenizer=comps["tokenizer"], tokenizer_2=comps["tokenizer_2"], unet=comps["unet"],
        controlnet=identitynet, scheduler=comps["scheduler"],
    )
    pipe.set_progress_bar_config(disable=True)
    if weights == "real":
        from faceanchor.models.resolve import resolve_model

        r = resolve_model("instantid-adapter", settings)
        pipe.load_instantid_adapter(str(r.path("ip-adapter.bin")), scale=0.8)
        models["adapter"] = r.spec.repo_id or str(r.root)
    else:
        from faceanchor.adapters.instantid import InstantIDAdapter

        torch.manual_seed(seed + 2)
        adapter = InstantIDAdapter.random(comps["unet"], embedding_dim=embedding_dim)
        _to(adapter, device, dtype)
        pipe.load_instantid_adapter(adapter, scale=0.8)
        models["adapter"] = f"{weights}:instantid-adapter({embedding_dim}-D)"
    return LoadedBase("sdxl", pipe, models, comps["scheduler"].config)


def _to(adapter: Any, device: str, dtype: torch.dtype) -> None:
    adapter.image_proj.to(device=device, dtype=dtype)
    for p in adapter.processors.values():
        if isinstance(p, torch.nn.Module):
            p.to(device=device, dtype=dtype)


def load_faceid_base(family: str, weights: Weights, settings: Any, model_name: str | None, device: str, dtype: torch.dtype, seed: int, clip: bool) -> LoadedBase:
    """A :class:`FaceIDPipeline` over an SD1.5/SDXL base (with the CLIP image encoder when asked)."""
    import diffusers

    from faceanchor.pipelines.faceid import FaceIDPipeline

    comps, models = _base_components(family, weights, model_name, settings, device, dtype, seed)
    cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
    keep = {"vae", "text_encoder", "tokenizer", "unet", "scheduler"} | ({"text_encoder_2", "tokenizer_2"} if family == "sdxl" else set())
    kwargs = {k: comps[k] for k in keep}
    if family == "sd15":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    encoder = processor = None
    if clip:
        encoder, processor, models["image_encoder"] = load_clip_image_encoder(weights, settings, device, dtype, seed)
    return LoadedBase(family, FaceIDPipeline(pipe, image_encoder=encoder, image_processor=processor), models, comps["scheduler"].config)


def load_clip_image_encoder(weights: Weights, settings: Any, device: str, dtype: torch.dtype, seed: int) -> tuple[Any, Any, str]:
    if weights in ("dummy", "tiny"):
        from faceanchor.models.dummy import build_image_encoder

        enc, proc = build_image_encoder(_size(weights), seed=seed + 3, dtype=dtype, device=device)
        return enc, proc, f"{weights}:clip-vit-h"
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from faceanchor.models.resolve import resolve_model

    r = resolve_model("clip-vit-h", settings)
    enc = CLIPVisionModelWithProjection.from_pretrained(str(r.load_dir), torch_dtype=dtype).to(device)
    return enc, CLIPImageProcessor(), r.spec.repo_id or str(r.root)


def faceid_checkpoint(method: str, family: str, settings: Any) -> tuple[str, str]:
    """Local path of the official FaceID checkpoint for ``method`` on ``family``."""
    from faceanchor.models.registry import adapter_for
    from faceanchor.models.resolve import resolve_model

    r = resolve_model(adapter_for(method, family), settings)
    return str(r.path()), r.spec.repo_id or str(r.root)


def load_lcm_lora(loaded: LoadedBase, settings: Any) -> str:
    """Load the family's LCM-LoRA into the base (real weights) under adapter name ``lcm``."""
    from faceanchor.models.registry import LCM_LORA_FOR
    from faceanchor.models.resolve import resolve_model

    r = resolve_model(LCM_LORA_FOR[loaded.family], settings)
    pipe = loaded.pipe.pipe if hasattr(loaded.pipe, "adapter") and hasattr(loaded.pipe, "pipe") else loaded.pipe
    pipe.load_lora_weights(str(r.path().parent), weight_name=r.path().name, adapter_name="lcm")
    loaded.lcm_lora = True
    return r.spec.repo_id or str(r.root)
