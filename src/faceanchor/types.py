"""Shared records: faces, the one generation request and result, progress, job states.

Imports nothing internal (but :mod:`faceanchor.errors`). The request field names follow
the hosted InstantID APIs so the HTTP layer and characters can reuse them as they are.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Callable, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# --------------------------------------------------------------------------- faces

#: Names of the five keypoints, in InsightFace order, as they appear in the image.
KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True, eq=False)
class QualityReport:
    """How usable a detected face is as an identity reference."""

    size_px: float  # the shorter side of the face box, in pixels
    blur: float  # variance of the Laplacian on the face crop; higher is sharper
    yaw_deg: float  # signed yaw estimated from the keypoints; 0 is frontal
    det_score: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "size_px": round(float(self.size_px), 2),
            "blur": round(float(self.blur), 2),
            "yaw_deg": round(float(self.yaw_deg), 2),
            "det_score": round(float(self.det_score), 4),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    ``bbox`` is ``(x1, y1, x2, y2)`` in pixels; ``kps`` is ``(5, 2)`` in
    :data:`KEYPOINT_NAMES` order; ``embedding`` is set once an encoder has run, together with
    ``space``, the name of the embedding space (``dlib``, ``antelopev2``, ``buffalo_l``...).
    """

    bbox: np.ndarray
    kps: np.ndarray
    det_score: float
    embedding: np.ndarray | None = None
    space: str | None = None
    quality: QualityReport | None = None
    faces_in_image: int | None = None  # how many faces the photo had (set by get_face: group photos)

    def __post_init__(self) -> None:
        bbox = np.asarray(self.bbox, dtype=np.float32).reshape(4)
        kps = np.asarray(self.kps, dtype=np.float32).reshape(5, 2)
        object.__setattr__(self, "bbox", bbox)
        object.__setattr__(self, "kps", kps)
        if self.embedding is not None:
            object.__setattr__(self, "embedding", np.asarray(self.embedding, dtype=np.float32).reshape(-1))

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))

    @property
    def normed_embedding(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        n = float(np.linalg.norm(self.embedding))
        return self.embedding / n if n > 0 else self.embedding

    def with_(self, **changes: Any) -> "Face":
        return replace(self, **changes)

    def to_dict(self, include_embedding: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "kps": {name: [round(float(x), 2), round(float(y), 2)] for name, (x, y) in zip(KEYPOINT_NAMES, self.kps)},
            "det_score": round(float(self.det_score), 4),
            "space": self.space,
        }
        if self.quality is not None:
            d["quality"] = self.quality.to_dict()
        if include_embedding and self.embedding is not None:
            d["embedding"] = [float(v) for v in self.embedding]
        return d


# --------------------------------------------------------------------------- progress


@dataclass(frozen=True)
class ProgressEvent:
    """One unit of reported progress. ``step``/``total`` are set during denoising."""

    stage: str  # "face", "prompt", "denoise", "decode", "score", ...
    step: int = 0
    total: int = 0
    message: str = ""
    sample: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "step": self.step, "total": self.total, "message": self.message, "sample": self.sample}


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


# --------------------------------------------------------------------------- generation

#: A method name (see :mod:`faceanchor.methods`: the registry is the one list of methods).
Method = str
METHOD_PATTERN = r"^[a-z][a-z0-9_.-]{0,63}$"
PromptWeighting = Literal["plain", "compel"]
ControlName = Literal["pose", "canny", "depth"]
Scheduler = Literal["euler", "euler_a", "dpmpp_2m", "ddim", "unipc", "lcm", "lightning", "hyper", "tcd"]
OutputFormat = Literal["png", "jpeg", "webp"]
CombineMode = Literal["average", "norm-average", "concat"]
BaseFamily = Literal["sd15", "sdxl", "flux"]

#: Largest pixel coordinate or photo side a precomputed face may have.
MAX_COORD = 100_000

#: Defaults of the official InstantID demo (and of LCM mode).
DEFAULT_STEPS = 30
DEFAULT_GUIDANCE = 5.0
LCM_STEPS = 5
LCM_GUIDANCE = 1.5


def _valid_box(box: list[float]) -> bool:
    return len(box) == 4 and -MAX_COORD <= box[0] < box[2] <= MAX_COORD and -MAX_COORD <= box[1] < box[3] <= MAX_COORD


class PlacedIdentity(BaseModel):
    """One more person in the picture (up to 3 besides the request's own face): a face, where it
    goes, and its own strengths. Placement: ``box`` (output pixels) or, with the request's
    ``pose_image``, the pose photo's faces left to right (``pose_index`` picks another)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    face_image: str | bytes | None = Field(None, description="This person's reference photo.")
    face_embedding: list[float] | None = Field(None, description="Or a precomputed embedding (with face_kps).")
    face_embedding_space: str | None = None
    face_kps: list[list[float]] | None = None
    face_bbox: list[float] | None = None
    face_image_size: tuple[int, int] | None = None
    face_index: int | None = Field(None, ge=0, description="Which face of the photo (largest first).")
    box: list[float] | None = Field(None, description="Where this person's face goes: (x1, y1, x2, y2) in output pixels.")
    pose_index: int | None = Field(None, ge=0, description="Which face of pose_image (left to right) this person takes.")
    identity_strength: float | None = Field(None, ge=0.0, le=2.0, description="Default: the request's.")
    adapter_strength: float | None = Field(None, ge=0.0, le=2.0, description="Default: the request's.")

    @model_validator(mode="after")
    def _check(self) -> "PlacedIdentity":
        if self.face_image is None and self.face_embedding is None:
            raise ValueError("each identity needs a face_image or a face_embedding")
        if self.box is not None and not _valid_box(self.box):
            raise ValueError("box must be (x1, y1, x2, y2) with x1 < x2 and y1 < y2, in output pixels")
        if self.face_kps is not None and np.asarray(self.face_kps, dtype=np.float32).shape != (5, 2):
            raise ValueError("face_kps must be 5 points of (x, y)")
        return self


class GenerationRequest(BaseModel):
    """Everything one generation needs. Names follow the hosted InstantID APIs.

    An image input is a local path, raw bytes, base64 text or a ``data:`` URI (the HTTP layer
    resolves URLs before it builds a request).
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    method: Method = Field("instantid", pattern=METHOD_PATTERN, description="A method name; `GET /v1/methods` / `faceanchor generate --help` list them.")
    face_image: str | bytes | None = Field(None, description="The reference face photo.")
    face_images: list[str | bytes] = Field(default_factory=list, description="More references of the same person (up to 5).")
    face_embedding: list[float] | None = Field(None, description="A precomputed identity embedding instead of a photo.")
    face_embeddings: list[list[float]] | None = Field(None, description="Several precomputed embeddings (one per reference, up to 5).")
    face_embedding_space: str | None = Field(None, description="Space of face_embedding(s) (antelopev2, buffalo_l, dlib).")
    face_crop: str | bytes | None = Field(None, description="FaceID-Plus/PlusV2 with precomputed embeddings: the aligned face crop (224 px) for CLIP.")
    face_kps: list[list[float]] | None = Field(None, description="Precomputed 5x2 keypoints for the control image.")
    face_bbox: list[float] | None = Field(None, description="Precomputed face box (x1, y1, x2, y2) for the face-region mask.")
    face_image_size: tuple[int, int] | None = Field(None, description="(width, height) of the photo face_kps came from.")
    face_index: int | None = Field(None, ge=0, description="Which face to use, in the documented order (largest first); default the largest.")
    combine: CombineMode = Field("average", description="How several references combine: average, norm-average or concat.")
    allow_different_people: bool = Field(False, description="Blend references of different people on purpose: skips the same-person refusal (recorded in the result's params.same_person).")

    prompt: str = Field("", max_length=10_000)
    negative_prompt: str = Field("", max_length=10_000)
    style: str = Field("(No style)", description="A style preset name; see `faceanchor styles`.")

    num_inference_steps: int | None = Field(None, ge=1, le=100, description="Denoising steps, 1-100. Default 30 (LCM: 5).")
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0, description="Classifier-free guidance, 0-30. Default 5 (LCM: 1.5).")
    seed: int = Field(-1, ge=-1, le=2**63 - 1, description="-1 picks a random seed; the used seed is returned.")
    samples: int = Field(1, ge=1, le=4, description="Images per request, 1-4.")
    best_of: int = Field(1, ge=1, le=8, description="Generate this many per sample and keep the best by identity score.")
    width: int | None = Field(None, ge=64, le=2048, description="Rounded down to a multiple of 64 (SD1.5: 8). Default from the face photo.")
    height: int | None = Field(None, ge=64, le=2048)

    identity_strength: float = Field(0.8, ge=0.0, le=2.0, description="IdentityNet (ControlNet) scale, 0-2.")
    adapter_strength: float = Field(0.8, ge=0.0, le=2.0, description="IP-Adapter scale, 0-2.")
    enhance_face_region: bool = Field(True, description="Confine identity conditioning to the face region.")
    controlnet_selection: list[ControlName] = Field(default_factory=list, description="Extra ControlNets: pose, canny, depth.")
    controlnet_conditioning_scale: float = Field(0.4, ge=0.0, le=2.0, description="Scale of each extra ControlNet.")
    controlnet_scales: dict[ControlName, Annotated[float, Field(ge=0.0, le=2.0)]] = Field(
        default_factory=dict, description="Per extra ControlNet scale, 0-2, e.g. {\"pose\": 0.6, \"canny\": 0.3}; the others take controlnet_conditioning_scale.")
    pose_image: str | bytes | None = Field(None, description="Take keypoints (and body pose) from this photo instead.")
    control_guidance_start: float = Field(0.0, ge=0.0, le=1.0, description="Fraction of steps where identity conditioning starts.")
    control_guidance_end: float = Field(1.0, ge=0.0, le=1.0, description="Fraction of steps where it ends.")
    negative_embedding_noise: float = Field(0.0, ge=0.0, le=10.0, description="Std of noise added to the negative identity embedding.")
    scheduler: Scheduler = Field("euler", description="euler, euler_a, dpmpp_2m, ddim, unipc, or a few-step preset with its LoRA: lcm (5 steps, guidance 1.5), lightning (SDXL, 4, 0), hyper (8, 5), tcd (4, 0).")

    s_scale: float = Field(1.0, ge=0.0, le=3.0, description="FaceID-PlusV2: weight of the CLIP face structure.")
    lora_scale: float = Field(1.0, ge=0.0, le=2.0, description="FaceID: scale of the LoRA shipped with the adapter.")
    base: BaseFamily | None = Field(None, description="sd15 or sdxl for FaceID methods; InstantID is SDXL; InfiniteYou is FLUX.")

    model_name: str | None = Field(None, description="Base model: hub id, local diffusers folder or single .safetensors file.")
    adapter_model: str | None = Field(None, description="Identity adapter checkpoint (ip-adapter.bin / FaceID .bin): hub id or local file/folder.")
    identitynet_model: str | None = Field(None, description="InstantID IdentityNet: hub id or local ControlNet folder.")
    prompt_weighting: PromptWeighting = Field("plain", description="plain (diffusers' encoding) or compel: (word:1.3) weights and prompts past 77 tokens.")
    output_format: OutputFormat = "png"
    face_detail: bool = Field(False, description="Re-render small faces at higher resolution.")
    face_box: list[float] | None = Field(None, description="Several people: where this request's face goes, (x1, y1, x2, y2) in output pixels.")
    more_identities: list[PlacedIdentity] = Field(default_factory=list, max_length=3, description="More people in the picture, each in its own region (InstantID, the FaceID family, InfiniteYou).")

    @model_validator(mode="after")
    def _check(self) -> "GenerationRequest":
        if self.control_guidance_start >= self.control_guidance_end:
            raise ValueError("control_guidance_start must be below control_guidance_end")
        stray = sorted(set(self.controlnet_scales) - set(self.controlnet_selection))
        if stray:
            raise ValueError(f"controlnet_scales: {', '.join(stray)} is not in controlnet_selection")
        if len(self.face_images) + (1 if self.face_image is not None else 0) > 5:
            raise ValueError("at most 5 face images per request")
        if self.face_kps is not None:
            arr = np.asarray(self.face_kps, dtype=np.float32)
            if arr.shape != (5, 2):
                raise ValueError("face_kps must be 5 points of (x, y)")
        if self.face_bbox is not None and len(self.face_bbox) != 4:
            raise ValueError("face_bbox must be (x1, y1, x2, y2)")
        if self.face_box is not None and not _valid_box(self.face_box):
            raise ValueError("face_box must be (x1, y1, x2, y2) with x1 < x2 and y1 < y2, in output pixels")
        if self.face_image_size is not None and not all(0 < v <= MAX_COORD for v in self.face_image_size):
            raise ValueError(f"face_image_size must be a (width, height) between 1 and {MAX_COORD}")
        if self.face_embedding is not None and len(self.face_embedding) == 0:
            raise ValueError("face_embedding must not be empty")
        if self.face_embeddings is not None:
            if self.face_embedding is not None:
                raise ValueError("give face_embedding or face_embeddings, not both")
            if not 1 <= len(self.face_embeddings) <= 5:
                raise ValueError("face_embeddings takes 1 to 5 embeddings")
            if len({len(e) for e in self.face_embeddings}) != 1 or len(self.face_embeddings[0]) == 0:
                raise ValueError("face_embeddings must all have the same, non-zero length")
        for name in ("face_embedding", "face_embeddings", "face_kps", "face_bbox"):
            value = getattr(self, name)
            if value is not None and not np.isfinite(np.asarray(value, dtype=np.float64)).all():
                raise ValueError(f"{name} must hold finite numbers (no NaN or infinity)")
        for name in ("face_kps", "face_bbox"):
            value = getattr(self, name)
            if value is not None and np.abs(np.asarray(value, dtype=np.float64)).max() > MAX_COORD:
                raise ValueError(f"{name} coordinates must lie within ±{MAX_COORD} pixels")
        return self

    @property
    def precomputed(self) -> bool:
        """True when the identity comes as embedding(s), not photos."""
        return self.face_embedding is not None or self.face_embeddings is not None

    def non_default_fields(self) -> set[str]:
        """Fields set to something other than their default (what a method must honour or refuse)."""
        out = set()
        for name in self.model_fields_set & set(GenerationRequest.model_fields):  # transport fields (base64) aside
            info = GenerationRequest.model_fields[name]
            default = info.get_default(call_default_factory=True)
            if getattr(self, name) != default:
                out.add(name)
        return out

    @property
    def references(self) -> list[str | bytes]:
        """Every reference photo, the main one first."""
        return ([self.face_image] if self.face_image is not None else []) + list(self.face_images)

    @property
    def steps(self) -> int:
        if self.num_inference_steps is not None:
            return self.num_inference_steps
        from faceanchor.models.few_step import PRESETS

        return PRESETS[self.scheduler].steps if self.scheduler in PRESETS else DEFAULT_STEPS

    @property
    def guidance(self) -> float:
        if self.guidance_scale is not None:
            return self.guidance_scale
        from faceanchor.models.few_step import PRESETS

        return PRESETS[self.scheduler].guidance if self.scheduler in PRESETS else DEFAULT_GUIDANCE

    def public_params(self) -> dict[str, Any]:
        """The parameters worth recording with an output (no image bytes)."""
        skip = {"face_image", "face_images", "pose_image", "face_embedding", "face_embeddings", "face_crop", "face_kps", "face_bbox", "more_identities"}
        out = self.model_dump(exclude=skip)
        if self.more_identities:
            out["more_identities"] = [i.model_dump(include={"box", "pose_index", "identity_strength", "adapter_strength", "face_index"})
                                      for i in self.more_identities]
        out["num_inference_steps"] = self.steps
        out["guidance_scale"] = self.guidance
        out["references"] = len(self.references)
        return out


@dataclass
class GeneratedImage:
    """One output image with its seed and identity score."""

    image: Any  # PIL.Image.Image
    seed: int
    identity_score: float | None = None  # several people: the lowest of identity_scores
    identity_reason: str | None = None  # why the score is null
    identity_scores: list[float | None] | None = None  # several people: one per identity, in request order


@dataclass
class GenerationResult:
    """What :meth:`Engine.generate` returns."""

    images: list[GeneratedImage]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "seeds": [im.seed for im in self.images],
            "identity_scores": [im.identity_score for im in self.images],
            **({"identity_scores_per_person": [im.identity_scores for im in self.images]}
               if any(im.identity_scores is not None for im in self.images) else {}),
            "params": self.params,
            "models": self.models,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "warnings": self.warnings,
        }


# --------------------------------------------------------------------------- jobs


class JobStatus(str, enum.Enum):
    """Queue states, named as the hosted queue APIs name them."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


class GenerationEngine(Protocol):
    """What the service and the API need of an engine (tests pass tiny ones)."""

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> GenerationResult: ...


# --------------------------------------------------------------------------- identity


@dataclass
class Identity:
    """What generation needs of the reference face(s), as the engine's face stage found it.

    ``embedding`` is the method's input after its normalisation rule (see
    :mod:`faceanchor.methods`): ``(D,)``, or ``(K, D)`` when references stay separate token
    groups (concat, Portrait). ``reference`` is the raw embedding outputs are scored against.
    """

    embedding: np.ndarray
    space: str
    kps: np.ndarray | None  # (5, 2) in the coordinates of ``image_size``
    bbox: np.ndarray | None
    image_size: tuple[int, int] | None  # (width, height) of the photo kps refer to
    reference: np.ndarray
    image: Any = None  # PIL image of the main reference (CLIP crop, canny/pose/depth source)
    faces: tuple[Face, ...] = ()
    face_crop: Any = None  # an aligned face crop given with a precomputed embedding (FaceID-Plus)


class CharacterEngine(Protocol):
    """What characters (ID photo, edits, the face-detail pass) need of an engine, and nothing more.

    ``lock`` serialises whole character operations (re-entrant: :meth:`generate` takes it too).
    ``render`` is image-to-image / inpainting with the identity, for methods that offer it
    (:meth:`can_render` says why not otherwise); ``render_size`` is the side a face crop is
    re-rendered at; ``work_pixels`` the working-size cap every render stays within; ``method(name)``
    the registry's method object (its declarations).
    """

    lock: Any
    render_size: int

    def method(self, name: str) -> Any: ...

    def identity(self, request: GenerationRequest) -> Identity: ...

    def analyzer(self, pack: str | None = None) -> Any: ...

    def score(self, images: list[Any], identity: Identity) -> list[tuple[float | None, str | None]]: ...

    def can_render(self, method: str) -> str | None: ...

    def work_pixels(self, request: GenerationRequest) -> int: ...

    def render(
        self,
        request: GenerationRequest,
        identity: Identity,
        image: Any,
        kps: np.ndarray,
        *,
        strength: float,
        seed: int,
        mask: np.ndarray | None = None,
        face_box: np.ndarray | None = None,
        on_step: Callable[[int, int], None] | None = None,
        cancel: CancelCheck | None = None,
    ) -> Any: ...

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> GenerationResult: ...
