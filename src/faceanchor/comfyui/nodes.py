"""The node classes: ComfyUI's custom-node contract (``INPUT_TYPES``, ``RETURN_TYPES``,
``FUNCTION``, ``CATEGORY``) over :mod:`faceanchor.comfyui.engines`.

Nothing heavy is imported here: torch, diffusers and the face stack load when a node runs.
Widget specs come from the request schema (:mod:`faceanchor.comfyui.widgets`) and the method
registry, so a new request field or method shows up in ComfyUI without editing this file.
"""

from __future__ import annotations

import json
from typing import Any

from faceanchor.comfyui.images import from_images, to_images, to_mask
from faceanchor.comfyui.progress import comfy_job
from faceanchor.comfyui.reference import ENGINE_TYPE, IDENTITY_TYPE, FaceReference
from faceanchor.comfyui.widgets import field_widget, request_fields, request_widgets
from faceanchor.errors import InvalidInputError

CATEGORY = "faceanchor"
MAX_FACE_INDEX = 63


def _method_widget() -> tuple[Any, ...]:
    from faceanchor.methods.registry import names

    choices = names()
    return (choices, {"default": choices[0], "tooltip": "The identity method (faceanchor's method registry)."})


def _weights_choices() -> list[str]:
    import typing

    from faceanchor.config import Settings

    return list(typing.get_args(Settings.model_fields["weights"].annotation))


def _pack_choices() -> list[str]:
    from faceanchor.face.packs import PACK_NAMES

    return ["default", *PACK_NAMES]


def _engine(value: Any) -> Any:
    from faceanchor.comfyui.engines import LocalEngine, RemoteEngine

    if not isinstance(value, (LocalEngine, RemoteEngine)):
        raise InvalidInputError(f"engine: connect a 'Load faceanchor engine' node (got {type(value).__name__})")
    return value


def _identity(value: Any) -> FaceReference:
    if not isinstance(value, FaceReference):
        raise InvalidInputError(f"identity: connect a 'Face analysis' or 'Character' node (got {type(value).__name__})")
    return value


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def _subset(*names: str) -> dict[str, tuple[Any, ...]]:
    return {n: field_widget(n) for n in names}


def _fresh_when_random(seed: Any = 0, **_: Any) -> Any:
    """ComfyUI's IS_CHANGED: a random seed (-1) makes every queued prompt run the node again
    (NaN never equals the cached value); a fixed seed lets ComfyUI reuse the cached output."""
    return float("nan") if seed == -1 else seed


def _warn(meta: dict[str, Any], ignored: list[str], method: str) -> dict[str, Any]:
    if ignored:
        meta.setdefault("warnings", []).append(f"{method} does not use {', '.join(ignored)}: left out")
    return meta


# =========================================================================== nodes


class LoadEngine:
    """A local engine (real, dummy or tiny weights) or a remote faceanchor server."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        weights = _weights_choices()
        return {
            "required": {
                "where": (["local", "remote"], {"default": "local", "tooltip": "local: an engine in ComfyUI's process; remote: a faceanchor server."}),
                "weights": (weights, {"default": weights[0], "tooltip": "local: real (official checkpoints), dummy (full-size random) or tiny (tiny random, seconds on a CPU)."}),
                "face_pack": (_pack_choices(), {"default": "default", "tooltip": "local: the face pack (default: each method's own; dlib for dummy/tiny)."}),
                "device": (["auto", "cpu", "cuda", "mps"], {"default": "auto"}),
                "home": ("STRING", {"default": "", "tooltip": "local: faceanchor's home (models, characters); empty = FACEANCHOR_HOME or the default."}),
                "server_url": ("STRING", {"default": "http://127.0.0.1:8000", "tooltip": "remote: the faceanchor server."}),
                "api_key": ("STRING", {"default": "", "tooltip": "remote: an API key (fa_...), empty when the server needs none."}),
            }
        }

    RETURN_TYPES = (ENGINE_TYPE,)
    RETURN_NAMES = ("engine",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a faceanchor engine once; every other faceanchor node runs on it."

    def load(self, where: str, weights: str, face_pack: str, device: str, home: str, server_url: str, api_key: str) -> tuple[Any]:
        if where == "remote":
            from faceanchor.comfyui.engines import RemoteEngine

            return (RemoteEngine(server_url, api_key or None),)
        if where != "local":
            raise InvalidInputError(f"where must be local or remote, got {where!r}")
        from faceanchor.comfyui.engines import LocalEngine
        from faceanchor.config import Settings

        settings = Settings(**({"home": home} if home.strip() else {}))
        return (LocalEngine(settings, weights=weights, face_pack=None if face_pack == "default" else face_pack,
                            device=None if device == "auto" else device),)


class FaceAnalysis:
    """IMAGE → identity: the chosen face of the first image (more images in the batch: more
    references of the same person), the quality report as JSON and a preview with every face."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "engine": (ENGINE_TYPE,),
                "image": ("IMAGE", {"tooltip": "The face photo; a batch of up to 5 gives more references of one person."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": MAX_FACE_INDEX, "step": 1, "tooltip": "Which face of the first image, largest first (0 = the largest)."}),
                "method": _method_widget(),
            }
        }

    RETURN_TYPES = (IDENTITY_TYPE, "STRING", "IMAGE", "INT")
    RETURN_NAMES = ("identity", "report", "preview", "faces")
    FUNCTION = "analyse"
    CATEGORY = CATEGORY

    def analyse(self, engine: Any, image: Any, face_index: int, method: str) -> tuple[Any, ...]:
        eng = _engine(engine)
        images = from_images(image)
        if len(images) > 5:
            raise InvalidInputError("at most 5 reference images of one person")
        ref, report, overlays = eng.analyse(images, int(face_index), method)
        preview = to_images(overlays if len({o.size for o in overlays}) == 1 else overlays[:1])
        return (ref, _json(report), preview, len(report["references"][0]["faces"]))


class Character:
    """Pick a stored character by name (or id), or create one from the IMAGE."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "engine": (ENGINE_TYPE,),
                "action": (["pick", "create"], {"default": "pick"}),
                "name": ("STRING", {"default": "", "tooltip": "pick: a character's name (the newest of that name) or id; create: the new one's name."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": MAX_FACE_INDEX, "step": 1, "tooltip": "create: which face of the first photo (0 = the largest)."}),
            },
            "optional": {"image": ("IMAGE", {"tooltip": "create: 1 to 5 photos of the person."})},
        }

    RETURN_TYPES = (IDENTITY_TYPE, "STRING")
    RETURN_NAMES = ("identity", "character")
    FUNCTION = "character"
    CATEGORY = CATEGORY

    def character(self, engine: Any, action: str, name: str, face_index: int, image: Any = None) -> tuple[Any, ...]:
        eng = _engine(engine)
        if action == "create":
            if image is None:
                raise InvalidInputError("create: connect the character's photo(s) to image")
            ref, info = eng.create_character(name, from_images(image), int(face_index))
        elif action == "pick":
            ref, info = eng.find_character(name)
        else:
            raise InvalidInputError(f"action must be pick or create, got {action!r}")
        return (ref, _json(info))


class Generate:
    """One generation with the identity: every request field as a widget (ranges from the API schema)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"engine": (ENGINE_TYPE,), "identity": (IDENTITY_TYPE,), "method": _method_widget(), **request_widgets()},
            "optional": {"pose_image": ("IMAGE", {"tooltip": "Take the face keypoints (and body pose) from this image (InstantID)."})},
        }

    RETURN_TYPES = ("IMAGE", "STRING", "FLOAT")
    RETURN_NAMES = ("images", "info", "identity_score")
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, **inputs: Any) -> Any:
        return _fresh_when_random(**inputs)

    def generate(self, engine: Any, identity: Any, method: str, pose_image: Any = None, **widgets: Any) -> tuple[Any, ...]:
        eng, ref = _engine(engine), _identity(identity)
        fields, ignored = request_fields(widgets, method)
        if pose_image is not None:
            from faceanchor.comfyui.images import png_bytes
            from faceanchor.methods.registry import get

            if "pose_image" in get(method).honoured():
                fields["pose_image"] = png_bytes(from_images(pose_image, "pose_image")[0])
            else:
                ignored.append("pose_image")
        steps = int(widgets.get("num_inference_steps") or 0) or 30
        with comfy_job(steps * int(fields.get("samples", 1)) * int(fields.get("best_of", 1))) as (progress, cancel):
            out = eng.generate(ref, fields, step=progress.step, cancel=cancel)
        scores = [s for s in out.scores if s is not None]
        return (to_images(out.images), _json(_warn(out.meta, ignored, method)), float(max(scores)) if scores else -1.0)


_JOB_FIELDS = ("prompt", "negative_prompt", "style", "num_inference_steps", "guidance_scale", "seed", "scheduler",
               "identity_strength", "adapter_strength")


class IDPhoto:
    """The 4-in-1 ID photo of the identity: the sheet, and the four views (front, left, right, smiling)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"engine": (ENGINE_TYPE,), "identity": (IDENTITY_TYPE,), "method": _method_widget(),
                             **_subset(*_JOB_FIELDS, "width", "height")}}

    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("sheet", "views", "info")
    FUNCTION = "id_photo"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, **inputs: Any) -> Any:
        return _fresh_when_random(**inputs)

    def id_photo(self, engine: Any, identity: Any, method: str, **widgets: Any) -> tuple[Any, ...]:
        eng, ref = _engine(engine), _identity(identity)
        fields, ignored = request_fields(widgets, method)
        with comfy_job(4 * (int(widgets.get("num_inference_steps") or 0) or 30)) as (progress, cancel):
            out = eng.id_photo(ref, fields, step=progress.step, cancel=cancel)
        return (to_images(out.images[:1]), to_images(out.images[1:]), _json(_warn(out.meta, ignored, method)))


class Edit:
    """Edit an IMAGE keeping the identity's face (background) or re-rendering the face in it."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        from faceanchor.character.edit import EDIT_MODES, MASK_SOURCES

        return {"required": {
            "engine": (ENGINE_TYPE,), "identity": (IDENTITY_TYPE,), "image": ("IMAGE", {"tooltip": "The picture to edit."}),
            "mode": (list(EDIT_MODES), {"default": EDIT_MODES[0], "tooltip": "background: keep the person, re-render the rest; face: re-render the face with the identity."}),
            "strength": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Share of the schedule re-run; 0 = the mode's default (background 1.0, face 0.55)."}),
            "mask_source": (list(MASK_SOURCES), {"default": MASK_SOURCES[0], "tooltip": "background: what is kept (person segmentation, or the face box)."}),
            "method": _method_widget(), **_subset(*_JOB_FIELDS),
        }}

    RETURN_TYPES = ("IMAGE", "MASK", "STRING", "FLOAT")
    RETURN_NAMES = ("image", "changed", "info", "identity_score")
    FUNCTION = "edit"
    CATEGORY = CATEGORY

    @classmethod
    def IS_CHANGED(cls, **inputs: Any) -> Any:
        return _fresh_when_random(**inputs)

    def edit(self, engine: Any, identity: Any, image: Any, mode: str, strength: float, mask_source: str, method: str,
             **widgets: Any) -> tuple[Any, ...]:
        import numpy as np

        eng, ref = _engine(engine), _identity(identity)
        target = from_images(image)[0]
        fields, ignored = request_fields(widgets, method)
        with comfy_job(int(widgets.get("num_inference_steps") or 0) or 30) as (progress, cancel):
            out = eng.edit(ref, target, fields, mode=mode, strength=float(strength) or None, mask_source=mask_source,
                           step=progress.step, cancel=cancel)
        edited = out.images[0]
        changed = np.zeros((edited.height, edited.width), bool)
        if edited.size == target.size:  # the pixels the edit changed (kept pixels are exact copies)
            changed = (np.asarray(edited, np.int16) != np.asarray(target, np.int16)).any(-1)
        score = out.scores[0] if out.scores and out.scores[0] is not None else -1.0
        return (to_images([edited]), to_mask([changed]), _json(_warn(out.meta, ignored, method)), float(score))


def _scores(engine: Any, ref: FaceReference, images: list[Any], method: str) -> list[tuple[float | None, str | None]]:
    from faceanchor import cancel as cancellation

    with comfy_job(len(images)) as (progress, cancel), cancellation.scope(cancel):
        return _engine(engine).score(images, ref, method, step=progress.step)


class IdentityScore:
    """How close each image's largest face is to the identity (cosine of the method's face encoder)."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"engine": (ENGINE_TYPE,), "identity": (IDENTITY_TYPE,), "image": ("IMAGE",), "method": _method_widget()}}

    RETURN_TYPES = ("FLOAT", "STRING")
    RETURN_NAMES = ("score", "scores")
    FUNCTION = "score"
    CATEGORY = CATEGORY
    DESCRIPTION = "score: the first image's (-1 when it has no face); scores: every image's, with the reason when null."
    OUTPUT_NODE = True  # ComfyUI runs only output nodes and what feeds them: a score is an end of a graph

    def score(self, engine: Any, identity: Any, image: Any, method: str) -> tuple[Any, ...]:
        _engine(engine)
        ref = _identity(identity)
        results = _scores(engine, ref, from_images(image), method)
        first = results[0][0]
        rows = [{"index": i, "identity_score": s, "identity_reason": why} for i, (s, why) in enumerate(results)]
        return (float(first) if first is not None else -1.0, _json(rows))


class BestOfN:
    """Keep the ``keep`` images of a batch closest to the identity, best first."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"engine": (ENGINE_TYPE,), "identity": (IDENTITY_TYPE,), "images": ("IMAGE", {"tooltip": "The candidates (a batch)."}),
                             "keep": ("INT", {"default": 1, "min": 1, "max": 64, "step": 1}), "method": _method_widget()}}

    RETURN_TYPES = ("IMAGE", "FLOAT", "STRING")
    RETURN_NAMES = ("best", "best_score", "ranking")
    FUNCTION = "best_of"
    CATEGORY = CATEGORY

    def best_of(self, engine: Any, identity: Any, images: Any, keep: int, method: str) -> tuple[Any, ...]:
        _engine(engine)
        ref = _identity(identity)
        pils = from_images(images, "images")
        results = _scores(engine, ref, pils, method)
        order = sorted(range(len(pils)), key=lambda i: (results[i][0] is None, -(results[i][0] or 0.0), i))[: max(1, int(keep))]
        ranking = [{"index": i, "identity_score": results[i][0], "identity_reason": results[i][1]} for i in order]
        best = results[order[0]][0]
        return (to_images([pils[i] for i in order]), float(best) if best is not None else -1.0, _json(ranking))


NODE_CLASS_MAPPINGS = {
    "FaceAnchorLoadEngine": LoadEngine,
    "FaceAnchorFaceAnalysis": FaceAnalysis,
    "FaceAnchorCharacter": Character,
    "FaceAnchorGenerate": Generate,
    "FaceAnchorIDPhoto": IDPhoto,
    "FaceAnchorEdit": Edit,
    "FaceAnchorIdentityScore": IdentityScore,
    "FaceAnchorBestOfN": BestOfN,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "FaceAnchorLoadEngine": "Load faceanchor engine",
    "FaceAnchorFaceAnalysis": "Face analysis (faceanchor)",
    "FaceAnchorCharacter": "Character (faceanchor)",
    "FaceAnchorGenerate": "Generate (faceanchor)",
    "FaceAnchorIDPhoto": "ID photo (faceanchor)",
    "FaceAnchorEdit": "Edit (faceanchor)",
    "FaceAnchorIdentityScore": "Identity score (faceanchor)",
    "FaceAnchorBestOfN": "Best of N (faceanchor)",
}
