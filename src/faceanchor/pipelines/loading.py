"""Weights loaders, one per kind (as vLLM's load formats), chosen once per engine.

* :class:`RealLoader` (``real``): base model (hub id / local diffusers folder / single
  ``.safetensors``), InstantID's IdentityNet + ``ip-adapter.bin``, FaceID checkpoints, extra
  ControlNets, the CLIP image encoder and LCM-LoRA, found through :mod:`faceanchor.models.resolve`
  (explicit local paths, ``FACEANCHOR_HOME``, the HF cache, the hub unless ``HF_HUB_OFFLINE``). A
  missing file is one ``ModelNotFoundError``. Requires the embedding space the weights were
  trained on.
* :class:`DummyLoader` (``dummy``: full-size architectures, ``tiny``: the same builders with tiny
  configs): seeded random weights, no download; adapters take the face encoder's dimension, so any
  face pack runs the whole path. Every component draws from its own seed (``seed + offset``).

Methods build their pipelines from these parts (:mod:`faceanchor.methods`); nothing here knows
which method asks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from faceanchor.errors import InvalidInputError, ModelNotFoundError

SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "ddim": ("DDIMScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
}


def _few_step_schedulers() -> dict[str, tuple[str, dict]]:
    from faceanchor.models.few_step import PRESETS

    return {p.name: (p.scheduler, dict(p.scheduler_extra)) for p in PRESETS.values()}


SCHEDULERS.update(_few_step_schedulers())

#: Seed offsets of the random parts (so asking for one part never changes another).
_OFFSET = {"identitynet": 1, "instantid_adapter": 2, "clip": 3, "faceid_adapter": 5, "pose": 11, "canny": 12, "depth": 13,
           "infusenet": 14, "infiniteyou_projection": 15}


def make_scheduler(name: str, base_config: Any) -> Any:
    """A diffusers scheduler of kind ``name`` built from the base model's scheduler config."""
    import diffusers

    if name not in SCHEDULERS:
        raise InvalidInputError(f"scheduler {name!r} is unknown; use one of {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    cls = getattr(diffusers, cls_name)
    return cls.from_config(base_config, **extra)


def move_adapter(adapter: Any, device: str, dtype: torch.dtype) -> None:
    """Put an InstantID adapter's projection and processors on ``device`` in ``dtype``."""
    adapter.image_proj.to(device=device, dtype=dtype)
    for p in adapter.processors.values():
        if isinstance(p, torch.nn.Module):
            p.to(device=device, dtype=dtype)


class WeightsLoader(ABC):
    """The parts methods build pipelines from. Subclasses: one per weights kind."""

    kind: str = ""
    #: Whether ``model_name`` / ``adapter_model`` / ``identitynet_model`` choose what is loaded.
    honours_model_name: bool = False
    #: Whether adapters are built for the face encoder's dimension (random weights) rather than read.
    adapts_to_encoder: bool = True
    #: The side characters re-render a face crop at (the base model's native size).
    render_size: int = 1024

    @property
    def work_scale(self) -> float:
        """Factor on the methods' working-size caps (megapixels of full-size models): 1 for full-size
        weights, (render side / 1024)² for smaller ones (tiny: 1/64)."""
        return min(1.0, (self.render_size / 1024) ** 2)

    def check_fits(self, method: Any, family: str) -> None:
        """Refuse, in one line, to load ``method``'s models when they cannot fit in memory (default: FLUX
        on a CUDA GPU, see :meth:`check_gpu_fits`)."""
        self.check_gpu_fits(method, family)

    # ------------------------------------------------------------------ FLUX memory options

    @property
    def flux_quantize(self) -> str:
        return str(getattr(self.settings, "flux_quantize", "none"))

    @property
    def cpu_offload(self) -> bool:
        return bool(getattr(self.settings, "speed_cpu_offload", False))

    def flux_load_device(self) -> str:
        """Where FLUX parts are built / read: the CPU when they are quantised there first or offloaded
        (as the official code: ``quantize`` then ``pipe.to('cuda')`` unless ``cpu_offload``), else the device."""
        return "cpu" if self.flux_quantize == "8bit" or self.cpu_offload else self.device

    def place_flux(self, modules: dict[str, Any]) -> None:
        """Quantise the parts the official code quantises (``flux_quantize="8bit"``), then move every
        module to the device unless model CPU offload will move them itself."""
        from faceanchor.pipelines.quantization import QUANTISED_COMPONENTS, quantize_8bit

        for name, m in modules.items():
            if not isinstance(m, torch.nn.Module):
                continue
            if self.flux_quantize == "8bit" and name in QUANTISED_COMPONENTS:
                quantize_8bit(m)
            if not self.cpu_offload:
                m.to(self.device)

    def check_gpu_fits(self, method: Any, family: str) -> None:
        """FLUX on CUDA: estimate the GPU memory of the full-size models (parameters × bytes per parameter
        of the dtype, 1 for 8-bit weights; with CPU offload the largest stage) and refuse in one line,
        naming ``cpu_offload`` and ``8bit`` with their figures, when it exceeds what the GPU has free."""
        if family != "flux" or not str(self.device).startswith("cuda") or getattr(self, "size", "full") == "tiny":
            return
        if not torch.cuda.is_available():
            return
        free, _total = torch.cuda.mem_get_info(torch.device(self.device))
        infusenet = "controlnet" in _kinds(method, family)
        need = lambda q, o: flux_gpu_bytes(self.dtype, q, o, infusenet)  # noqa: E731
        needed = need(self.flux_quantize, self.cpu_offload)
        if needed <= free:
            return
        gb = lambda b: f"{b / 1e9:.1f} GB"  # noqa: E731
        q, o = self.flux_quantize == "8bit", self.cpu_offload
        labels = {(False, True): "cpu_offload (FACEANCHOR_SPEED_CPU_OFFLOAD=true)", (True, False): "8bit (--quantize 8bit)",
                  (True, True): "cpu_offload and 8bit together"}  # fmt: skip
        hints = [f"{label} about {gb(need('8bit' if k[0] else 'none', k[1]))}"
                 + ("" if need("8bit" if k[0] else "none", k[1]) <= free else " (does not fit either)")
                 for k, label in labels.items() if k != (q, o) and k[0] >= q and k[1] >= o]
        dtype = str(self.dtype).removeprefix("torch.")
        mode = " and ".join(x for x, on in (("8bit", q), ("cpu_offload", o)) if on)
        raise InvalidInputError(
            f"{method.name} on FLUX.1 needs about {gb(needed)} of GPU memory in {dtype}{' with ' + mode if mode else ''}, "
            f"{gb(free)} is free on {self.device}; " + ("try " + "; ".join(hints) if hints else "use a larger GPU, or --weights tiny")
        )

    def default_size(self, family: str) -> int | None:
        """The output side of a request that gives no width/height (None: sized from the face photo,
        as the official demos do)."""
        return None

    def __init__(self, settings: Any, device: str, dtype: torch.dtype, seed: int = 0):
        self.settings, self.device, self.dtype, self.seed = settings, device, dtype, seed

    def required_space(self, method: Any) -> str | None:
        """The embedding space the weights of ``method`` need (None: any encoder's)."""
        return None

    @abstractmethod
    def base_components(self, family: str, model_name: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        """The base pipeline's components (UNet, VAE, text encoders, tokenizers, scheduler) and model names."""

    @abstractmethod
    def identitynet(self, model: str | None = None) -> tuple[Any, str]:
        """InstantID's IdentityNet (``model``: a local folder or hub id) and its name."""

    @abstractmethod
    def extra_controlnet(self, name: str) -> tuple[Any, str]:
        """The SDXL ControlNet for ``pose`` / ``canny`` / ``depth`` and its name."""

    @abstractmethod
    def instantid_adapter(self, unet: Any, embedding_dim: int, model: str | None = None) -> tuple[Any, str]:
        """A checkpoint path (real) or an adapter object (random), and its model name."""

    @abstractmethod
    def faceid_checkpoint(self, method: str, registry_name: str, model: str | None = None) -> tuple[str | None, str]:
        """The FaceID checkpoint path (None: random weights) and its model name."""

    @abstractmethod
    def clip_image_encoder(self) -> tuple[Any, Any, str]:
        """The CLIP ViT-H image encoder of FaceID-Plus, its processor and its name."""

    def few_step_lora(self, pipe: Any, family: str, preset: Any) -> str | None:
        """Load ``preset``'s LoRA for ``family`` into ``pipe`` as adapter ``preset.name``; None where
        there is none (random weights)."""
        return None

    def flux_components(self, spec: Any, model_name: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        """A FLUX.1 pipeline's components (transformer, VAE, CLIP + T5 and tokenizers, scheduler) and names."""
        raise InvalidInputError(f"{self.kind} weights have no FLUX base")

    def infiniteyou(self, spec: Any, variant: str, embedding_dim: int, model: str | None = None) -> tuple[Any, Any, str]:
        """InfiniteYou's InfuseNet (a FluxControlNetModel) and identity projection of ``variant``, and their name."""
        raise InvalidInputError(f"{self.kind} weights have no InfiniteYou models")


class RealLoader(WeightsLoader):
    """Official checkpoints (see the module doc)."""

    kind = "real"
    honours_model_name = True
    adapts_to_encoder = False

    def required_space(self, method: Any) -> str | None:
        return method.space

    def base_components(self, family: str, model_name: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        import diffusers

        from faceanchor.models.resolve import resolve_base

        base = resolve_base(model_name, family, self.settings)
        cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
        kwargs: dict[str, Any] = {"torch_dtype": self.dtype}
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
        return {k: (v.to(self.device) if isinstance(v, torch.nn.Module) else v) for k, v in comps.items()}, {"base": base.name}

    def _controlnet(self, registry_name: str, model: str | None, what: str) -> tuple[Any, str]:
        from diffusers import ControlNetModel

        from faceanchor.models.resolve import resolve_model

        if model is not None and Path(model).expanduser().is_dir():
            folder = Path(model).expanduser()
            if not (folder / "config.json").is_file() and (folder / "ControlNetModel" / "config.json").is_file():
                folder = folder / "ControlNetModel"  # the InstantID repo's layout
            if not (folder / "config.json").is_file():
                raise ModelNotFoundError(f"{what} folder {folder} has no config.json; give a diffusers ControlNet folder")
            return ControlNetModel.from_pretrained(str(folder), torch_dtype=self.dtype).to(self.device), str(folder)
        r = resolve_model(registry_name, self.settings, ref=model)
        return ControlNetModel.from_pretrained(str(r.load_dir), torch_dtype=self.dtype).to(self.device), r.spec.repo_id or str(r.root)

    def identitynet(self, model: str | None = None) -> tuple[Any, str]:
        return self._controlnet("instantid-identitynet", model, "IdentityNet")

    def extra_controlnet(self, name: str) -> tuple[Any, str]:
        from faceanchor.models.registry import CONTROLNET_FOR

        return self._controlnet(CONTROLNET_FOR[name], None, f"{name} ControlNet")

    def _checkpoint(self, registry_name: str, model: str | None, what: str) -> tuple[str, str]:
        """The checkpoint file: ``model`` when it is a file, else found from it (folder / hub id) or the default."""
        from faceanchor.models.resolve import resolve_model

        if model is not None and Path(model).expanduser().is_file():
            p = Path(model).expanduser()
            return str(p), str(p)
        r = resolve_model(registry_name, self.settings, ref=model)
        return str(r.path()), model or r.spec.repo_id or str(r.root)

    def instantid_adapter(self, unet: Any, embedding_dim: int, model: str | None = None) -> tuple[Any, str]:
        return self._checkpoint("instantid-adapter", model, "InstantID adapter")

    def faceid_checkpoint(self, method: str, registry_name: str, model: str | None = None) -> tuple[str | None, str]:
        return self._checkpoint(registry_name, model, f"{method} adapter")

    def clip_image_encoder(self) -> tuple[Any, Any, str]:
        from faceanchor.models.resolve import resolve_model
        from faceanchor.pipelines.faceid import clip_image_processor_for, load_clip_image_encoder

        r = resolve_model("clip-vit-h", self.settings)
        enc = load_clip_image_encoder(r.load_dir, device=self.device, dtype=self.dtype, local_files_only=True)
        return enc, clip_image_processor_for(enc), r.spec.repo_id or str(r.root)

    def flux_components(self, spec: Any, model_name: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        """``FluxPipeline.from_pretrained`` of ``model_name`` (a local diffusers folder or a hub id) or of
        the spec's default (a folder under ``FACEANCHOR_HOME`` first, else the hub id through the HF cache)."""
        import diffusers

        from faceanchor.models.resolve import _looks_like_repo_id, hf_cache_dir, is_offline, local_dirs

        ref = model_name
        if ref is None:
            ref = next((str(d) for d in local_dirs(spec, self.settings) if (d / "model_index.json").is_file()), spec.repo_id)
        p = Path(str(ref)).expanduser()
        if p.is_dir():
            if not (p / "model_index.json").is_file():
                raise ModelNotFoundError(f"FLUX base folder {p} has no model_index.json; give a diffusers FLUX.1 folder (transformer/, vae/, text_encoder(_2)/ ...)")
            source, kwargs = str(p), {}
        elif _looks_like_repo_id(str(ref)):
            source, kwargs = str(ref), {"cache_dir": str(hf_cache_dir()), "local_files_only": is_offline()}
        else:
            raise ModelNotFoundError(f"FLUX base '{ref}' is neither an existing folder nor a hub repo id (org/name)")
        try:
            pipe = diffusers.FluxPipeline.from_pretrained(source, torch_dtype=self.dtype, **kwargs)  # on the CPU; place_flux moves it
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ModelNotFoundError(
                f"FLUX base {source} could not be loaded: {first}. FLUX.1-dev is gated: accept its licence on "
                "huggingface.co/black-forest-labs/FLUX.1-dev and log in (hf auth login), or give a local folder as model_name"
            ) from None
        comps = {k: v for k, v in pipe.components.items() if v is not None}
        self.place_flux(comps)
        return comps, {"base": str(ref)}

    def infiniteyou(self, spec: Any, variant: str, embedding_dim: int, model: str | None = None) -> tuple[Any, Any, str]:
        """From ``model``: a model-version folder (``InfuseNetModel/`` + ``image_proj_model.bin``), a folder
        holding it as ``<variant>/`` or ``infu_flux_v1.0/<variant>/`` (a copy of ByteDance/InfiniteYou), or a
        hub id; else the registry's ``spec`` (FACEANCHOR_HOME, the HF cache, then the hub)."""
        from diffusers import FluxControlNetModel

        from faceanchor.adapters.infiniteyou import CHECKPOINT_NAME, load_projection
        from faceanchor.models.resolve import resolve_model

        folder: Path | None = None
        if model is not None and Path(model).expanduser().is_dir():
            root = Path(model).expanduser()
            for cand in (root, root / variant, root / "infu_flux_v1.0" / variant):
                if (cand / "InfuseNetModel" / "config.json").is_file():
                    folder = cand
                    break
            if folder is None:
                raise ModelNotFoundError(
                    f"InfiniteYou folder {root} has no InfuseNetModel/config.json (looked in it, {variant}/ and "
                    f"infu_flux_v1.0/{variant}/); give the model-version folder of ByteDance/InfiniteYou"
                )
            name = str(folder)
        else:
            r = resolve_model(spec, self.settings, ref=model)
            folder = r.path(f"infu_flux_v1.0/{variant}/{CHECKPOINT_NAME}").parent
            name = f"{model or spec.repo_id}:{variant}"
        from faceanchor.models.flux import quiet_flux_deprecation

        try:
            with quiet_flux_deprecation():
                net = FluxControlNetModel.from_pretrained(str(folder / "InfuseNetModel"), torch_dtype=self.dtype)
        except OSError as e:
            raise ModelNotFoundError(f"InfuseNet in {folder / 'InfuseNetModel'} could not be loaded: {str(e).splitlines()[0]}") from None
        self.place_flux({"infusenet": net})
        proj = load_projection(folder / CHECKPOINT_NAME, output_dim=int(net.config.joint_attention_dim), embedding_dim=embedding_dim,
                               device=self.device, dtype=self.dtype)
        return net, proj, name

    def few_step_lora(self, pipe: Any, family: str, preset: Any) -> str | None:
        from faceanchor.models.few_step import lora_for
        from faceanchor.models.resolve import resolve_model

        r = resolve_model(lora_for(preset, family), self.settings)
        pipe.load_lora_weights(str(r.path().parent), weight_name=r.path().name, adapter_name=preset.name)
        return r.spec.repo_id or str(r.root)


class DummyLoader(WeightsLoader):
    """Seeded random weights at full size (``dummy``) or tiny size (``tiny``)."""

    def __init__(self, settings: Any, device: str, dtype: torch.dtype, seed: int = 0, size: str = "full"):
        super().__init__(settings, device, dtype, seed)
        self.size = size
        self.kind = "tiny" if size == "tiny" else "dummy"
        if size == "tiny":
            self.render_size = 128

    def memory_needed(self, method: Any, family: str) -> tuple[int, list[str]]:
        """Bytes the full-size random models of ``method`` on ``family`` take in ``self.dtype`` (parameter
        counts on the meta device, no memory allocated), with the components counted."""
        from faceanchor.models.dummy import parameter_count

        kinds = _kinds(method, family)
        parts: list[tuple[str, str]] = []
        if "base" in kinds:
            encoders = ["text_encoder", "text_encoder_2"] if family == "sdxl" else ["text_encoder"]
            parts += [(c, family) for c in ("unet", "vae", *encoders)]
        if "controlnet" in kinds:
            parts.append(("controlnet", "sdxl"))
        if "image_encoder" in kinds:
            parts.append(("image_encoder", family))
        if family == "flux":  # FLUX.1: transformer, VAE, CLIP + T5, and InfuseNet when a controlnet is needed
            from faceanchor.models import flux

            names = ["transformer", "vae", "text_encoder", "text_encoder_2"] + (["infusenet"] if "controlnet" in kinds else [])
            params = sum(flux.parameter_count(c, "full") for c in names)
            return params * torch.empty((), dtype=self.dtype).element_size(), names
        params = sum(parameter_count(c, fam, "full") for c, fam in parts)
        return params * torch.empty((), dtype=self.dtype).element_size(), [c for c, _ in parts]

    def check_fits(self, method: Any, family: str) -> None:
        """Full-size random weights on a CPU: estimate the memory first and refuse in one line when the
        models (plus a working margin) exceed the memory available, instead of being killed by the OS."""
        if self.size == "tiny":
            return
        if str(self.device) != "cpu":
            self.check_gpu_fits(method, family)
            if family != "flux" or self.flux_load_device() != "cpu":
                return  # else FLUX is built in host memory first (to quantise or offload it): check that too
        available = available_memory_bytes()
        if available is None:
            return
        needed, parts = self.memory_needed(method, family)
        needed = int(needed * MEMORY_MARGIN)
        if needed <= available:
            return
        gb = lambda b: f"{b / 1e9:.1f} GB"  # noqa: E731
        dtype = str(self.dtype).removeprefix("torch.")
        hint = "use --weights tiny"
        if self.dtype == torch.float32:
            half = int(needed / 2)
            hint = f"try --dtype bf16 (about {gb(half)}){'' if half <= available else ', which does not fit either'}, or --weights tiny"
        raise InvalidInputError(
            f"--weights dummy: {method.name} on {family} ({', '.join(parts)}) needs about {gb(needed)} of memory in "
            f"{dtype}, {gb(available)} is available; {hint}"
        )

    def default_size(self, family: str) -> int | None:
        """Tiny weights render at their architecture's native side (64 px), so a first run takes seconds."""
        if self.size != "tiny":
            return None
        if family == "flux":
            from faceanchor.models.flux import native_size as flux_native

            return flux_native("tiny")
        from faceanchor.models.dummy import native_size

        return native_size(family, "tiny")

    def base_components(self, family: str, model_name: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        from faceanchor.models.dummy import build_components

        comps = build_components(family, self.size, seed=self.seed, dtype=self.dtype, device=self.device)
        return comps, {"base": f"{self.kind}:{family}"}

    def identitynet(self, model: str | None = None) -> tuple[Any, str]:
        from faceanchor.models.dummy import build_controlnet

        cn = build_controlnet("sdxl", self.size, seed=self.seed + _OFFSET["identitynet"], dtype=self.dtype, device=self.device)
        return cn, f"{self.kind}:identitynet"

    def extra_controlnet(self, name: str) -> tuple[Any, str]:
        from faceanchor.models.dummy import build_controlnet

        cn = build_controlnet("sdxl", self.size, seed=self.seed + _OFFSET[name], dtype=self.dtype, device=self.device)
        return cn, f"{self.kind}:controlnet-{name}"

    def instantid_adapter(self, unet: Any, embedding_dim: int, model: str | None = None) -> tuple[Any, str]:
        from faceanchor.adapters.instantid import InstantIDAdapter

        adapter = InstantIDAdapter.random(unet, embedding_dim=embedding_dim, seed=self.seed + _OFFSET["instantid_adapter"])
        move_adapter(adapter, self.device, self.dtype)
        return adapter, f"{self.kind}:instantid-adapter({embedding_dim}-D)"

    def faceid_checkpoint(self, method: str, registry_name: str, model: str | None = None) -> tuple[str | None, str]:
        return None, f"{self.kind}:{method}"

    def faceid_seed(self) -> int:
        return self.seed + _OFFSET["faceid_adapter"]

    def flux_components(self, spec: Any, model_name: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        from faceanchor.models.flux import build_components

        guidance = not (model_name and "schnell" in str(model_name).lower())  # schnell: no guidance embedding
        comps = build_components(self.size, seed=self.seed, dtype=self.dtype, device=self.flux_load_device(), guidance=guidance)
        self.place_flux(comps)
        return comps, {"base": f"{self.kind}:flux" + ("" if guidance else "-schnell") + ("-8bit" if self.flux_quantize == "8bit" else "")}

    def infiniteyou(self, spec: Any, variant: str, embedding_dim: int, model: str | None = None) -> tuple[Any, Any, str]:
        from dataclasses import replace

        from faceanchor.adapters.infiniteyou import OFFICIAL_PROJECTION, random_projection, tiny_projection_config
        from faceanchor.models.flux import build_infusenet

        offset = 0 if variant == "aes_stage2" else 100  # the two versions are different random models
        net = build_infusenet(self.size, seed=self.seed + _OFFSET["infusenet"] + offset, dtype=self.dtype, device=self.flux_load_device())
        self.place_flux({"infusenet": net})
        width = int(net.config.joint_attention_dim)
        cfg = tiny_projection_config(embedding_dim, width) if self.size == "tiny" else replace(OFFICIAL_PROJECTION, embedding_dim=embedding_dim, output_dim=width)
        proj = random_projection(cfg, seed=self.seed + _OFFSET["infiniteyou_projection"] + offset, device=self.device, dtype=self.dtype)
        return net, proj, f"{self.kind}:infiniteyou-{variant}({embedding_dim}-D)"

    def clip_image_encoder(self) -> tuple[Any, Any, str]:
        from faceanchor.models.dummy import build_image_encoder

        enc, proc = build_image_encoder(self.size, seed=self.seed + _OFFSET["clip"], dtype=self.dtype, device=self.device)
        return enc, proc, f"{self.kind}:clip-vit-h"


#: Memory a loaded pipeline takes beyond its weights (activations, buffers): the estimate's factor.
MEMORY_MARGIN = 1.2

#: The same factor for FLUX on a GPU, from the official InfiniteYou README's measured peaks at 864 × 1152
#: (bf16 43 GB, offload 30 GB, 8-bit 24 GB, both 16 GB) against the weights alone (40.4 / 30.4 / 20.4 / 15.2 GB).
GPU_MARGIN = 1.1


def _kinds(method: Any, family: str) -> set[str]:
    """The kinds of the models ``method`` needs on ``family`` (optional ones left out)."""
    from faceanchor.models.registry import default_registry

    registry = default_registry().with_extra(method.model_specs())
    return {registry.get(n).kind for n in method.model_names(family) if not registry.get(n).optional}


def flux_gpu_bytes(dtype: torch.dtype, quantize: str = "none", offload: bool = False, infusenet: bool = True) -> int:
    """GPU memory of full-size FLUX.1 (+ InfuseNet) in ``dtype``: parameters × bytes per parameter (1 for
    the 8-bit transformer, T5 and InfuseNet), times :data:`GPU_MARGIN`. With model CPU offload only one
    stage is on the GPU at a time: the text encoders, the VAE, or the transformer with InfuseNet."""
    from faceanchor.models import flux
    from faceanchor.pipelines.quantization import QUANTISED_COMPONENTS

    size = torch.empty((), dtype=dtype).element_size()
    per = {c: flux.parameter_count(c, "full") * (1 if quantize == "8bit" and c in QUANTISED_COMPONENTS else size)
           for c in ("transformer", "vae", "text_encoder", "text_encoder_2", *(("infusenet",) if infusenet else ()))}
    if offload:
        stages = [per["text_encoder"] + per["text_encoder_2"], per["vae"], per["transformer"] + per.get("infusenet", 0)]
        return int(max(stages) * GPU_MARGIN)
    return int(sum(per.values()) * GPU_MARGIN)


def available_memory_bytes() -> int | None:
    """Memory available to a new allocation: psutil's figure, else ``MemAvailable`` of /proc/meminfo;
    None where neither says."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


#: One loader per weights kind.
LOADERS: dict[str, Any] = {
    "real": RealLoader,
    "dummy": lambda settings, device, dtype, seed: DummyLoader(settings, device, dtype, seed, size="full"),
    "tiny": lambda settings, device, dtype, seed: DummyLoader(settings, device, dtype, seed, size="tiny"),
}


def make_loader(kind: str, settings: Any, device: str, dtype: torch.dtype, seed: int = 0) -> WeightsLoader:
    """The loader of weights kind ``real``, ``dummy`` or ``tiny``."""
    try:
        factory = LOADERS[kind]
    except KeyError:
        raise InvalidInputError(f"weights {kind!r} is unknown; use {', '.join(LOADERS)}") from None
    return factory(settings, device, dtype, seed)
