"""Request and response bodies of the HTTP API (OpenAPI is generated from these)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from faceanchor.types import METHOD_PATTERN, GenerationRequest, JobStatus, Method, PlacedIdentity

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: Pixel coordinates and sizes of a face photo: bounded so the control image's integer maths cannot overflow.
MAX_PIXELS_SIDE = 100_000
Coordinate = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_PIXELS_SIDE, le=MAX_PIXELS_SIDE)]
Side = Annotated[int, Field(ge=1, le=MAX_PIXELS_SIDE)]
ImageRef = Annotated[str, Field(min_length=1, description="An http(s) URL, a data: URI or base64 text of a JPEG, PNG or WEBP.")]


class PlacedIdentityBody(PlacedIdentity):
    """One more person; its photo is a URL, ``data:`` URI or base64 like every image field."""

    face_image: ImageRef | None = Field(None, description="This person's reference photo: URL, data: URI or base64.")


class GenerateBody(GenerationRequest):
    """The generation request as JSON. Image fields take a URL, a ``data:`` URI or base64."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"prompt": "a portrait in a garden", "face_image": "https://example.com/face.jpg"}]})

    method: Method | None = Field(None, pattern=METHOD_PATTERN, description="A method served by this app (GET /v1/methods); default the app's first.")
    face_image: ImageRef | None = Field(None, description="The reference face photo: URL, data: URI or base64.")
    face_images: list[ImageRef] = Field(default_factory=list, max_length=5, description="More references of the same person.")
    pose_image: ImageRef | None = Field(None, description="Take keypoints from this photo instead.")
    face_crop: ImageRef | None = Field(None, description="FaceID-Plus/PlusV2 with a precomputed embedding: the aligned face crop.")
    face_embeddings: list[Annotated[list[FiniteFloat], Field(min_length=1, max_length=4096)]] | None = Field(None, min_length=1, max_length=5)
    face_embedding: list[FiniteFloat] | None = Field(None, min_length=1, max_length=4096)
    face_embedding_space: str | None = Field(None, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$",
                                             description="Space of face_embedding (antelopev2, buffalo_l, dlib).")
    face_kps: list[Annotated[list[Coordinate], Field(min_length=2, max_length=2)]] | None = Field(None, min_length=5, max_length=5)
    face_bbox: list[Coordinate] | None = Field(None, min_length=4, max_length=4, description="Face box (x1, y1, x2, y2) in the photo face_kps came from.")
    face_image_size: tuple[Side, Side] | None = Field(None, description="(width, height) of the photo face_kps came from.")
    more_identities: list[PlacedIdentityBody] = Field(default_factory=list, max_length=3, description="More people in the picture, each in its own region (InstantID, the FaceID family, InfiniteYou).")
    base64: bool = Field(False, description="Synchronous calls: true returns JSON with base64 images; false returns the image bytes (several samples: a JSON list of image links).")


class Progress(BaseModel):
    stage: str
    step: int = 0
    total: int = 0
    message: str = ""
    sample: int = 0
    fraction: float | None = None


class LogLine(BaseModel):
    timestamp: float
    message: str


class JobError(BaseModel):
    type: str
    message: str


class QueueSubmitted(BaseModel):
    request_id: str
    status: JobStatus
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None = None


class JobStatusBody(BaseModel):
    request_id: str
    status: JobStatus
    queue_position: int | None = Field(None, description="Jobs ahead of this one (IN_QUEUE only).")
    progress: Progress | None = None
    logs: list[LogLine] | None = Field(None, description="With ?logs=1.")
    error: JobError | None = None
    response_url: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0


class ImageOut(BaseModel):
    url: str
    file_id: str
    content_type: str
    width: int
    height: int
    seed: int
    identity_score: float | None = None
    identity_reason: str | None = None
    identity_scores: list[float | None] | None = Field(None, description="Several people: one score per person, in request order (identity_score is the lowest).")
    signed_url: str | None = Field(None, description="The image without the API key, until it expires (?expires=&sig=).")
    trust: dict[str, Any] | None = Field(None, description="What was done to this output: job_id, watermark (payload), credentials (C2PA), safety.")


class GenerationOut(BaseModel):
    request_id: str
    status: JobStatus
    images: list[ImageOut]
    seed: int
    seeds: list[int]
    identity_scores: list[float | None]
    timings: dict[str, float]
    params: dict[str, Any] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class Base64Out(BaseModel):
    request_id: str
    image: str = Field(description="The first image, base64.")
    images: list[str] = Field(description="Every image, base64.")
    content_type: str
    seed: int
    seeds: list[int]
    identity_scores: list[float | None]
    timings: dict[str, float]
    warnings: list[str] = Field(default_factory=list)


class CancelOut(BaseModel):
    status: Literal["CANCELLATION_REQUESTED", "ALREADY_COMPLETED"]


class HealthOut(BaseModel):
    status: Literal["starting", "loading", "ready", "busy", "error"]
    workers: int
    busy_workers: int
    queue_depth: int
    load_seconds: float | None = None
    error: str | None = None
