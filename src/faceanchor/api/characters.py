"""Characters over HTTP.

* ``/v1/characters``: ``POST`` create (photos as URL / data: URI / base64; 201), ``GET`` list,
  ``GET /{id}``, ``DELETE /{id}`` (its files too), ``GET /{id}/history``,
  ``GET /{id}/files/{file_id}`` (its photos, sheet, views and outputs).
* The request shapes character APIs use: ``POST /v1/character/id-photo``
  ``{"images": {"face": URL}}`` or ``{"character_id"}``; ``POST /v1/character/generate``
  ``{"prompt", "images": {"face": URL}}`` or ``{"prompt", "character_id"}`` (every generation
  field accepted), or ``{"prompt", "people": [{"character_id"}, {"face": URL, "box"}], "layout"}``
  for several people in one picture; ``POST /v1/character/edit`` ``{"prompt", "images": {"target": URL, "face":
  URL}}`` or with ``character_id``, ``mode`` ``background`` (default) or ``face``. They run on
  the queue and wait (like ``/v1/instantid``) and answer JSON with image URLs, seeds, scores.
* Queued variants: ``POST /queue/character/{op}`` → request id and URLs; then
  ``GET /queue/character/{op}/requests/{id}/status``, ``GET …/{id}``, ``PUT …/{id}/cancel``.

Keys as everywhere: ``x-api-key``, ``Authorization: Key …`` or ``Authorization: Bearer …``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from faceanchor.api.deps import CurrentKey, OptionalKey, ServiceDep, SettingsDep, SubmittingKey
from faceanchor.api.errors import ApiError, error_responses
from faceanchor.api.inputs import decode_image_ref, resolve_images
from faceanchor.api.jobs import JobTimeout, base_url, cancel_job, check_spaces, check_style, job_urls, raise_job_error, result_body, result_response, status_body
from faceanchor.api.schemas import CancelOut, Coordinate, GenerateBody, ImageRef, JobStatusBody, QueueSubmitted
from faceanchor.errors import InvalidInputError
from faceanchor.imageio import ImageLimits, probe_image
from faceanchor.service.characters import CharacterService
from faceanchor.service.runtime import Service
from faceanchor.store.jobs import JobView
from faceanchor.types import JobStatus

router = APIRouter(tags=["characters"])

Op = Literal["id-photo", "generate", "edit"]
CharacterId = Annotated[str, Path(max_length=64)]
MAX_OFFSET = 1_000_000_000  # SQLite takes 64-bit offsets only; larger ones would end in a 500


def install(app: FastAPI, service: Service) -> CharacterService:
    """Attach the character service to ``app`` and its runners to the queue (before start)."""
    chars = CharacterService(service.settings, service.db, service.files)
    service.runners.update(chars.runners())
    app.state.characters = chars
    app.include_router(router)
    return chars


def _chars(request: Request) -> CharacterService:
    return request.app.state.characters


def _owned(request: Request, key, character_id: str):  # noqa: ANN001, ANN202
    """The character if ``key`` may see it (its owner's, or an admin key); 404 otherwise, as for an unknown id."""
    return _chars(request).store.get_owned(character_id, lambda owner: key.can_see(owner))


# --------------------------------------------------------------------------- bodies


class CharacterImages(BaseModel):
    model_config = ConfigDict(extra="forbid")
    face: ImageRef | None = Field(None, description="The face photo: URL, data: URI or base64.")
    faces: list[ImageRef] = Field(default_factory=list, max_length=5, description="More photos of the same person (create).")
    target: ImageRef | None = Field(None, description="Edit: the picture to change.")


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    images: CharacterImages
    spaces: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")]] | None = Field(
        None, max_length=4, description="Embedding spaces to store (default the engine's InstantID space).")
    face_index: int | None = Field(None, ge=0, description="Which face of the first photo (largest first).")
    allow_different_people: bool = Field(False, description="Store photos of different people as one character on purpose (else 422 different_people); recorded in its history.")


class CharacterBody(GenerateBody):
    """A generation body plus the character fields (``images`` or ``character_id``)."""

    model_config = ConfigDict(extra="forbid")
    character_id: str | None = Field(None, max_length=64)
    images: CharacterImages | None = None
    reference_set: Literal["photos", "views", "all"] = Field(
        "photos", description="With character_id: its reference photos, its ID-photo views (where a face was found) or all.")


class PersonBody(BaseModel):
    """One person of a several-people picture: a character or a face, its place, its strengths."""

    model_config = ConfigDict(extra="forbid")
    character_id: str | None = Field(None, max_length=64, description="A character of yours (or give face).")
    face: ImageRef | None = Field(None, description="Or a face photo: URL, data: URI or base64.")
    face_index: int | None = Field(None, ge=0, description="With face: which face of the photo (largest first).")
    box: list[Coordinate] | None = Field(None, min_length=4, max_length=4, description="Where this face goes: (x1, y1, x2, y2) in output pixels.")
    pose_index: int | None = Field(None, ge=0, description="With pose_image: which of its faces (left to right); default the person's place in the list.")
    identity_strength: float | None = Field(None, ge=0.0, le=2.0, description="This person's IdentityNet (InstantID) or InfuseNet (InfiniteYou) scale (default the request's).")
    adapter_strength: float | None = Field(None, ge=0.0, le=2.0, description="This person's adapter scale (default the request's).")

    @field_validator("box")
    @classmethod
    def _box(cls, box: list[float] | None) -> list[float] | None:
        if box is not None and not (box[0] < box[2] and box[1] < box[3]):
            raise ValueError("box must be (x1, y1, x2, y2) with x1 < x2 and y1 < y2, in output pixels")
        return box


class GenerateCharacterBody(CharacterBody):
    """``/v1/character/generate``: one character or face, or ``people`` (2 to 4) in one picture."""

    people: list[PersonBody] | None = Field(None, min_length=1, max_length=4, description=(
        "Several people in one picture, person 1 first: each a character_id or a face, placed by box, by layout "
        "or on pose_image's faces left to right; instead of character_id / images.face."))
    layout: Literal["left-right"] | None = Field(None, description="With people: side by side in order, person 1 on the left (needs width and height).")


class EditBody(CharacterBody):
    mode: Literal["background", "face"] = Field("background", description="background: keep the person; face: re-render the face.")
    strength: float | None = Field(None, gt=0.0, le=1.0, description="Share of the schedule re-run (default 1.0 background, 0.55 face).")
    mask_source: Literal["auto", "segmentation", "face-box"] = Field("auto", description="How the person is found (background mode).")


class CharacterOut(BaseModel):
    id: str
    name: str
    created_at: float
    updated_at: float
    photos: list[str]
    spaces: list[str]
    sheet_file: str | None = None
    views: list[dict[str, Any]] = Field(default_factory=list)
    identities: list[dict[str, Any]] = Field(default_factory=list)
    generations: int = 0
    files_url: str


class CharacterList(BaseModel):
    characters: list[CharacterOut]


class HistoryOut(BaseModel):
    character_id: str
    entries: list[dict[str, Any]]


class DeletedOut(BaseModel):
    id: str
    deleted: bool
    files_deleted: int


def _out(ch, base: str) -> CharacterOut:  # noqa: ANN001
    d = ch.to_dict()
    files = f"{base}/v1/characters/{ch.id}/files"
    d["views"] = [dict(v, url=f"{files}/{v['file_id']}") if v.get("file_id") else v for v in d["views"]]
    return CharacterOut(**d, files_url=files)


# --------------------------------------------------------------------------- /v1/characters


@router.post("/v1/characters", status_code=201, response_model=CharacterOut,
             responses=error_responses(400, 401, 403, 413, 415, 422, 429), summary="Create a character from face photos")
def create_character(body: CreateBody, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey) -> CharacterOut:
    refs = ([body.images.face] if body.images.face else []) + list(body.images.faces)
    if not refs:
        raise ApiError(422, "images.face: a face photo is required", "validation_error")
    check_spaces(body.spaces)
    photos = [_image_bytes(r, f"images.face[{i}]", settings) for i, r in enumerate(refs)]
    ch = _chars(request).create(body.name, photos, spaces=body.spaces, engine=service.engine, face_index=body.face_index,
                                owner=key.owner, allow_different_people=body.allow_different_people)
    return _out(ch, base_url(request))


@router.get("/v1/characters", response_model=CharacterList, responses=error_responses(401, 403, 422), summary="List characters")
def list_characters(request: Request, key: CurrentKey, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> CharacterList:
    """The key's (or its tenant's) characters; an admin key lists every character."""
    base = base_url(request)
    owner = None if key.admin else key.owner
    return CharacterList(characters=[_out(c, base) for c in _chars(request).store.list(limit, offset, owner=owner)])


@router.get("/v1/characters/{character_id}", response_model=CharacterOut, responses=error_responses(401, 403, 404, 422), summary="One character")
def get_character(character_id: CharacterId, request: Request, key: CurrentKey) -> CharacterOut:
    return _out(_owned(request, key, character_id), base_url(request))


@router.delete("/v1/characters/{character_id}", response_model=DeletedOut, responses=error_responses(401, 403, 404, 422),
               summary="Delete a character and its files")
def delete_character(character_id: CharacterId, request: Request, service: ServiceDep, key: CurrentKey) -> DeletedOut:
    _owned(request, key, character_id)
    gone = _chars(request).delete(character_id)
    gone += service.delete_character_job_files(character_id)  # the queue's copies of its outputs and uploads
    return DeletedOut(id=character_id, deleted=True, files_deleted=len(gone))


@router.get("/v1/characters/{character_id}/history", response_model=HistoryOut, responses=error_responses(401, 403, 404, 422),
            summary="The character's generations")
def character_history(character_id: CharacterId, request: Request, key: CurrentKey,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100, offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> HistoryOut:
    _owned(request, key, character_id)
    files = f"{base_url(request)}/v1/characters/{character_id}/files"
    entries = []
    for h in _chars(request).history(character_id, limit, offset):
        d = h.to_dict()
        d["outputs"] = [dict(o, url=f"{files}/{o['file_id']}") for o in d["outputs"]]
        entries.append(d)
    return HistoryOut(character_id=character_id, entries=entries)


_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get("/v1/characters/{character_id}/files/{file_id}", response_class=FileResponse,
            responses={200: {"description": "The image.", "content": {"image/png": _BINARY}}, **error_responses(401, 403, 404, 422)},
            summary="A photo, sheet, view or output of the character")
def character_file(character_id: CharacterId, file_id: Annotated[str, Path(max_length=128)], request: Request, service: ServiceDep,
                   key: OptionalKey, expires: Annotated[str | None, Query(max_length=20)] = None,
                   sig: Annotated[str | None, Query(max_length=128)] = None) -> FileResponse:
    from faceanchor.api.files import check_access

    chars = _chars(request)
    check_access(service, key, request.url.path, expires, sig,
                 lambda k: chars.store.get_owned(character_id, lambda owner: k.can_see(owner)) is not None)
    ch = chars.get(character_id)
    owned = set(ch.photos) | ({ch.sheet_file} if ch.sheet_file else set()) | {v.get("file_id") for v in ch.views}
    owned |= {o.get("file_id") for h in chars.history(character_id, 10_000) for o in h.outputs}
    path = chars.store.file_path(file_id) if file_id in owned else None
    if path is None:
        raise ApiError(404, "no such file for this character")
    return FileResponse(path, media_type=chars.store.files.content_type(file_id, "characters") or "application/octet-stream",
                        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=31536000, immutable"})


# --------------------------------------------------------------------------- operations


def _image_bytes(ref: str, field: str, settings) -> bytes:  # noqa: ANN001
    data = decode_image_ref(ref, field, settings)
    probe_image(data, ImageLimits.from_settings(settings), name=field)  # header + structure; pixels in the worker
    return data


def _prepare(op: str, body: CharacterBody, request: Request, settings, key=None) -> dict[str, Any]:  # noqa: ANN001
    """The queued job of one character call; checks the character exists and decodes images now."""
    if len(body.prompt) > settings.max_prompt_chars or len(body.negative_prompt) > settings.max_prompt_chars:
        raise ApiError(422, f"prompt: at most {settings.max_prompt_chars} characters", "validation_error")
    if body.num_inference_steps is not None and body.num_inference_steps > settings.max_steps:
        raise ApiError(422, f"num_inference_steps: at most {settings.max_steps} on this server", "validation_error")
    if body.model_name is not None and body.model_name not in settings.api_model_names:
        raise InvalidInputError(f"model_name {body.model_name!r} is not offered by this server")
    check_style(body.style)
    images = body.images or CharacterImages()
    job: dict[str, Any] = {}
    people = getattr(body, "people", None)
    if getattr(body, "layout", None) is not None and not people:
        raise ApiError(422, "layout: it places people; give people", "validation_error")
    if people:
        if body.character_id is not None or images.face or body.face_image or body.face_images or body.face_embedding is not None:
            raise ApiError(422, "people: give each person's character_id or face inside people, not on the request", "validation_error")
        if body.layout is not None and (body.width is None or body.height is None):
            raise ApiError(422, f"layout {body.layout} needs the output size: give width and height", "validation_error")
        for i, p in enumerate(people):
            if (p.character_id is None) == (p.face is None):
                raise ApiError(422, f"people[{i}]: give a character_id or a face, one of the two", "validation_error")
            if body.layout is None and p.box is None and body.pose_image is None:
                raise ApiError(422, f"people[{i}]: give a box, a layout or a pose_image to place this person", "validation_error")
        job["people"] = [_person(i, p, request, settings, key) for i, p in enumerate(people)]
        job["layout"] = body.layout
    elif body.character_id is not None:
        if images.face or body.face_image or body.face_images or body.face_embedding is not None:
            raise ApiError(422, "give either character_id or a face image, not both", "validation_error")
        if key is not None:  # 404 now, not in the job; another owner's character is unknown too
            _owned(request, key, body.character_id)
        else:
            _chars(request).get(body.character_id)
        job["character_id"] = body.character_id
    elif images.face:
        job["face"] = _image_bytes(images.face, "images.face", settings)
    elif not (body.face_image or body.face_images or body.face_embedding is not None):
        raise ApiError(422, "images.face: a face photo (or a character_id) is required", "validation_error")
    if op == "edit":
        if not images.target:
            raise ApiError(422, "images.target: the picture to edit is required", "validation_error")
        job["target"] = _image_bytes(images.target, "images.target", settings)
        assert isinstance(body, EditBody)
        job.update(mode=body.mode, strength=body.strength, mask_source=body.mask_source)
    unset = {"identity_strength"} - body.model_fields_set  # stays unset: the method's default (InstantID 0.8, InfiniteYou 1.0)
    fields = body.model_dump(mode="json", exclude={"base64", "character_id", "images", "reference_set", "mode", "strength", "mask_source",
                                                   "people", "layout"} | unset, exclude_none=True)
    fields.setdefault("method", "instantid")
    job["fields"] = resolve_images(fields, settings)
    job["references"] = body.reference_set
    job["output_format"] = body.output_format
    if key is not None:
        job["owner"] = key.owner  # checked again by the runner
        job["admin"] = bool(key.admin)
    return job


def _person(i: int, p: PersonBody, request: Request, settings, key) -> dict[str, Any]:  # noqa: ANN001
    """One person of ``people`` as the job holds it; a character another owner has is a 404, as an unknown one."""
    where = f"people[{i}]"
    out: dict[str, Any] = p.model_dump(exclude={"face"}, exclude_none=True)
    if p.character_id is not None:
        if p.face_index is not None:
            raise ApiError(422, f"{where}.face_index: a character's face is already chosen", "validation_error")
        if key is not None:
            _owned(request, key, p.character_id)
        else:
            _chars(request).get(p.character_id)
    else:
        out["face"] = _image_bytes(p.face, f"{where}.face", settings)
    return out


async def _sync(op: str, body: CharacterBody, request: Request, service: Service, settings, key, idem: str | None,  # noqa: ANN001
                timeout: float | None = None) -> JSONResponse:
    from faceanchor.api.generate import CLIENT_GONE, wait_or_cancel

    service.check_available(need_ready=True)
    job_req = await run_in_threadpool(_prepare, op, body, request, settings, key)
    base = base_url(request)
    job, created = await run_in_threadpool(lambda: service.submit(f"character/{op}", job_req, key=key, idempotency_key=idem,
                                                                  start_timeout=settings.sync_timeout_seconds, base_url=base,
                                                                  timeout=timeout))
    job = await wait_or_cancel(service, job.id, created, request)
    if job is None:  # the client disconnected: its job was cancelled
        return JSONResponse({}, status_code=CLIENT_GONE)
    if job.status != JobStatus.COMPLETED:
        raise_job_error(job)
    return JSONResponse(result_body(job, base, service.signer), headers={"X-Request-Id": job.id})


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]
_SYNC_ERRORS = error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 501, 503, 504)


@router.post("/v1/character/id-photo", responses=_SYNC_ERRORS, summary="The 4-in-1 ID photo (sheet + 4 views) and wait")
async def character_id_photo(body: CharacterBody, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
                             idempotency_key: IdempotencyKey = None, timeout: JobTimeout = None) -> JSONResponse:
    return await _sync("id-photo", body, request, service, settings, key, idempotency_key, timeout)


@router.post("/v1/character/generate", responses=_SYNC_ERRORS, summary="Generate with a character or a face photo and wait")
async def character_generate(body: GenerateCharacterBody, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
                             idempotency_key: IdempotencyKey = None, timeout: JobTimeout = None) -> JSONResponse:
    return await _sync("generate", body, request, service, settings, key, idempotency_key, timeout)


@router.post("/v1/character/edit", responses=_SYNC_ERRORS, summary="Edit a picture keeping the character's face and wait")
async def character_edit(body: EditBody, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
                         idempotency_key: IdempotencyKey = None, timeout: JobTimeout = None) -> JSONResponse:
    return await _sync("edit", body, request, service, settings, key, idempotency_key, timeout)


# --------------------------------------------------------------------------- queued variants


def _submit(op: str, body: CharacterBody, request: Request, service: Service, settings, key, idem: str | None,  # noqa: ANN001
            timeout: float | None = None) -> QueueSubmitted:
    job_req = _prepare(op, body, request, settings, key)
    base = base_url(request)
    job, _ = service.submit(f"character/{op}", job_req, key=key, idempotency_key=idem, base_url=base, timeout=timeout)
    now = service.get(job.id)
    return QueueSubmitted(request_id=job.id, status=now.status if now else job.status,
                          queue_position=now.queue_position if now else None, **job_urls(base, f"character/{op}", job.id))


_QUEUE_ERRORS = error_responses(400, 401, 403, 404, 413, 415, 422, 429, 503)


@router.post("/queue/character/id-photo", response_model=QueueSubmitted, responses=_QUEUE_ERRORS, summary="Queue an ID photo")
def queue_id_photo(body: CharacterBody, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
                   idempotency_key: IdempotencyKey = None, timeout: JobTimeout = None) -> QueueSubmitted:
    return _submit("id-photo", body, request, service, settings, key, idempotency_key, timeout)


@router.post("/queue/character/generate", response_model=QueueSubmitted, responses=_QUEUE_ERRORS, summary="Queue a character generation")
def queue_generate(body: GenerateCharacterBody, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
                   idempotency_key: IdempotencyKey = None, timeout: JobTimeout = None) -> QueueSubmitted:
    return _submit("generate", body, request, service, settings, key, idempotency_key, timeout)


@router.post("/queue/character/edit", response_model=QueueSubmitted, responses=_QUEUE_ERRORS, summary="Queue a character edit")
def queue_edit(body: EditBody, request: Request, service: ServiceDep, settings: SettingsDep, key: SubmittingKey,
               idempotency_key: IdempotencyKey = None, timeout: JobTimeout = None) -> QueueSubmitted:
    return _submit("edit", body, request, service, settings, key, idempotency_key, timeout)


def _own(service: Service, op: str, request_id: str, key) -> JobView:  # noqa: ANN001
    from faceanchor.api.jobs import visible_job

    job = visible_job(service.get(request_id), key, f"character/{op}")
    if job is None:
        raise ApiError(404, f"no request {request_id} in character/{op}")
    return job


@router.get("/queue/character/{op}/requests/{request_id}/status", response_model=JobStatusBody, response_model_exclude_none=True,
            responses=error_responses(401, 403, 404, 422), summary="Status of a queued character request")
def character_status(op: Op, request_id: Annotated[str, Path(max_length=64)], request: Request, service: ServiceDep, key: CurrentKey) -> JobStatusBody:
    return status_body(_own(service, op, request_id, key), base_url(request))


@router.get("/queue/character/{op}/requests/{request_id}", responses={202: {"model": JobStatusBody}, **_SYNC_ERRORS},
            summary="Result of a queued character request")
def character_result(op: Op, request_id: Annotated[str, Path(max_length=64)], request: Request, service: ServiceDep, key: CurrentKey):  # noqa: ANN201
    return result_response(_own(service, op, request_id, key), base_url(request), service.signer)


@router.put("/queue/character/{op}/requests/{request_id}/cancel", status_code=202, response_model=CancelOut,
            responses=error_responses(401, 403, 404, 422), summary="Cancel a queued character request")
def character_cancel(op: Op, request_id: Annotated[str, Path(max_length=64)], service: ServiceDep, key: CurrentKey) -> CancelOut:
    _own(service, op, request_id, key)
    return cancel_job(service, request_id, f"character/{op}")
