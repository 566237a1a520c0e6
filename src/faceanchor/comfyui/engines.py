"""The FACEANCHOR_ENGINE value: a local :class:`~faceanchor.engine.Engine` (with the character
store under the settings' home) or a remote faceanchor server through :mod:`faceanchor.client`.

Both answer the same few calls with :class:`Outcome` (PIL images, one score per image, the
result's metadata), so every node works on either. Progress is ``(step, total)``; ``cancel``
is checked by the engine's cancel scope locally, and between status polls remotely (where a
true check cancels the server's job).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from faceanchor.comfyui.images import png_bytes
from faceanchor.comfyui.reference import FaceReference
from faceanchor.errors import Cancelled, InvalidInputError

Step = Callable[[int, int], None]
Check = Callable[[], bool]


@dataclass
class Outcome:
    images: list[Any]
    scores: list[float | None]
    meta: dict[str, Any] = field(default_factory=dict)
    reasons: list[str | None] = field(default_factory=list)


def _pils(images: list[Any]) -> list[Any]:
    return [im.convert("RGB") for im in images]


def _outcome(result: Any) -> Outcome:
    return Outcome([g.image for g in result.images], [g.identity_score for g in result.images], result.metadata(),
                   [g.identity_reason for g in result.images])


def _events(step: Step | None) -> Any:
    if step is None:
        return None

    def on(event: Any) -> None:
        if event.stage == "denoise" and event.total:
            step(event.step, event.total)

    return on


class LocalEngine:
    """An engine in this process; characters in the settings' database and file store."""

    kind = "local"

    def __init__(self, settings: Any, *, weights: str | None = None, face_pack: str | None = None, device: str | None = None):
        from faceanchor.engine import Engine

        self.settings = settings
        self.engine = Engine(settings, weights=weights, face_pack=face_pack, device=device)
        self._service: Any = None

    def __repr__(self) -> str:
        return f"LocalEngine(weights={self.engine.weights}, device={self.engine.device})"

    @property
    def characters(self) -> Any:
        if self._service is None:
            from faceanchor.service.characters import CharacterService
            from faceanchor.store.db import Database
            from faceanchor.store.files import FileStore

            self._service = CharacterService(self.settings, Database.from_settings(self.settings),
                                             FileStore(Path(self.settings.data_dir) / "files"))
        return self._service

    # ------------------------------------------------------------------ faces
    def analyse(self, images: list[Any], face_index: int, method: str) -> tuple[FaceReference, dict[str, Any], list[Any]]:
        from faceanchor.face.choose import choose_face
        from faceanchor.face.overlay import draw_overlay
        from faceanchor.errors import NoFaceError

        pack = self.engine.pack_for(method)
        an = self.engine.analyzer(pack)
        refs, overlays = [], []
        for i, img in enumerate(images):
            faces = an.get(np.asarray(img.convert("RGB")))
            label = f"reference image {i + 1}"
            if not faces:
                raise NoFaceError(f"no face found in {label} (also tried other scales)")
            chosen = choose_face(faces, index=face_index if i == 0 else None, image_name=label)
            pick = next(j for j, f in enumerate(faces) if f is chosen)
            refs.append({"width": img.width, "height": img.height, "chosen": pick, "faces": [f.to_dict() for f in faces]})
            overlays.append(draw_overlay(img, faces))
        report = {"pack": pack, "space": an.space, "method": method, "references": refs}
        ref = FaceReference(photos=tuple(png_bytes(im) for im in images), face_index=face_index, report=report)
        return ref, report, overlays

    def _identity(self, ref: FaceReference, method: str) -> Any:
        from faceanchor.types import GenerationRequest

        if ref.character_id is not None:
            svc = self.characters
            request = svc.request_for(svc.get(ref.character_id), {"method": method}, self.engine)
        else:
            request = GenerationRequest(method=method, **ref.face_fields())
        return self.engine.identity(request)

    def score(self, images: list[Any], ref: FaceReference, method: str, step: Step | None = None) -> list[tuple[float | None, str | None]]:
        """One (score, reason) per image; ``step(i, n)`` after each."""
        ident = self._identity(ref, method)
        out = []
        for i, im in enumerate(_pils(images), 1):
            out += self.engine.score([im], ident)
            if step is not None:
                step(i, len(images))
        return out

    # ------------------------------------------------------------------ generation
    def generate(self, ref: FaceReference, fields: dict[str, Any], *, step: Step | None = None, cancel: Check | None = None) -> Outcome:
        if ref.character_id is not None:
            result = self.characters.generate(self.engine, fields, character_id=ref.character_id, on_progress=_events(step), cancel=cancel)
        else:
            from faceanchor.service.characters import parse_request

            result = self.engine.generate(parse_request({**fields, **ref.face_fields()}), _events(step), cancel)
        return _outcome(result)

    def id_photo(self, ref: FaceReference, fields: dict[str, Any], *, step: Step | None = None, cancel: Check | None = None) -> Outcome:
        face = None if ref.character_id else ref.photos[0]
        result = self.characters.id_photo(self.engine, {**fields, **({"face_index": ref.face_index} if face else {})},
                                          character_id=ref.character_id, face=face, on_progress=_events(step), cancel=cancel)
        return _outcome(result)

    def edit(self, ref: FaceReference, target: Any, fields: dict[str, Any], *, mode: str, strength: float | None, mask_source: str,
             step: Step | None = None, cancel: Check | None = None) -> Outcome:
        face = None if ref.character_id else ref.photos[0]
        result = self.characters.edit(self.engine, {**fields, **({"face_index": ref.face_index} if face else {})}, png_bytes(target),
                                      mode=mode, character_id=ref.character_id, face=face, strength=strength,
                                      mask_source=mask_source, on_progress=_events(step), cancel=cancel)
        return _outcome(result)

    # ------------------------------------------------------------------ characters
    def create_character(self, name: str, images: list[Any], face_index: int) -> tuple[FaceReference, dict[str, Any]]:
        c = self.characters.create(name, [png_bytes(im) for im in images], engine=self.engine, face_index=face_index)
        return FaceReference(character_id=c.id, name=c.name), c.to_dict()

    def find_character(self, name_or_id: str) -> tuple[FaceReference, dict[str, Any]]:
        items = self.characters.list(limit=10_000)
        return _pick_character(items, name_or_id, lambda c: c.to_dict())


def _pick_character(items: list[Any], name_or_id: str, as_dict: Callable[[Any], dict[str, Any]]) -> tuple[FaceReference, dict[str, Any]]:
    """The character whose id or name is ``name_or_id`` (the newest of that name); a clear error otherwise."""
    key = (name_or_id or "").strip()
    if not key:
        raise InvalidInputError("give a character's name or id")
    hits = [c for c in items if c.id == key] or sorted([c for c in items if c.name == key], key=lambda c: c.created_at, reverse=True)
    if not hits:
        known = ", ".join(sorted({c.name for c in items})[:20]) or "none yet"
        raise InvalidInputError(f"no character named {key!r}; characters: {known}")
    return FaceReference(character_id=hits[0].id, name=hits[0].name), as_dict(hits[0])


class RemoteEngine:
    """A faceanchor server, through :class:`faceanchor.client.Client`: jobs go through the queue
    (status polled for progress; a true cancel check cancels the server's job). Identity scores
    come with each generation; scoring arbitrary images needs a local engine (the API has no
    scoring route)."""

    kind = "remote"
    poll_interval = 0.2

    def __init__(self, url: str, key: str | None = None, *, client: Any = None):
        from faceanchor.client import Client

        self.url = url
        self.client = client or Client(url, key)

    def __repr__(self) -> str:
        return f"RemoteEngine({self.url})"

    def _follow(self, handle: Any, step: Step | None, cancel: Check | None) -> Outcome:
        from PIL import Image

        c = self.client
        while True:
            if cancel is not None and cancel():
                c.cancel(handle.app, handle.request_id)
                raise Cancelled(f"cancelled: request {handle.request_id} on {self.url}")
            status = c.status(handle.app, handle.request_id)
            p = status.progress
            if step is not None and p is not None and p.stage == "denoise" and p.total:
                step(p.step, p.total)
            if status.finished:
                break
            time.sleep(self.poll_interval)
        result = c.result(handle.app, handle.request_id)  # a failed job raises its error here
        images = [Image.open(io.BytesIO(c.file(im))).convert("RGB") for im in result.images]
        meta = {"request_id": result.request_id, "server": self.url, "seed": result.seed, "seeds": result.seeds,
                "identity_scores": result.identity_scores, "params": result.params, "models": result.models,
                "timings": result.timings, "warnings": result.warnings}
        return Outcome(images, list(result.identity_scores), meta, [im.identity_reason for im in result.images])

    # ------------------------------------------------------------------ faces
    def analyse(self, images: list[Any], face_index: int, method: str) -> tuple[FaceReference, dict[str, Any], list[Any]]:
        from faceanchor.errors import FaceSelectionError, NoFaceError

        refs = []
        for i, img in enumerate(images):
            found = self.client.faces(png_bytes(img), method=method)
            faces = found.get("faces", [])
            label = f"reference image {i + 1}"
            if not faces:
                raise NoFaceError(f"no face found in {label}")
            pick = face_index if i == 0 else 0
            if pick >= len(faces):
                raise FaceSelectionError(f"face_index {pick} is out of range: {label} has {len(faces)} face(s)")
            refs.append({"width": img.width, "height": img.height, "chosen": pick, "faces": faces})
            pack = found.get("pack")
        report = {"pack": pack, "space": pack, "method": method, "server": self.url, "references": refs}
        return FaceReference(photos=tuple(png_bytes(im) for im in images), face_index=face_index, report=report), report, list(images)

    def score(self, images: list[Any], ref: FaceReference, method: str, step: Step | None = None) -> list[tuple[float | None, str | None]]:
        raise InvalidInputError("Identity score and Best of N need a local engine: a faceanchor server scores only its own "
                                "generations (see the info output of Generate)")

    # ------------------------------------------------------------------ generation
    def generate(self, ref: FaceReference, fields: dict[str, Any], *, step: Step | None = None, cancel: Check | None = None) -> Outcome:
        from faceanchor.methods.registry import get

        if ref.character_id is not None:
            handle = self.client.submit_character("generate", ref.character_id, **fields)
        else:
            handle = self.client.submit(get(fields.get("method", "instantid")).app, {**fields, **ref.face_fields()})
        return self._follow(handle, step, cancel)

    def _character_op(self, op: str, ref: FaceReference, fields: dict[str, Any], step: Step | None, cancel: Check | None,
                      **extra: Any) -> Outcome:
        face = None if ref.character_id else ref.photos[0]
        if face is not None and ref.face_index:
            fields = {**fields, "face_index": ref.face_index}
        handle = self.client.submit_character(op, ref.character_id, face=face, **extra, **fields)
        return self._follow(handle, step, cancel)

    def id_photo(self, ref: FaceReference, fields: dict[str, Any], *, step: Step | None = None, cancel: Check | None = None) -> Outcome:
        return self._character_op("id-photo", ref, fields, step, cancel)

    def edit(self, ref: FaceReference, target: Any, fields: dict[str, Any], *, mode: str, strength: float | None, mask_source: str,
             step: Step | None = None, cancel: Check | None = None) -> Outcome:
        extra = {"target": png_bytes(target), "mode": mode, "mask_source": mask_source}
        if strength is not None:
            extra["strength"] = strength
        return self._character_op("edit", ref, fields, step, cancel, **extra)

    # ------------------------------------------------------------------ characters
    def create_character(self, name: str, images: list[Any], face_index: int) -> tuple[FaceReference, dict[str, Any]]:
        import dataclasses

        c = self.client.create_character(name, [png_bytes(im) for im in images], face_index=face_index or None)
        return FaceReference(character_id=c.id, name=c.name), dataclasses.asdict(c)

    def find_character(self, name_or_id: str) -> tuple[FaceReference, dict[str, Any]]:
        import dataclasses

        items, offset = [], 0
        while True:
            page = self.client.list_characters(limit=100, offset=offset)
            items += page
            if len(page) < 100:
                break
            offset += 100
        return _pick_character(items, name_or_id, dataclasses.asdict)
