"""ComfyUI widgets of the generation request, read from the request's own schema.

Every field of :class:`~faceanchor.types.GenerationRequest` a node offers becomes one widget of
the type and range pydantic declares (``ge``/``le`` → ``min``/``max``, ``Literal`` → a COMBO,
``bool`` → BOOLEAN); the rest is either supplied by another input (the identity, the pose image)
or listed in :data:`NOT_OFFERED` with the reason. ComfyUI widgets have no "unset": a field whose
default is ``None`` (the method's or the photo's default) gets a sentinel the tooltip names
(``0`` for counts and sizes, ``-1.0`` for the guidance, ``""`` for model names, ``default`` for
COMBOs), and :func:`request_fields` turns the sentinel back into "unset".
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from faceanchor.types import GenerationRequest

#: Fields the identity input supplies (Face analysis / Character nodes), never widgets.
IDENTITY_FIELDS = frozenset({
    "face_image", "face_images", "face_embedding", "face_embeddings", "face_embedding_space", "face_crop",
    "face_kps", "face_bbox", "face_image_size", "face_index",
})
#: Fields another socket supplies: the method COMBO (from the registry) and the pose IMAGE.
SOCKET_FIELDS = frozenset({"method", "pose_image", "controlnet_selection", "controlnet_scales"})
#: Fields the node pack does not offer, and why.
NOT_OFFERED = {
    "output_format": "outputs are IMAGE tensors; save them with ComfyUI's Save Image",
    "more_identities": "several people per picture are not offered by the node pack (use the API or the CLI)",
    "face_box": "several people per picture are not offered by the node pack (use the API or the CLI)",
    "loras": "user LoRAs (InfiniteYou) are given through the API (loras) or the CLI (--lora), not as node widgets",
}
#: Sentinel meaning "unset" for each kind of optional field.
UNSET_INT = 0
UNSET_FLOAT = -1.0
UNSET_STR = ""
UNSET_COMBO = "default"

_INT_MAX = 2**63 - 1


def _bounds(info: Any) -> tuple[Any, Any]:
    lo = hi = None
    for m in info.metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return lo, hi


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``| None``, and whether ``None`` was allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        return (args[0] if len(args) == 1 else typing.Union[tuple(args)]), optional
    return annotation, False


def control_names() -> tuple[str, ...]:
    """The extra ControlNets a request may select (one BOOLEAN widget each)."""
    from faceanchor.types import ControlName

    return typing.get_args(ControlName)


def _style_names() -> list[str]:
    from faceanchor.styles import style_names

    return list(style_names())


def field_widget(name: str) -> tuple[Any, ...]:
    """The ComfyUI input spec of one request field."""
    info = GenerationRequest.model_fields[name]
    ann, optional = _unwrap(info.annotation)
    default = info.get_default(call_default_factory=True)
    tip = {"tooltip": info.description} if info.description else {}
    lo, hi = _bounds(info)
    if name == "style":
        return (_style_names(), {"default": default, **tip})
    if typing.get_origin(ann) is Literal:
        choices = [str(a) for a in typing.get_args(ann)]
        if optional:
            return ([UNSET_COMBO, *choices], {"default": UNSET_COMBO, **tip})
        return (choices, {"default": default, **tip})
    if ann is bool:
        return ("BOOLEAN", {"default": bool(default), **tip})
    if ann is int:
        if optional:  # 0 = unset: counts and sizes start at 1 or more
            assert lo is not None and lo > UNSET_INT, name
            step = 8 if name in ("width", "height") else 1
            return ("INT", {"default": UNSET_INT, "min": UNSET_INT, "max": hi if hi is not None else _INT_MAX, "step": step,
                            "tooltip": f"{info.description or name} 0 = default."})
        extra = {"control_after_generate": True} if name == "seed" else {}  # ComfyUI's fixed/increment/randomize
        return ("INT", {"default": int(default), "min": lo if lo is not None else -_INT_MAX, "max": hi if hi is not None else _INT_MAX,
                        "step": 1, **extra, **tip})
    if ann is float:
        if optional:  # -1 = unset: guidance 0 is a real value (few-step presets)
            assert lo is not None and lo > UNSET_FLOAT, name
            return ("FLOAT", {"default": UNSET_FLOAT, "min": UNSET_FLOAT, "max": hi, "step": 0.05,
                              "tooltip": f"{info.description or name} -1 = default."})
        return ("FLOAT", {"default": float(default), "min": lo, "max": hi, "step": 0.01, **tip})
    if ann is str:
        multiline = name in ("prompt", "negative_prompt")
        return ("STRING", {"default": UNSET_STR if optional else default, "multiline": multiline, **tip})
    raise TypeError(f"request field {name} ({info.annotation}) has no ComfyUI widget; add it to NOT_OFFERED or a socket")


def widget_fields() -> list[str]:
    """The request fields offered as widgets, in the request's order."""
    skip = IDENTITY_FIELDS | SOCKET_FIELDS | set(NOT_OFFERED)
    return [n for n in GenerationRequest.model_fields if n not in skip]


def request_widgets() -> dict[str, tuple[Any, ...]]:
    """Every generation widget: the request's fields, then one BOOLEAN per extra ControlNet."""
    out = {name: field_widget(name) for name in widget_fields()}
    for c in control_names():
        out[f"controlnet_{c}"] = ("BOOLEAN", {"default": False, "tooltip": f"Add the {c} ControlNet (InstantID)."})
    for c in control_names():  # controlnet_scales, one FLOAT per ControlNet (last, so saved workflows keep their order)
        out[f"controlnet_{c}_scale"] = ("FLOAT", {"default": UNSET_FLOAT, "min": UNSET_FLOAT, "max": 2.0, "step": 0.05,
                                                  "tooltip": f"Strength of the {c} ControlNet; -1: controlnet_conditioning_scale."})
    return out


def request_fields(values: dict[str, Any], method: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """Request fields of widget ``values`` (sentinels dropped), and the names of the non-default
    ones ``method`` does not use (left out, so a method switch in a graph never fails on them)."""
    fields: dict[str, Any] = {}
    for name in widget_fields():
        if name not in values:
            continue
        v = values[name]
        info = GenerationRequest.model_fields[name]
        ann, optional = _unwrap(info.annotation)
        if optional and (v == UNSET_COMBO or v == UNSET_STR or (ann is int and v == UNSET_INT) or (ann is float and v == UNSET_FLOAT)):
            continue
        fields[name] = v
    chosen = [c for c in control_names() if values.get(f"controlnet_{c}")]
    if chosen:
        fields["controlnet_selection"] = chosen
        scales = {c: float(values[f"controlnet_{c}_scale"]) for c in chosen
                  if values.get(f"controlnet_{c}_scale", UNSET_FLOAT) != UNSET_FLOAT}
        if scales:
            fields["controlnet_scales"] = scales
    ignored: list[str] = []
    if method is not None:
        from faceanchor.methods.registry import get

        m = get(method)
        fields["method"] = method
        honoured = m.honoured()
        for name in list(fields):
            if name in honoured:
                continue
            info = GenerationRequest.model_fields[name]
            if fields[name] != info.get_default(call_default_factory=True):
                ignored.append(name)
            del fields[name]
    return fields, ignored
