"""Characters as a service: create one from photos, then generate, make ID photos and edit with
its stored identity, keeping a history. Used by the CLI directly and by the API through the
queue (:meth:`CharacterService.runners`).

* ``create``: every photo is decoded through :mod:`faceanchor.imageio` (limits, EXIF
  orientation applied), re-encoded as PNG without EXIF and stored content-addressed; for each
  embedding space asked for, the face is analysed once and its raw embedding, keypoints, box,
  photo size and quality report are stored.
* generating from a character builds the request from the stored embedding (several photos
  combined as the request's ``combine`` says) and the main photo's keypoints: the engine runs
  no face analysis on any reference.
* ``id_photo`` / ``edit`` store their outputs (sheet, views; edited image) and record them in
  the history; the ID-photo views in which a face is found are stored as extra references
  (``references="views"`` or ``"all"`` uses them).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from pydantic import ValidationError

from faceanchor.errors import EmbeddingMismatchError, EngineCapabilityError, InvalidInputError
from faceanchor.imageio import ImageLimits, encode_image, load_image
from faceanchor.store.characters import NAMESPACE, CharacterStore, CharacterView, HistoryEntry
from faceanchor.store.db import Database
from faceanchor.store.files import FileStore
from faceanchor.types import GeneratedImage, GenerationRequest, GenerationResult

#: Request fields a character supplies itself.
IDENTITY_FIELDS = ("face_image", "face_images", "face_embedding", "face_embedding_space", "face_kps", "face_bbox", "face_image_size", "face_index")
REFERENCE_SOURCES = ("photos", "views", "all")
APPS = ("character/generate", "character/id-photo", "character/edit")


def parse_request(fields: dict[str, Any]) -> GenerationRequest:
    try:
        return GenerationRequest.model_validate(fields)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "request"
        raise InvalidInputError(f"{loc}: {str(first.get('msg', 'invalid value')).removeprefix('Value error, ')}") from None


class CharacterService:
    """Characters over one database and file store; generation runs on the engine it is handed."""

    def __init__(self, settings: Any, db: Database, files: FileStore):
        self.settings = settings
        self.store = CharacterStore(db, files)
        self.limits = ImageLimits.from_settings(settings)
        self._analyzers: dict[str, Any] = {}
        self._lock = threading.Lock()
        # dlib's detector keeps the scanned image in the detector object: two threads using one
        # analyzer at once (API requests creating characters, a worker scoring ID-photo views)
        # corrupt each other's detections. One analysis at a time.
        self._analysis_lock = threading.Lock()

    # ------------------------------------------------------------------ analysis (creation only)
    def analyzer(self, space: str) -> Any:
        from faceanchor.face.analyzer import FaceAnalyzer

        with self._lock:
            if space not in self._analyzers:
                self._analyzers[space] = FaceAnalyzer(self.settings, space).prepare()
            return self._analyzers[space]

    def default_space(self, engine: Any = None, method: str = "instantid") -> str:
        if engine is not None and hasattr(engine, "pack_for"):
            return engine.pack_for(method)
        return getattr(self.settings, "face_pack", "dlib") or "dlib"

    def create(self, name: str, photos: list[Any], *, spaces: list[str] | None = None, engine: Any = None, face_index: int | None = None,
               owner: str | None = None, allow_different_people: bool = False) -> CharacterView:
        """Analyse and store a new character. Raises NoFaceError (422) when a photo has no face,
        DifferentPeopleError (422) when two photos are not one person (unless
        ``allow_different_people``: then the blend is recorded in the character's history)."""
        from faceanchor.face.same_person import check_same_person

        name = (name or "").strip()
        if not name or len(name) > 200:
            raise InvalidInputError("a character needs a name of 1 to 200 characters")
        if not photos:
            raise InvalidInputError("a character needs at least one face photo")
        if len(photos) > 5:
            raise InvalidInputError("a character takes at most 5 reference photos")
        spaces = list(dict.fromkeys(spaces or [self.default_space(engine)]))
        images = [load_image(p, self.limits, name=f"photo {i + 1}") for i, p in enumerate(photos)]
        identities: list[dict[str, Any]] = []
        checks: list[dict[str, Any] | None] = []
        for space in spaces:
            an = self.analyzer(space)
            with self._analysis_lock:
                faces = [an.get_face(np.asarray(img), index=face_index if i == 0 else None, name=f"photo {i + 1}")
                         for i, img in enumerate(images)]
            checks.append(check_same_person([f.embedding for f in faces], space, [f"photo {i + 1}" for i in range(len(faces))],
                                            allow=allow_different_people))
            for i, (img, face) in enumerate(zip(images, faces)):
                identities.append(self._identity_dict(face, space, f"photo:{i}", img.size))
        files = [self.store.put_file(encode_image(img, "png")) for img in images]  # re-encoded: no EXIF
        for ident in identities:
            ident["photo_file"] = files[int(ident["source"].split(":")[1])]
        view = self.store.create(name, files, identities, owner=owner)
        if len(images) > 1:  # the same-person verdicts (and a deliberate blend) stay on record
            self.store.add_generation(view.id, "create", {"photos": len(images), "allow_different_people": allow_different_people},
                                      [], {"same_person": [c for c in checks if c]})
            view = self.store.get(view.id)
        return view

    @staticmethod
    def _identity_dict(face: Any, space: str, source: str, size: tuple[int, int]) -> dict[str, Any]:
        return {
            "space": space, "source": source, "embedding": face.embedding, "kps": face.kps, "bbox": face.bbox,
            "image_size": size, "det_score": face.det_score,
            "quality": face.quality.to_dict() if face.quality is not None else None,
        }

    # ------------------------------------------------------------------ reads
    def get(self, character_id: str) -> CharacterView:
        return self.store.get(character_id)

    def list(self, limit: int = 100, offset: int = 0) -> list[CharacterView]:
        return self.store.list(limit, offset)

    def delete(self, character_id: str) -> list[str]:
        return self.store.delete(character_id)

    def history(self, character_id: str, limit: int = 100, offset: int = 0) -> list[HistoryEntry]:
        return self.store.history(character_id, limit, offset)

    # ------------------------------------------------------------------ requests from a character
    def request_for(self, character: CharacterView, fields: dict[str, Any], engine: Any = None, references: str = "photos") -> GenerationRequest:
        """The generation request of ``fields`` with the character's stored identity (no analysis)."""
        given = [k for k in IDENTITY_FIELDS if fields.get(k) not in (None, [], ())]
        if given:
            raise InvalidInputError(f"{given[0]}: a character supplies the face; leave {', '.join(given)} out")
        base = parse_request({k: v for k, v in fields.items() if k not in IDENTITY_FIELDS})
        return base.model_copy(update=self._stored_identity(character, base, engine, references))

    def _stored_identity(self, character: CharacterView, base: GenerationRequest, engine: Any, references: str) -> dict[str, Any]:
        """The identity fields (embedding, keypoints, box, photo size) ``character`` supplies to ``base``."""
        if references not in REFERENCE_SOURCES:
            raise InvalidInputError(f"references must be one of {', '.join(REFERENCE_SOURCES)}, got {references!r}")
        space = self.default_space(engine, base.method)
        idents = character.identities_for(space, references)
        if not idents:
            have = ", ".join(character.spaces) or "none"
            what = "" if references == "photos" else f" from its {references}"
            raise EmbeddingMismatchError(
                f"character {character.id} has no {space} embedding{what} (it has: {have}); create it with the {space} space"
            )
        from faceanchor.face.combine import combine_embeddings

        embs = [i.embedding for i in idents]
        combine = base.combine if base.combine != "concat" else "average"
        emb = embs[0] if len(embs) == 1 else combine_embeddings(embs, combine)
        main = next((i for i in idents if i.source.startswith("photo:")), idents[0])
        return dict(face_embedding=[float(v) for v in np.asarray(emb, np.float32)], face_embedding_space=space,
                    face_kps=main.kps.tolist(), face_bbox=[float(v) for v in main.bbox], face_image_size=tuple(main.image_size))

    def request_for_people(self, people: list[dict[str, Any]], fields: dict[str, Any], engine: Any = None, references: str = "photos",
                           layout: str | None = None, owner_check: Any = None) -> tuple[GenerationRequest, list[str]]:
        """One request with several people (2 to 4) and the characters it names.

        Each person is ``{"character_id"}`` or ``{"face": photo}`` (with ``face_index``), placed by
        its ``box`` (output pixels), by ``layout`` (``left-right``: side by side, in order) or, with
        the request's ``pose_image``, on the pose photo's faces left to right (``pose_index``
        picks another for persons 2 and up); ``identity_strength`` / ``adapter_strength`` are its
        own (default: the request's). Person 1 is the request's own face. ``owner_check(id)``
        raises for a character its caller may not use."""
        from faceanchor.methods.regions import LAYOUTS, layout_boxes
        from faceanchor.types import PlacedIdentity

        if not 1 <= len(people) <= 4:
            raise InvalidInputError(f"people: 1 to 4 persons, got {len(people)}")
        taken = [k for k in (*IDENTITY_FIELDS, "face_box", "more_identities") if fields.get(k) not in (None, [], ())]
        if taken:
            raise InvalidInputError(f"{taken[0]}: with people each person brings its own face and place; leave {', '.join(taken)} out")
        base = parse_request(fields)
        if layout is not None:
            if layout not in LAYOUTS:
                raise InvalidInputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
            if base.width is None or base.height is None:
                raise InvalidInputError(f"layout {layout} needs the output size: give width and height")
            if base.pose_image is not None:
                raise InvalidInputError("give either a layout or a pose_image, not both")
        boxes = layout_boxes(layout, len(people), base.width, base.height) if layout else [None] * len(people)
        resolved: list[dict[str, Any]] = []
        names: list[str] = []
        for j, (p, layout_box) in enumerate(zip(people, boxes)):
            where = f"people[{j}]"
            unknown = set(p) - {"character_id", "face", "face_index", "box", "pose_index", "identity_strength", "adapter_strength"}
            if unknown:
                raise InvalidInputError(f"{where}: unknown field {sorted(unknown)[0]!r}")
            cid, face = p.get("character_id"), p.get("face")
            if (cid is None) == (face is None):
                raise InvalidInputError(f"{where}: give a character_id or a face, one of the two")
            if layout is not None and (p.get("box") is not None or p.get("pose_index") is not None):
                raise InvalidInputError(f"{where}: the layout places everyone; leave box and pose_index out")
            box = layout_box if layout is not None else p.get("box")
            if box is None and base.pose_image is None:
                raise InvalidInputError(f"{where}: give a box, a layout or a pose_image to place this person")
            if j == 0 and p.get("pose_index") not in (None, 0):
                raise InvalidInputError(f"{where}: the first person takes the pose photo's first face (left to right); order the people that way")
            if cid is not None:
                if owner_check is not None:
                    owner_check(cid)
                ident = self._stored_identity(self.store.get(cid), base, engine, references)
                names.append(cid)
            else:
                ident = {"face_image": face, "face_index": p.get("face_index")}
            resolved.append(dict(ident, box=box, pose_index=p.get("pose_index"),
                                 identity_strength=p.get("identity_strength"), adapter_strength=p.get("adapter_strength")))
        first, rest = resolved[0], resolved[1:]
        more = []
        for j, r in enumerate(rest, start=1):
            try:
                more.append(PlacedIdentity(**{k: v for k, v in r.items() if v is not None}))
            except ValidationError as e:
                msg = str(e.errors()[0].get("msg", "invalid value")).removeprefix("Value error, ")
                raise InvalidInputError(f"people[{j}]: {msg}") from None
        own = {k: first[k] for k in IDENTITY_FIELDS if first.get(k) is not None}
        strengths = {k: first[k] for k in ("identity_strength", "adapter_strength") if first.get(k) is not None}
        # the others default to the request's strengths (as the method resolves them: InfiniteYou's
        # InfuseNet scale defaults to 1.0), not to person 1's own
        from faceanchor.methods.registry import get as method_named

        defaults = {k: getattr(base, k) for k in ("identity_strength", "adapter_strength")}
        defaults.update({k: v for k, v in method_named(base.method).effective_params(base).items() if k in defaults})
        more = [m.model_copy(update={k: defaults[k] for k in defaults if getattr(m, k) is None}) for m in more]
        data = dict(fields, **own, **strengths, face_box=first["box"], more_identities=more)
        return parse_request(data), list(dict.fromkeys(names))

    def _one_off(self, fields: dict[str, Any], face: Any) -> GenerationRequest:
        if face is None and not fields.get("face_image") and fields.get("face_embedding") is None:
            raise InvalidInputError("give a character_id or a face image")
        data = dict(fields)
        if face is not None:
            if data.get("face_image"):
                raise InvalidInputError("give the face once: images.face or face_image")
            data["face_image"] = face
        return parse_request(data)

    def _finished(self, image: Any, meta: dict[str, Any]) -> str:
        """Store one output (PNG) after the trust steps (faceanchor.trust.finalise); its file id."""
        from faceanchor.trust.finalise import Finisher

        finisher = Finisher.for_settings(self.settings)
        image, trust = finisher.prepare(image)
        meta = dict(meta, trust=trust)
        return self.store.put_file(finisher.seal(encode_image(image, "png", meta), "png", trust, meta))

    def _outputs(self, images: list[GeneratedImage], meta: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for i, im in enumerate(images):
            fid = self._finished(im.image, dict(meta, seed=im.seed, identity_score=im.identity_score, index=i))
            out.append({"file_id": fid, "seed": int(im.seed), "identity_score": im.identity_score,
                        "identity_reason": im.identity_reason, "width": im.image.width, "height": im.image.height})
        return out

    # ------------------------------------------------------------------ operations
    def generate(self, engine: Any, fields: dict[str, Any], *, character_id: str | None = None, face: Any = None,
                 references: str = "photos", on_progress: Any = None, cancel: Any = None,
                 people: list[dict[str, Any]] | None = None, layout: str | None = None, owner_check: Any = None) -> GenerationResult:
        """Generate from a character (stored identity, recorded in its history) or from a face photo;
        with ``people`` (see :meth:`request_for_people`) several persons in one picture, the
        generation recorded in each named character's history."""
        if people:
            if character_id is not None or face is not None:
                raise InvalidInputError("with people give each person's character_id or face inside people, not on the request")
            request, characters = self.request_for_people(people, fields, engine, references, layout, owner_check)
        elif layout is not None:
            raise InvalidInputError("a layout places several people: give people (or several character ids)")
        elif character_id is not None:
            if face is not None:
                raise InvalidInputError("give either character_id or a face image, not both")
            ch = self.store.get(character_id)
            request = self.request_for(ch, fields, engine, references)
            characters = [character_id]
        else:
            request = self._one_off(fields, face)
            characters = []
        result = engine.generate(request, on_progress, cancel)
        result.params["character_id"] = characters[0] if characters and not people else None
        if people:
            result.params["people"] = [{"character_id": p.get("character_id")} for p in people]
        if characters:
            meta = dict(result.metadata(), character_id=result.params["character_id"])
            if people:
                meta["character_ids"] = characters
            outputs = self._outputs(result.images, meta)
            entries = [self.store.add_generation(cid, "generate", request.public_params(), outputs,
                                                 {"timings": meta["timings"], "face_detail": result.params.get("face_detail"),
                                                  **({"people": result.params["people"]} if people else {})})
                       for cid in characters]
            result.params["history_id"] = entries[0].id
            if people:
                result.params["history_ids"] = [e.id for e in entries]
        return result

    def id_photo(self, engine: Any, fields: dict[str, Any], *, character_id: str | None = None, face: Any = None,
                 on_progress: Any = None, cancel: Any = None, gutter: int = 8) -> GenerationResult:
        """The 4-in-1 ID photo: images are [sheet, front, left, right, smiling]."""
        from faceanchor.character.idphoto import id_photo

        require_character_engine(engine, "an ID photo")
        if character_id is not None:
            if face is not None:
                raise InvalidInputError("give either character_id or a face image, not both")
            ch = self.store.get(character_id)
            request = self.request_for(ch, fields, engine)
        else:
            request = self._one_off(fields, face)
        res = id_photo(engine, request, gutter=gutter, on_progress=on_progress, cancel=cancel)
        meta = res.metadata()
        images = [GeneratedImage(res.sheet, res.seed, None, "the sheet is scored per view")]
        images += [GeneratedImage(v.image, v.seed, v.identity_score, v.identity_reason) for v in res.views]
        params = dict(res.params, id_photo=meta, character_id=character_id)
        if character_id is not None:
            sheet_id = self._finished(res.sheet, meta)
            views = []
            view_idents = []
            for v in res.views:
                fid = self._finished(v.image, dict(v.to_dict(), kind="id-photo view", character_id=character_id))
                views.append(dict(v.to_dict(), file_id=fid))
                ident = self._analyse_view(v.image, request.face_embedding_space, f"view:{v.name}")
                if ident is not None:
                    ident["photo_file"] = fid
                    view_idents.append(ident)
            self.store.set_id_photo(character_id, sheet_id, views, view_idents)
            outputs = [{"file_id": sheet_id, "view": "sheet", "seed": res.seed, "width": res.sheet.width, "height": res.sheet.height}]
            outputs += [dict(file_id=v["file_id"], view=v["view"], seed=v["seed"], identity_score=v["identity_score"],
                             identity_reason=v["identity_reason"], width=v["width"], height=v["height"]) for v in views]
            entry = self.store.add_generation(character_id, "id-photo", request.public_params(), outputs,
                                              {"views_as_references": len(view_idents), "timings": meta["timings"]})
            params.update(history_id=entry.id, views_as_references=len(view_idents))
        return GenerationResult(images=images, seed=res.seed, params=params, models={}, timings=res.timings)

    def _analyse_view(self, image: Any, space: str | None, source: str) -> dict[str, Any] | None:
        """A generated view as an extra reference, when a face is found in it."""
        if not space:
            return None
        an = self.analyzer(space)
        with self._analysis_lock:
            faces = an.get(np.asarray(image.convert("RGB")), max_num=1)
        if not faces:
            return None
        return self._identity_dict(faces[0], space, source, image.size)

    def edit(self, engine: Any, fields: dict[str, Any], target: Any, *, mode: str = "background", character_id: str | None = None,
             face: Any = None, strength: float | None = None, mask_source: str = "auto",
             on_progress: Any = None, cancel: Any = None) -> GenerationResult:
        """Edit ``target`` with the prompt, keeping (``background``) or re-rendering (``face``) the face."""
        from faceanchor.character import edit as ops

        require_character_engine(engine, "an edit")
        if mode not in ops.EDIT_MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(ops.EDIT_MODES)}, got {mode!r}")
        if target is None:
            raise InvalidInputError("an edit needs a target image")
        if character_id is not None:
            if face is not None:
                raise InvalidInputError("give either character_id or a face image, not both")
            request = self.request_for(self.store.get(character_id), fields, engine)
        else:
            request = self._one_off(fields, face)
        image = load_image(target, self.limits, name="target image")
        t0 = time.perf_counter()
        step = _stepper(on_progress)
        if mode == "face":
            res = ops.edit_face(engine, request, image, strength=strength or ops.DEFAULT_FACE_STRENGTH, on_step=step, cancel=cancel)
        else:
            res = ops.edit_background(engine, request, image, strength=strength or ops.DEFAULT_BACKGROUND_STRENGTH,
                                      mask_source=mask_source, on_step=step, cancel=cancel)
        timings = {"total": time.perf_counter() - t0}
        info = dict(res.info, mode=mode, identity_score_before=res.identity_score_before,
                    identity_reason_before=res.identity_reason_before, identity_score_after=res.identity_score,
                    identity_reason_after=res.identity_reason, box=list(res.box) if res.box else None)
        params = dict(request.public_params(), edit=info, character_id=character_id)
        out = GeneratedImage(res.image, res.seed, res.identity_score, res.identity_reason)
        if character_id is not None:
            outputs = self._outputs([out], {"kind": "edit", "edit": info, "character_id": character_id})
            entry = self.store.add_generation(character_id, "edit", request.public_params(), outputs, info)
            params["history_id"] = entry.id
        return GenerationResult(images=[out], seed=res.seed, params=params, models={}, timings=timings)

    # ------------------------------------------------------------------ queue runners
    def runners(self) -> dict[str, Any]:
        """Job runners for the service queue (apps ``character/generate|id-photo|edit``)."""
        return {"character/generate": self._run_generate, "character/id-photo": self._run_id_photo, "character/edit": self._run_edit}

    def _check_owner(self, job: dict[str, Any]) -> None:
        """A queued job names a character of its submitter (checked at submit; again here, as the
        character may have changed hands or the job been written by something else)."""
        owner = job.get("owner")
        if "owner" not in job or job.get("admin"):
            return
        for cid in [job.get("character_id")] + [p.get("character_id") for p in job.get("people") or []]:
            if cid is not None:
                self.store.get_owned(cid, lambda o: o == owner)

    def _run_generate(self, engine: Any, job: dict[str, Any], on_progress: Any, cancel: Any) -> GenerationResult:
        self._check_owner(job)
        return self.generate(engine, job.get("fields", {}), character_id=job.get("character_id"), face=job.get("face"),
                             references=job.get("references", "photos"), on_progress=on_progress, cancel=cancel,
                             people=job.get("people"), layout=job.get("layout"))

    def _run_id_photo(self, engine: Any, job: dict[str, Any], on_progress: Any, cancel: Any) -> GenerationResult:
        self._check_owner(job)
        return self.id_photo(engine, job.get("fields", {}), character_id=job.get("character_id"), face=job.get("face"),
                             on_progress=on_progress, cancel=cancel)

    def _run_edit(self, engine: Any, job: dict[str, Any], on_progress: Any, cancel: Any) -> GenerationResult:
        self._check_owner(job)
        return self.edit(engine, job.get("fields", {}), job.get("target"), mode=job.get("mode", "background"),
                         character_id=job.get("character_id"), face=job.get("face"), strength=job.get("strength"),
                         mask_source=job.get("mask_source", "auto"), on_progress=on_progress, cancel=cancel)


def _stepper(on_progress: Any) -> Any:
    if on_progress is None:
        return None
    from faceanchor.types import ProgressEvent

    def step(i: int, total: int) -> None:
        on_progress(ProgressEvent(stage="denoise", step=i, total=total, message=f"step {i}/{total}"))

    return step


__all__ = ["APPS", "CharacterService", "NAMESPACE", "parse_request"]


#: What ID photos and edits use of an engine (types.CharacterEngine).
_CHARACTER_ENGINE = ("lock", "render_size", "method", "identity", "analyzer", "score", "can_render", "work_pixels", "render")


def require_character_engine(engine: Any, what: str) -> None:
    """A clear 501 instead of an AttributeError deep in a job when the engine (e.g. a
    generation-only ``--engine`` plug-in) lacks what :class:`~faceanchor.types.CharacterEngine` names."""
    missing = [name for name in _CHARACTER_ENGINE if not hasattr(engine, name)]
    if missing:
        raise EngineCapabilityError(f"{what} needs an engine with character support; this server's engine "
                                    f"({type(engine).__name__}) has no {', '.join(missing)}")
