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

    # Generation.
    weights: Literal["real", "dummy"] = "real"

    # Service.
    database_url: str | None = None
    max_body_bytes: int = Field(default=30 * 1024 * 1024, gt=0)
    max_prompt_chars: int = Field(default=2000, gt=0)
    rate_limit_per_minute: int = Field(default=60, ge=0)
    job_lease_seconds: float = Field(default=60.0, gt=0)
    webhook_secret: str | None = None

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
    """``auto`` is fp16 on CUDA/MPS and fp32 on CPU; half precision on CPU is refused to fp32."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.float16
    if device == "cpu":
        return torch.float32
    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
