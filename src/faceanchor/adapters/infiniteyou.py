"""InfiniteYou's identity projection: the Resampler that turns one face embedding into the
identity tokens InfuseNet reads as its encoder states.

The official ``pipelines/pipeline_infu_flux.py`` builds ``Resampler(dim=1280, depth=4,
dim_head=64, heads=20, num_queries=8, embedding_dim=512, output_dim=4096, ff_mult=4)`` (the same
perceiver as InstantID's, see :mod:`faceanchor.adapters.resampler`), loads
``torch.load(<model_dir>/image_proj_model.bin)["image_proj"]`` into it, and feeds it the
embedding reshaped ``(1, -1, 512)``; the output ``(B, 8, 4096)`` has the width of FLUX's T5
states, which InfuseNet's ``context_embedder`` takes.

There is no ``ip_adapter`` section: the checkpoint holds the projection only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from faceanchor.adapters.resampler import Resampler, ResamplerConfig, resampler_config_from_state_dict
from faceanchor.errors import CheckpointError, ModelNotFoundError

#: The released projection (``image_proj_num_tokens=8``, ``image_emb_dim=512``).
OFFICIAL_PROJECTION = ResamplerConfig(dim=1280, depth=4, dim_head=64, heads=20, num_queries=8, embedding_dim=512, output_dim=4096, ff_mult=4)
#: The checkpoint's file name in each model-version folder (``infu_flux_v1.0/<version>/``).
CHECKPOINT_NAME = "image_proj_model.bin"


def tiny_projection_config(embedding_dim: int = 512, output_dim: int = 32) -> ResamplerConfig:
    """The same structure at a size tests build in milliseconds (8 queries and 64-wide heads kept:
    a checkpoint's ``dim_head`` cannot be read from its weights)."""
    return ResamplerConfig(dim=64, depth=2, dim_head=64, heads=2, num_queries=8, embedding_dim=embedding_dim, output_dim=output_dim, ff_mult=4)


def _read(source: str | Path | Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    if isinstance(source, Mapping):
        return source, "the given state dict"
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ModelNotFoundError(
            f"InfiniteYou projection {path} does not exist; it is {CHECKPOINT_NAME} in "
            "ByteDance/InfiniteYou's infu_flux_v1.0/<aes_stage2|sim_stage1>/ folder"
        )
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu"), str(path)
        return torch.load(str(path), map_location="cpu", weights_only=True), str(path)
    except Exception as exc:  # corrupt file, pickled code, wrong format
        raise CheckpointError(
            f"could not read InfiniteYou projection {path} ({type(exc).__name__}: {exc}); expected the torch file "
            f"{CHECKPOINT_NAME} holding {{'image_proj': <Resampler state dict>}}"
        ) from exc


def projection_state(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The ``image_proj`` state dict of an ``image_proj_model.bin`` (file, its folder, or a mapping).

    Accepts the nested ``{"image_proj": {...}}`` layout and the flattened ``image_proj.<key>`` one.
    """
    raw, where = _read(source)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{where} is a {type(raw).__name__}, expected a mapping {{'image_proj': ...}}")
    if isinstance(raw.get("image_proj"), Mapping):
        extra = sorted(set(raw) - {"image_proj"})
        if extra:
            raise CheckpointError(f"{where} has unexpected top-level entries {extra}; an InfiniteYou projection holds only 'image_proj'")
        return dict(raw["image_proj"])
    flat = {str(k).partition(".")[2]: v for k, v in raw.items() if str(k).startswith("image_proj.")}
    if flat and len(flat) == len(raw):
        return flat
    found = sorted({str(k).split(".")[0] for k in raw})[:6]
    hint = " (this looks like an IP-Adapter/InstantID file: give InfiniteYou's image_proj_model.bin)" if "ip_adapter" in found else ""
    raise CheckpointError(f"{where} is not an InfiniteYou projection: expected a section 'image_proj', found top-level names {found}{hint}")


def load_projection(source: str | Path | Mapping[str, Any], *, output_dim: int | None = None, embedding_dim: int | None = None,
                    device: str = "cpu", dtype: torch.dtype = torch.float32) -> Resampler:
    """The Resampler of an ``image_proj_model.bin``, sized from its weights, checked against what it feeds.

    ``output_dim``: InfuseNet's ``joint_attention_dim`` (its token width, 4096 for FLUX);
    ``embedding_dim``: the face encoder's dimension (512 for facexlib's ArcFace).
    """
    state = projection_state(source)
    try:
        cfg = resampler_config_from_state_dict(state, dim_head=OFFICIAL_PROJECTION.dim_head)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(
            f"the 'image_proj' section is not an InfiniteYou Resampler ({type(exc).__name__}: {exc}); expected keys "
            "'latents', 'proj_in.*', 'layers.<i>.0.to_q.weight', ..., 'proj_out.*', 'norm_out.*'"
        ) from None
    if output_dim is not None and cfg.output_dim != output_dim:
        raise CheckpointError(
            f"the projection outputs {cfg.output_dim}-wide identity tokens but InfuseNet takes {output_dim}-wide encoder "
            "states; use the image_proj_model.bin of the same InfiniteYou version as the InfuseNetModel"
        )
    if embedding_dim is not None and cfg.embedding_dim != embedding_dim:
        raise CheckpointError(
            f"the projection takes {cfg.embedding_dim}-D face embeddings but the face encoder gives {embedding_dim}-D; "
            "InfiniteYou needs facexlib's ArcFace (512-D)"
        )
    with torch.device("meta"):
        model = Resampler(cfg)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the 'image_proj' section does not fit the Resampler read as {cfg}: {str(exc).splitlines()[0]}") from None
    return model.to(device=device, dtype=dtype).eval()


def random_projection(config: ResamplerConfig, *, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Resampler:
    """A Resampler with seeded random weights (the global torch RNG is not touched)."""
    from faceanchor.models.dummy import seeded_init

    with seeded_init(seed):
        model = Resampler(config)
    return model.to(device=device, dtype=dtype).eval()


def identity_tokens(projection: Resampler, embedding: torch.Tensor) -> torch.Tensor:
    """``(B, 8, width)`` identity tokens of ``(512,)``/``(B, 512)``/``(B, T, 512)`` embeddings (the
    official reshape to ``(B, -1, 512)``), in the projection's dtype and device."""
    p = next(projection.parameters())
    emb = torch.as_tensor(embedding).to(device=p.device, dtype=p.dtype)
    if emb.ndim == 1:
        emb = emb[None]
    emb = emb.reshape(emb.shape[0], -1, projection.embedding_dim)
    with torch.no_grad():
        return projection(emb)
