"""Read, describe, check and write IP-Adapter-FaceID checkpoints in the official layout.

The official files (``h94/IP-Adapter-FaceID``: ``ip-adapter-faceid_sd15.bin``,
``ip-adapter-faceid-plusv2_sd15.bin``, ``ip-adapter-faceid-portrait_sd15.bin``, their ``_sdxl``
siblings...) hold ``{"image_proj": {...}, "ip_adapter": {...}}``. ``image_proj`` is the
projection's state dict (``proj.0.weight``, ``norm.weight``, ``perceiver_resampler.*``);
``ip_adapter`` is the state dict of ``torch.nn.ModuleList(unet.attn_processors.values())``, so
each key starts with the processor's index in that order: ``"1.to_k_ip.weight"``,
``"0.to_q_lora.down.weight"``... A ``.safetensors`` file holds the same tensors flattened with
``image_proj.`` / ``ip_adapter.`` prefixes.

Every tensor must be used: missing, unexpected or mis-shaped keys raise
:class:`~faceanchor.errors.CheckpointError` naming the first few and what was expected.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from faceanchor.errors import CheckpointError, ModelNotFoundError

SECTIONS = ("image_proj", "ip_adapter")


@dataclass(frozen=True)
class FaceIDCheckpointLayout:
    """What a checkpoint's tensors say about the adapter that wrote it."""

    projection: str  # "mlp" (FaceID, Portrait) or "plus" (Plus, PlusV2)
    id_dim: int
    cross_attention_dim: int
    num_tokens: int
    clip_dim: int | None
    has_lora: bool
    lora_rank: int | None

    @property
    def likely_methods(self) -> tuple[str, ...]:
        if self.projection == "plus":
            return ("faceid-plus", "faceid-plusv2")
        return ("faceid",) if self.has_lora else ("faceid-portrait",)


def read_faceid_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """Load a ``.bin``/``.pt``/``.pth`` (torch pickle of tensors) or ``.safetensors`` checkpoint."""
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(
            f"IP-Adapter-FaceID checkpoint {p} does not exist; download it from the h94/IP-Adapter-FaceID "
            "repository (e.g. ip-adapter-faceid_sd15.bin) or point to a local copy"
        )
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            flat = load_file(str(p), device="cpu")
            state: dict[str, dict[str, torch.Tensor]] = {s: {} for s in SECTIONS}
            stray = []
            for key, t in flat.items():
                section, _, rest = key.partition(".")
                if section in state and rest:
                    state[section][rest] = t
                else:
                    stray.append(key)
            if stray:
                raise CheckpointError(
                    f"{p.name} has keys outside 'image_proj.' and 'ip_adapter.' (e.g. {stray[:3]}); "
                    "it is not an IP-Adapter-FaceID checkpoint"
                )
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt or foreign file
        raise CheckpointError(f"{p.name} could not be read as a checkpoint ({type(exc).__name__}: {exc})") from exc
    check_sections(state, source=p.name)
    return state


def check_sections(state: object, source: str = "checkpoint") -> None:
    """The top level must be exactly ``{"image_proj": dict, "ip_adapter": dict}`` of tensors."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} is not a mapping; expected {{'image_proj': ..., 'ip_adapter': ...}}")
    keys = set(state.keys())
    if keys != set(SECTIONS):
        raise CheckpointError(
            f"{source} has top-level keys {sorted(map(str, keys))[:6]}; an IP-Adapter-FaceID checkpoint has exactly "
            "'image_proj' (the projection) and 'ip_adapter' (the attention processors)"
        )
    for s in SECTIONS:
        sec = state[s]
        if not isinstance(sec, Mapping) or not all(isinstance(v, torch.Tensor) for v in sec.values()):
            raise CheckpointError(f"{source}['{s}'] must be a mapping of parameter names to tensors")
        if not sec:
            raise CheckpointError(
                f"{source} has no '{s}' tensors (a .safetensors file needs keys prefixed '{s}.'); an IP-Adapter-FaceID "
                "checkpoint holds both the projection ('image_proj') and the attention processors ('ip_adapter')"
            )


def describe_checkpoint(state: Mapping[str, Mapping[str, torch.Tensor]], source: str = "checkpoint") -> FaceIDCheckpointLayout:
    """Infer projection kind, dimensions, token count and LoRA rank from the tensors."""
    check_sections(state, source)
    proj, ip = state["image_proj"], state["ip_adapter"]
    need = ("proj.0.weight", "proj.2.weight", "norm.weight")
    absent = [k for k in need if k not in proj]
    if absent:
        raise CheckpointError(
            f"{source}['image_proj'] lacks {absent}; expected the FaceID MLP projection "
            "(proj.0 → GELU → proj.2, then norm)"
        )
    id_dim = int(proj["proj.0.weight"].shape[1])
    cross = int(proj["norm.weight"].shape[0])
    out = int(proj["proj.2.weight"].shape[0])
    if cross <= 0 or out % cross:
        raise CheckpointError(f"{source}: proj.2 gives {out} values, not a whole number of {cross}-wide tokens")
    plus = any(k.startswith("perceiver_resampler.") for k in proj)
    clip_dim = int(proj["perceiver_resampler.proj_in.weight"].shape[1]) if "perceiver_resampler.proj_in.weight" in proj else None
    if plus and clip_dim is None:
        raise CheckpointError(f"{source}['image_proj'] has a perceiver_resampler without proj_in.weight")
    rank = None
    for k, t in ip.items():
        if k.endswith("to_q_lora.down.weight"):
            rank = int(t.shape[0])
            break
    return FaceIDCheckpointLayout(
        projection="plus" if plus else "mlp",
        id_dim=id_dim,
        cross_attention_dim=cross,
        num_tokens=out // cross,
        clip_dim=clip_dim,
        has_lora=rank is not None,
        lora_rank=rank,
    )


def load_exact(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy ``state`` into ``module`` only if every key and shape matches both ways."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with the wrong shape (e.g. {k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
            )
        raise CheckpointError(
            f"{what} does not fit: " + "; ".join(parts) + ". Check that the checkpoint is the FaceID variant you asked "
            "for and was made for this base model (SD1.5 vs SDXL)"
        )
    module.load_state_dict(dict(state), strict=True)


def write_faceid_checkpoint(
    path: str | Path, image_proj: Mapping[str, torch.Tensor], ip_adapter: Mapping[str, torch.Tensor]
) -> Path:
    """Write the official layout: a torch pickle for ``.bin``, prefixed flat keys for ``.safetensors``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    ip_ = {k: v.detach().cpu().contiguous() for k, v in image_proj.items()}
    ad_ = {k: v.detach().cpu().contiguous() for k, v in ip_adapter.items()}
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        flat = {f"image_proj.{k}": v for k, v in ip_.items()}
        flat.update({f"ip_adapter.{k}": v for k, v in ad_.items()})
        save_file(flat, str(p))
    else:
        torch.save({"image_proj": ip_, "ip_adapter": ad_}, str(p))
    return p
