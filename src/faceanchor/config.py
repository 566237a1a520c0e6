"""One settings object, validated once in an entry point and passed down.

Nothing here runs at import time: call :func:`load_settings` (or build :class:`Settings`)
in a CLI command, the API factory or a test, and hand the object to what needs it.
Environment variables use the prefix ``FACEANCHOR_`` (``FACEANCHOR_HOME``,
``FACEANCHOR_DEVICE``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cuda", "mps", "cpu"]
DType = Literal["auto", "fp16", "bf16", "fp32"]


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("faceanchor", appauthor=False))


class Settings(BaseSettings):
    """Every knob of faceanchor. Defaults suit one machine, embedded."""

    model_config = SettingsConfigDict(env_prefix="FACEANCHOR_", extra="ignore")

    home: Path = Field(default_factory=_default_home, description="Models, cache and data live here.")
    device: Device = "auto"
    dtype: DType = "auto"

    # Untrusted image limits (imageio).
    max_image_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)

    # Face analysis.
    face_pack: str = "dlib"
    insightface_root: Path = Field(default_factory=lambda: Path.home() / ".insightface")
    det_size: int = Field(default=640, ge=64)
    face_device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="onnxruntime providers of the face models: GPU first when onnxruntime-gpu is installed.")

    # Generation.
    weights: Literal["real", "dummy", "tiny"] = "real"  # dummy: full-size random; tiny: tiny random

    # Service.
    database_url: str | None = None
    max_body_bytes: int = Field(default=30 * 1024 * 1024, gt=0)
    max_prompt_chars: int = Field(default=2000, gt=0)
    rate_limit_per_minute: int = Field(default=60, ge=0)
    job_lease_seconds: float = Field(default=60.0, gt=0)
    webhook_secret: str | None = None
    # Service (issue 5): queue, limits and URL inputs.
    max_steps: int = Field(default=100, ge=1, le=100, description="Highest num_inference_steps the API accepts.")
    max_queue_size: int = Field(default=1000, ge=1, description="Queued jobs beyond this answer 503.")
    job_max_attempts: int = Field(default=3, ge=1, description="Leases of one job before it fails as crashing its worker.")
    workers: int = Field(default=1, ge=1, description="Worker threads (one per device); each gets its own engine.")
    worker_batch_max: int = Field(default=1, ge=1, le=16, description=(
        "Queued generation jobs a worker may run as one batch (same method, base, size, steps, scheduler, guidance...); 1: one at a time."))
    intake_concurrency: int = Field(default=4, ge=1, le=256, description=(
        "Submits validated and stored at once, each in a thread; more wait on the event loop holding only their body."))
    sync_timeout_seconds: float = Field(default=300.0, gt=0, description="Start deadline of synchronous requests (504 past it).")
    sse_keepalive_seconds: float = Field(default=15.0, gt=0)
    webhook_max_attempts: int = Field(default=5, ge=1)
    webhook_backoff_seconds: float = Field(default=1.0, ge=0, description="First retry delay of a webhook; doubles each retry.")
    url_fetch_timeout: float = Field(default=10.0, gt=0, description="Seconds for each URL input (connect, read and whole transfer).")
    allow_private_urls: bool = Field(default=False, description="Test mode: URL inputs and webhooks may reach loopback (127.0.0.0/8, ::1) only; every other private or link-local address stays refused.")
    api_model_names: list[str] = Field(default_factory=list, description="model_name values HTTP clients may ask for; empty: none.")
    api_lora_names: list[str] = Field(default_factory=list, description=(
        "loras[].model values HTTP clients may ask for besides the registry's (realism, anti_blur): LoRA files, folders or hub ids of this server."))
    engine_factory: str | None = Field(default=None, description="'module:function' building the engine for `faceanchor serve`.")
    # Service (issue 11): tenancy, signed URLs, retention, quotas.
    url_signing_secret: str | None = Field(default=None, description="HMAC secret of signed download URLs; default a random one in <data_dir>/url_signing_secret.")
    signed_url_seconds: int = Field(default=3600, ge=0, description="Lifetime of the signed download URLs in results and webhooks; 0: no signed URLs.")
    retention_days: float | None = Field(default=None, gt=0, description="Job inputs and outputs are deleted this many days after their last use; None: kept.")
    retention_check_seconds: float = Field(default=3600.0, gt=0, description="How often the retention cleanup runs.")
    images_per_day: int | None = Field(default=None, ge=0, description="Images each key may generate per UTC day (a key's own limit wins); None or 0: unlimited.")
    images_per_month: int | None = Field(default=None, ge=0, description="Images each key may generate per UTC calendar month; None or 0: unlimited.")

    # Speed and memory (pipelines.acceleration; issue 14). Defaults: measured safe everywhere.
    speed_tf32: bool = Field(default=True, description="TF32 matmuls/convolutions on CUDA.")
    speed_channels_last: bool = Field(default=False, description="UNet/ControlNets in channels-last memory format.")
    speed_fuse_qkv: bool = Field(default=False, description="Fused q/k/v projections in plain self-attention layers.")
    speed_compile: Literal["off", "unet", "all"] = Field(default="off", description="torch.compile the UNet, or UNet + ControlNets + VAE decoder.")
    speed_compile_backend: str = Field(default="inductor", description="torch.compile backend.")
    speed_vae_slicing: bool = Field(default=False, description="Decode a batch one image at a time (memory).")
    speed_vae_tiling: bool = Field(default=False, description="Decode large images in tiles (memory).")
    speed_cpu_offload: bool = Field(default=False, description="diffusers model CPU offload (CUDA only).")
    flux_quantize: Literal["none", "8bit"] = Field(default="none", description=(
        "8bit: InfuseNet, the FLUX transformer and T5 with optimum-quanto qint8 weights, as InfiniteYou's --quantize_8bit (the quant extra)."))
    speed_cross_attention_cache: bool = Field(default=True, description="Cross-attention keys/values once per generation.")
    speed_condition_cache: bool = Field(default=True, description="ControlNet condition-image embeddings once per generation.")
    speed_attention_slicing: int = Field(default=0, ge=0, description=(
        "Attention over query chunks of this many tokens (memory; e.g. 1024), identity processors kept; 0: off."))

    # Bounded work per request (README "Bounded work").
    work_megapixels_sdxl: float | None = Field(default=None, gt=0, description="Working-size cap of SDXL-class methods in megapixels; None: the method's own (1.31).")
    work_megapixels_sd15: float | None = Field(default=None, gt=0, description="Working-size cap of SD1.5 methods in megapixels; None: the method's own (0.4).")
    job_timeout_seconds: float = Field(default=1800.0, gt=0, description="A job running longer is stopped and fails with error type timeout; a request's `timeout` may lower it.")
    job_stuck_grace_seconds: float = Field(default=10.0, gt=0, description="A job still running this long after its cancel or time limit is stuck in native code: its worker process is recycled.")
    worker_processes: bool = Field(default=False, description="Run each worker's engine in a supervised child process (generation apps), recycled when a job is stuck in native code.")
    worker_write_queue: int = Field(default=1, ge=0, description=(
        "Finished results waiting to be encoded and stored by each worker's background writer while its engine runs the next "
        "job (a job is COMPLETED once its files are stored); 0: each result is stored before the next job starts."))

    # Trust (issue 16; README "Trust"): every output is marked; references must be one person.
    watermark: bool = Field(default=True, description="An invisible watermark (job id) on every output.")
    c2pa_cert_chain: Path | None = Field(default=None, description="PEM certificate chain (signer first, then its CA) for C2PA content credentials on every output; with c2pa_private_key.")
    c2pa_private_key: Path | None = Field(default=None, description="PEM private key of the C2PA signing certificate.")
    c2pa_signing_alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = Field(default="es256", description="The signing key's algorithm.")
    c2pa_trust_anchors: Path | None = Field(default=None, description="PEM CA certificates whose C2PA chains `verify` reports as trusted (e.g. the C2PA trust list, or your own CA).")
    c2pa_thumbnail: bool = Field(default=False, description="Embed c2pa's JPEG thumbnail in the manifest (~115 KB more per 1024 px output).")
    c2pa_timestamp_url: str | None = Field(default=None, description="An RFC 3161 time-stamp authority for the signatures; None: no time stamp.")
    safety_classifier: Path | None = Field(default=None, description="ONNX image classifier run on every output (unsafe probability); None: no safety filter.")
    safety_input_size: int = Field(default=224, ge=8, le=1024, description="Side the classifier's input is resized to.")
    safety_class_index: int = Field(default=-1, description="The unsafe column of a (N, K) classifier output.")
    safety_threshold: float = Field(default=0.5, ge=0.0, description="Scores at or above it are unsafe.")
    safety_policy: Literal["flag", "blur", "refuse"] = Field(default="flag", description="What an unsafe output gets: flagged in its metadata, blurred, or the job refused (422).")

    @field_validator("home", "insightface_root", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'faceanchor.db'}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, with explicit overrides winning."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)


def resolve_device(device: Device) -> str:
    """Map ``auto`` to the best available torch device; check an explicit one exists."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from faceanchor.errors import InvalidInputError

        raise InvalidInputError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if device == "mps" and not torch.backends.mps.is_available():
        from faceanchor.errors import InvalidInputError

        raise InvalidInputError("device 'mps' was asked for but MPS is not available; use --device cpu or auto")
    return device


def resolve_dtype(dtype: DType, device: str):
    """``auto`` is fp16 on CUDA/MPS and fp32 on CPU. fp16 on CPU becomes fp32 (CPU kernels
    for it are slow or missing); an explicit bf16 is kept (halves memory for dummy runs)."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if device == "cpu" and dtype != "bf16":
        return torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
