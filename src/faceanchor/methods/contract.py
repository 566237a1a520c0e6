"""The method contract: what one identity method declares, and the one call the engine makes.

As k-diffusion gives every sampler one narrow signature, every method here is one object with
the same few declarations and calls (:class:`Method`). The engine owns what every method
shares (face analysis, the model cache, scoring, timings, progress, cancellation) and hands a
method only what it needs through :class:`RunContext` and :class:`Tools`.

A method declares
  * ``name`` (the request's ``method``), ``app`` (the HTTP app that serves it: ``/v1/{app}``,
    ``/queue/{app}``), ``label`` and ``description``;
  * ``families``: the base families it runs on, the first one the default;
  * ``space``: the embedding space (face pack) its real weights were trained on, and
    ``normalised``: whether those weights take unit-length embeddings (FaceID) or raw ones
    (InstantID, Portrait-unnorm) — :meth:`Method.normalise` applies the rule;
  * ``fields``: the request fields it honours beyond :data:`COMMON_FIELDS`; any other field
    set to a non-default value is refused (:meth:`Method.check_fields`);
  * ``max_references`` and ``separate_references`` (references kept as separate token groups);
  * ``model_names(family)``: the registry models it needs (for ``faceanchor models list``);
and implements ``load`` (build its pipeline through a weights loader), ``run`` (latents →
images for a batch of seeds) and, optionally, ``render`` (image-to-image / inpaint: characters'
edits and the face-detail pass).

Separate requests in one pipeline call (the batched worker): ``batch_key(request)`` says what
must be equal for two requests of this method to share a call beyond what the engine compares
(method, base and its models, size, steps, scheduler, guidance, dtype), or ``None`` when the
request must run alone (the default: a method that cannot batch says nothing more);
``run_many(loaded, batch)`` runs a :class:`Batch` of such requests, each with its own seeds,
prompt, identity and strengths, and returns each one's images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from faceanchor.errors import InvalidInputError
from faceanchor.types import CancelCheck, GenerationRequest, Identity, ProgressCallback

#: Request fields every method honours (the engine handles them, or every pipeline does). The
#: precomputed face geometry (``face_kps``, ``face_bbox``, ``face_image_size``) belongs to the
#: identity record (characters send it with every request); methods without keypoint control
#: take it as the description of where the face was, and nothing else.
COMMON_FIELDS = frozenset({
    "method", "face_image", "face_images", "face_embedding", "face_embeddings", "face_embedding_space",
    "face_kps", "face_bbox", "face_image_size",
    "face_index", "combine", "allow_different_people", "prompt", "negative_prompt", "style", "num_inference_steps", "guidance_scale",
    "seed", "samples", "best_of", "width", "height", "adapter_strength", "scheduler", "base", "model_name",
    "adapter_model", "output_format", "prompt_weighting",
})

FAMILY_LABELS = {"sdxl": "SDXL", "sd15": "SD1.5", "flux": "FLUX"}

#: Which request fields answer to which name in an error (the hosted APIs' words).
_FIELD_WORDS = {"identity_strength": "identity_strength (IdentityNet)", "pose_image": "pose_image"}



def _few_step_names() -> set[str]:
    from faceanchor.models.few_step import PRESETS

    return set(PRESETS)

@dataclass
class Loaded:
    """A method's loaded pipeline and the names of the models in it (for ``result.models``)."""

    family: str
    pipe: Any
    models: dict[str, str] = field(default_factory=dict)
    scheduler_config: Any = None
    few_step_loras: set[str] = field(default_factory=set)  # few-step presets whose LoRA is loaded (lcm, lightning...)
    state: dict[str, Any] = field(default_factory=dict)  # the method's own (adapter caches ...)


@dataclass
class Tools:
    """What a method may ask of the engine (shared caches and helpers), nothing more."""

    settings: Any
    loader: Any  # faceanchor.pipelines.loading.WeightsLoader
    analyzer: Callable[[str | None], Any]  # a prepared face analyzer of a pack
    pack: Callable[[], str]  # the pack this request's faces are analysed with
    controlnet: Callable[[str], tuple[Any, str]]  # an extra SDXL ControlNet (pose/canny/depth), cached
    set_scheduler: Callable[[Loaded, GenerationRequest, Any], None]
    generators: Callable[[list[int]], list[Any]]


@dataclass
class RunContext:
    """One generation as a method sees it."""

    request: GenerationRequest
    identity: Identity
    family: str
    prompt: str
    negative: str
    seeds: list[int]
    stage: Callable[[str], AbstractContextManager[None]]  # times a named stage, checks cancel first
    step_callback: Callable[[int], Any]  # chunk → diffusers-shaped callback_on_step_end (progress + cancel)
    cancel: CancelCheck
    notify: ProgressCallback
    timings: dict[str, float]
    tools: Tools
    # Several people (methods with max_identities > 1): the other identities with their
    # placements, in request order; the method sets ``regions`` (one output-pixel box per
    # identity, the first one's first) so each is scored inside its own region.
    more: list[tuple[Identity, Any]] = field(default_factory=list)
    regions: list[Any] | None = None


@dataclass
class Batch:
    """Separate requests run as one pipeline call: one :class:`RunContext` per request (its own
    seeds, prompt, identity, timings of its own stages) and what they share: ``stage`` times a
    shared stage into every request's timings, ``step_callback(chunk)`` reports each request's
    progress (a cancel of one request does not stop the others; all cancelled stops the call)."""

    contexts: list[RunContext]
    stage: Callable[[str], AbstractContextManager[None]]
    step_callback: Callable[[int], Any]


class Method(ABC):
    """Base of every method; subclasses set the class attributes and implement ``load``/``run``."""

    name: ClassVar[str]
    app: ClassVar[str]
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    families: ClassVar[tuple[str, ...]] = ("sdxl",)
    space: ClassVar[str]
    normalised: ClassVar[bool]
    fields: ClassVar[frozenset[str]] = frozenset()
    max_references: ClassVar[int] = 5
    max_identities: ClassVar[int] = 1  # people per picture (more_identities + the request's own face)
    separate_references: ClassVar[bool] = False  # several references → separate token groups, always
    concat_references: ClassVar[bool] = True  # combine=concat allowed (separate token groups on request)
    #: Listing order (CLI choices, ``GET /v1/methods``): lower first; the first method is the default.
    order: ClassVar[int] = 100
    #: Loads of methods with the same ``pipeline_key`` on one family share one loaded pipeline.
    pipeline_key: ClassVar[str] = ""
    #: Working-size cap (megapixels of a full-size model) per family: generation sizes, edits,
    #: ID-photo views, face-detail crops and control images work within it (settings
    #: ``work_megapixels_<family>`` override it).
    work_megapixels: ClassVar[dict[str, float]] = {}

    # ------------------------------------------------------------------ declarations

    def family_for(self, request: GenerationRequest) -> str:
        """The base family of ``request`` (``base`` or the default); a clear error for others."""
        if request.base is None:
            return self.families[0]
        if request.base not in self.families:
            names = " or ".join(FAMILY_LABELS.get(f, f) for f in self.families)
            raise InvalidInputError(f"{self.name} runs on {names} only; leave base unset or use {self.families[0]}")
        return request.base

    def normalise(self, embedding: np.ndarray) -> np.ndarray:
        """The method's embedding rule: unit length per reference (``normalised``) or raw."""
        emb = np.asarray(embedding, dtype=np.float32)
        if not self.normalised:
            return emb
        norms = np.linalg.norm(emb, axis=-1, keepdims=True)
        return np.where(norms > 0, emb / np.where(norms > 0, norms, 1), emb).astype(np.float32)

    def work_pixels(self, family: str, settings: Any = None, loader: Any = None) -> int:
        """The most pixels a stage of this method on ``family`` works at: the setting, else the
        method's declaration, else the family default; times the weights loader's ``work_scale``."""
        from faceanchor.methods.sizing import WORK_MEGAPIXELS

        mp = getattr(settings, f"work_megapixels_{family}", None)
        if mp is None:
            mp = self.work_megapixels.get(family, WORK_MEGAPIXELS.get(family, WORK_MEGAPIXELS["sdxl"]))
        return max(64 * 64 if family != "sd15" else 8 * 8, int(mp * 1_000_000 * getattr(loader, "work_scale", 1.0)))

    def honoured(self) -> frozenset[str]:
        return COMMON_FIELDS | self.fields

    def check_fields(self, request: GenerationRequest) -> None:
        """Refuse fields this method would ignore (set to anything but their default)."""
        unused = sorted(request.non_default_fields() - self.honoured())
        if unused:
            words = ", ".join(_FIELD_WORDS.get(f, f) for f in unused)
            raise InvalidInputError(f"{self.name} does not use {words}; leave {'it' if len(unused) == 1 else 'them'} unset for this method")

    def model_names(self, family: str | None = None) -> tuple[str, ...]:
        """Registry names of the models this method needs on ``family`` (optional ones last)."""
        return ()

    def models_used(self, models: dict[str, str], request: GenerationRequest) -> dict[str, str]:
        """The models of ``models`` (all loaded on this pipeline so far) that ``request`` used."""
        out = {}
        for k, v in models.items():
            if k.startswith("controlnet_") and k[len("controlnet_"):] not in request.controlnet_selection:
                continue
            if k.endswith("_lora") and k[: -len("_lora")] in _few_step_names() and k != f"{request.scheduler}_lora":
                continue
            if k.startswith("adapter_") and k != f"adapter_{request.method}":
                continue
            out[k] = v
        return out

    def effective_params(self, request: GenerationRequest) -> dict[str, Any]:
        """Request parameters this method resolves its own way (its defaults), for the result's
        ``params``; default: none (the request's own values are what ran)."""
        return {}

    def model_specs(self) -> tuple[Any, ...]:
        """Registry entries this method adds (a new method brings its own ModelSpecs)."""
        return ()

    def lora_names(self) -> tuple[str, ...]:
        """Names of the registry LoRAs a request's ``loras`` may give (methods that honour ``loras``)."""
        return ()

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (``GET /v1/methods``, ``faceanchor methods``)."""
        return {
            "name": self.name, "app": self.app, "label": self.label or self.name, "description": self.description,
            "families": list(self.families), "default_family": self.families[0], "embedding_space": self.space,
            "normalised_embedding": self.normalised, "fields": sorted(self.honoured()),
            "method_fields": sorted(self.fields), "max_references": self.max_references, "max_identities": self.max_identities,
            "renders": self.renders, "models": list(self.model_names()),
        }

    # ------------------------------------------------------------------ work

    @abstractmethod
    def load(self, loader: Any, family: str, request: GenerationRequest, id_dim: int) -> Loaded:
        """Build this method's pipeline on ``family`` from the weights loader's parts."""

    def cache_key(self, family: str, request: GenerationRequest, id_dim: int, loader: Any) -> tuple[Any, ...]:
        """Loads with equal keys share one loaded pipeline."""
        named = loader.honours_model_name
        return (self.pipeline_key or self.name, family, request.model_name if named else None,
                id_dim if loader.adapts_to_encoder else None)

    @abstractmethod
    def run(self, loaded: Loaded, ctx: RunContext) -> list[Any]:
        """Images (PIL) for ``ctx.seeds``, through the stages and step callback ``ctx`` provides."""

    def batch_key(self, request: GenerationRequest) -> Any:
        """What else must be equal for ``request`` to share one pipeline call with others (a
        hashable value; the engine adds method, base, models, size, steps, scheduler, guidance
        and dtype), or ``None``: ``request`` runs alone. Default: ``None`` (no batching)."""
        return None

    def run_many(self, loaded: Loaded, batch: Batch) -> list[list[Any]]:
        """Each request's images for a batch of requests whose ``batch_key`` is equal. Default:
        one :meth:`run` per request (for methods that batch only some of their requests)."""
        return [self.run(loaded, ctx) for ctx in batch.contexts]

    @property
    def renders(self) -> bool:
        return type(self).render is not Method.render

    def render(self, loaded: Loaded, ctx: RunContext, image: Any, kps: np.ndarray, *, strength: float,
               seed: int, mask: np.ndarray | None = None, face_box: np.ndarray | None = None,
               callback: Any = None) -> Any:
        raise InvalidInputError(f"{self.name} has no image-to-image; edits and the face-detail pass need a method that renders")
