"""Readers for the official IP-Adapter checkpoint layout (InstantID ``ip-adapter.bin``, FaceID).

Layout: one mapping with two sections,

* ``image_proj``: the projection model's state dict (InstantID: the Resampler);
* ``ip_adapter``: ``"<i>.to_k_ip.weight"`` / ``"<i>.to_v_ip.weight"`` (and, for some flavours,
  more per-layer tensors) where ``<i>`` is the position of the layer's processor in
  ``unet.attn_processors`` (self-attention processors count, so SDXL keys are 1, 3, 5, ...).

``.bin``/``.pt``/``.pth`` files are read with ``torch.load(weights_only=True)`` (no pickled code
runs); ``.safetensors`` files store the same tensors flattened as ``image_proj.<key>`` and
``ip_adapter.<key>`` (the diffusers convention).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faceanchor.errors import CheckpointError, ModelNotFoundError

SECTIONS = ("image_proj", "ip_adapter")


def read_ip_adapter_checkpoint(source: str | Path | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Read a checkpoint into ``{"image_proj": {...}, "ip_adapter": {...}}`` (tensors on CPU).

    ``source`` is a file path or an already loaded mapping in either layout. Raises
    :class:`ModelNotFoundError` for a missing file and :class:`CheckpointError` for anything
    that is not this layout.
    """
    if isinstance(source, Mapping):
        raw: Mapping[str, Any] = source
        where = "the given state dict"
    else:
        path = Path(source).expanduser()
        where = str(path)
        if not path.is_file():
            raise ModelNotFoundError(
                f"IP-Adapter checkpoint {path} does not exist; download the adapter file (e.g. InstantID's "
                f"ip-adapter.bin) and give its path"
            )
        raw = _load_file(path)
    return split_sections(raw, where)


def _load_file(path: Path) -> Mapping[str, Any]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        import torch

        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickled code, wrong format
        raise CheckpointError(
            f"could not read IP-Adapter checkpoint {path} ({type(exc).__name__}: {exc}); expected a torch state "
            f"dict (.bin) or a .safetensors file"
        ) from exc


def split_sections(raw: Mapping[str, Any], where: str = "checkpoint") -> dict[str, dict[str, Any]]:
    """Accept the nested layout or the flattened ``section.key`` layout; return the nested one."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{where} is a {type(raw).__name__}, expected a mapping with 'image_proj' and 'ip_adapter'")
    if all(s in raw and isinstance(raw[s], Mapping) for s in SECTIONS):
        extra = sorted(set(raw) - set(SECTIONS))
        if extra:
            raise CheckpointError(f"{where} has unexpected top-level entries {extra}; expected only 'image_proj' and 'ip_adapter'")
        return {s: dict(raw[s]) for s in SECTIONS}
    out: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    stray: list[str] = []
    for key, value in raw.items():
        section, _, rest = str(key).partition(".")
        if section in out and rest:
            out[section][rest] = value
        else:
            stray.append(str(key))
    if stray or not all(out.values()):
        found = sorted({str(k).split(".")[0] for k in raw})[:6]
        raise CheckpointError(
            f"{where} is not in the IP-Adapter layout: expected sections 'image_proj' and 'ip_adapter' (nested, or "
            f"flattened as 'image_proj.<key>' / 'ip_adapter.<key>'), found top-level names {found}"
        )
    return out


def check_tensors(found: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], what: str, hint: str = "") -> None:
    """Every expected key present with its shape and nothing else, or a teaching CheckpointError."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [
        (k, tuple(expected[k]), tuple(getattr(found[k], "shape", ())))
        for k in expected
        if k in found and tuple(getattr(found[k], "shape", ())) != tuple(expected[k])
    ]
    if not (missing or unexpected or wrong):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(repr(k) for k in missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(repr(k) for k in unexpected[:3])})")
    if wrong:
        k, e, f = wrong[0]
        parts.append(f"{len(wrong)} with the wrong shape (e.g. {k!r} expected {e}, found {f})")
    raise CheckpointError(f"{what} does not match: {'; '.join(parts)}. {hint}".strip())
