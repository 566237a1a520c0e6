"""The MCP server: faceanchor's tools, resources and a prompt for an agent that keeps a face.

:func:`build_server` returns an ``mcp`` :class:`~mcp.server.mcpserver.MCPServer` whose tools call a
:class:`~faceanchor.mcp.backend.Backend` (a faceanchor HTTP API) through
:class:`faceanchor.client.AsyncClient`. Each tool has a JSON schema (from its annotated
parameters) and a description an agent can act on.

* Long tools (``generate_image``, ``make_id_photo``, ``edit_image``) queue a job and follow its
  status, sending an MCP progress notification for each denoising step the queue reports; a
  cancelled tool call (the client's ``notifications/cancelled``) cancels the job. ``wait=false``
  returns the job at once, for ``get_job`` / ``cancel_job``.
* Images come back as MCP image content (small JPEG previews, at most ``PREVIEW_SIDE`` px) plus a
  resource link per full file (``faceanchor://files/{file_id}``, readable through this server)
  and, where the files have an outside URL, that URL.
* Bad input or an error answer of the API is a tool error (``isError``) with the API's message.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, ResourceLink, TextContent, ToolAnnotations
from pydantic import Field

from faceanchor.client import AsyncClient, FaceAnchorClientError, JobStatus, Result
from faceanchor.mcp.backend import Backend, BackendError

PREVIEW_SIDE = 256
FILE_URI = "faceanchor://files/{file_id}"
INSTRUCTIONS = (
    "faceanchor makes pictures of a person from one face photo, keeping their identity. Typical flow: "
    "create_character once from a clear face photo, then generate_image / edit_image / make_id_photo with its "
    "character_id (every generation is kept in the character's history). Images come back as small previews "
    "plus faceanchor://files/... resource links to the full files. Long calls report progress; cancelling the "
    "call cancels the job."
)

ImageArg = Annotated[str, Field(description="The image: a local file path (stdio only), an http(s) URL, a data: URI or base64.")]
Seed = Annotated[int, Field(ge=-1, le=2**63 - 1, description="-1 picks a random seed; the seeds used are returned.")]
Steps = Annotated[int | None, Field(ge=1, le=100, description="Denoising steps (default: the method's, 30).")]
Side = Annotated[int | None, Field(ge=64, le=2048, description="Pixels, rounded down to a multiple of 64 (default: from the photo).")]
Wait = Annotated[bool, Field(description="true: wait for the images (progress is reported); false: return the job at once "
                                          "(follow it with get_job).")]


def build_server(backend: Backend, *, name: str = "faceanchor") -> MCPServer:
    """The MCP server over ``backend``. Nothing runs until a transport serves it."""
    lifespan = None
    if backend.lifespan is not None:
        from contextlib import asynccontextmanager

        @asynccontextmanager
        async def lifespan(_server: MCPServer):  # noqa: ANN202
            async with backend.lifespan():
                yield {}

    mcp = MCPServer(name, instructions=INSTRUCTIONS, version="0.1.0", lifespan=lifespan, log_level="WARNING")
    tools = _Tools(backend)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @mcp.tool(annotations=read_only, structured_output=False)
    async def list_methods(ctx: Context) -> CallToolResult:
        """The generation methods this server runs (name, base models, what each takes) and the style presets.

        Use a method's name as generate_image's `method` and a style's name as its `style`."""
        async with tools.client(ctx) as fa:
            methods = await tools.call(fa.methods())
        data = {"methods": [{"name": m.name, "label": m.label, "description": m.description, "families": m.families,
                             "max_references": m.max_references, "fields": m.method_fields} for m in methods.methods],
                "styles": _style_names()}
        return _result(data)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False))
    async def create_character(
        ctx: Context,
        name: Annotated[str, Field(min_length=1, max_length=200, description="A name for the person, e.g. 'Ada'.")],
        face_image: ImageArg,
        more_face_images: Annotated[list[str], Field(max_length=5, description="More photos of the same person (same forms as face_image).")] = [],  # noqa: B006
        face_index: Annotated[int | None, Field(ge=0, description="Which face of the first photo when it shows several (0: the largest).")] = None,
    ) -> CallToolResult:
        """Store a character: analyse a face photo once and keep its identity (embeddings, keypoints, quality).

        Returns the character's id; pass it as `character_id` to generate_image, edit_image and make_id_photo.
        Fails with a readable message when no face is found."""
        photos = [tools.image(face_image, "face_image")] + [tools.image(p, f"more_face_images[{i}]") for i, p in enumerate(more_face_images)]
        async with tools.client(ctx) as fa:
            ch = await tools.call(fa.create_character(name, photos, face_index=face_index))
        return _result(_character(ch), f"Created character {ch.name!r} with id {ch.id}.")

    @mcp.tool(annotations=read_only, structured_output=False)
    async def list_characters(
        ctx: Context,
        limit: Annotated[int, Field(ge=1, le=500, description="At most this many, newest first.")] = 50,
    ) -> CallToolResult:
        """The characters you stored (id, name, number of generations)."""
        async with tools.client(ctx) as fa:
            chars = await tools.call(fa.list_characters(limit=limit))
        return _result({"characters": [{"id": c.id, "name": c.name, "generations": c.generations,
                                        "has_id_photo": c.sheet_file is not None} for c in chars]})

    @mcp.tool(annotations=read_only, structured_output=False)
    async def get_character(
        ctx: Context,
        character_id: Annotated[str, Field(min_length=1, max_length=64, description="The id create_character returned.")],
        history: Annotated[int, Field(ge=0, le=100, description="Include this many history entries (newest first).")] = 10,
    ) -> CallToolResult:
        """One character: its photos, embedding spaces, ID-photo sheet and its history of generations and edits."""
        async with tools.client(ctx) as fa:
            ch = await tools.call(fa.get_character(character_id))
            data = _character(ch)
            if history:
                hist = await tools.call(fa.character_history(character_id, limit=history))
                data["history"] = [{"id": e.id, "kind": e.kind, "created_at": e.created_at,
                                    "prompt": e.request.get("prompt"), "outputs": len(e.outputs)} for e in hist.entries]
        return _result(data)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True))
    async def delete_character(
        ctx: Context,
        character_id: Annotated[str, Field(min_length=1, max_length=64, description="The character to delete, with its files.")],
    ) -> CallToolResult:
        """Delete a character, its photos, its ID photo and every image made from it. Cannot be undone."""
        async with tools.client(ctx) as fa:
            gone = await tools.call(fa.delete_character(character_id))
        return _result({"id": gone.id, "deleted": gone.deleted, "files_deleted": gone.files_deleted})

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False))
    async def generate_image(
        ctx: Context,
        prompt: Annotated[str, Field(min_length=1, max_length=10_000, description="What to picture, e.g. 'as an astronaut on the moon, film still'.")],
        character_id: Annotated[str | None, Field(max_length=64, description="A stored character (from create_character); or give face_image.")] = None,
        face_image: Annotated[str | None, Field(description="Instead of character_id: a face photo (path on stdio, http(s) URL, data: URI or base64).")] = None,
        style: Annotated[str | None, Field(description="A style preset (list_methods lists them), e.g. 'Watercolor'.")] = None,
        negative_prompt: Annotated[str, Field(max_length=10_000, description="What to avoid.")] = "",
        samples: Annotated[int, Field(ge=1, le=4, description="How many images, 1-4.")] = 1,
        seed: Seed = -1,
        width: Side = None,
        height: Side = None,
        steps: Steps = None,
        method: Annotated[str | None, Field(description="A method name (list_methods); default instantid.")] = None,
        guidance_scale: Annotated[float | None, Field(ge=0, le=30, description="Prompt adherence (default 5).")] = None,
        identity_strength: Annotated[float | None, Field(ge=0, le=2, description="How strongly the face is kept, 0-2 (default 0.8).")] = None,
        wait: Wait = True,
    ) -> CallToolResult:
        """Generate pictures of a character (or of the person in a face photo) from a prompt, keeping their face.

        Returns previews, resource links to the full images, the seeds and each image's identity score
        (cosine similarity to the reference face). With a character, the generation is kept in its history."""
        fields = _fields(negative_prompt=negative_prompt or None, style=style, samples=samples, seed=seed, width=width,
                         height=height, num_inference_steps=steps, method=method, guidance_scale=guidance_scale,
                         identity_strength=identity_strength)
        async with tools.client(ctx) as fa:
            if character_id:
                if face_image:
                    raise ToolError("give character_id or face_image, not both")
                submit = fa.submit_character("generate", character_id, prompt=prompt, **fields)
            elif face_image:
                app = await tools.call(backend.app_of(fa, method))
                submit = fa.submit(app, dict(fields, prompt=prompt, face_image=tools.image(face_image, "face_image")))
            else:
                raise ToolError("give a character_id (create_character makes one) or a face_image")
            return await tools.run(ctx, fa, submit, wait)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False))
    async def make_id_photo(
        ctx: Context,
        character_id: Annotated[str | None, Field(max_length=64, description="A stored character; its sheet is kept with it.")] = None,
        face_image: Annotated[str | None, Field(description="Instead of character_id: a face photo.")] = None,
        seed: Seed = -1,
        steps: Steps = None,
        width: Side = None,
        height: Side = None,
        wait: Wait = True,
    ) -> CallToolResult:
        """Make a 4-in-1 ID photo: front, left and right 45° turns and a smiling front view, side by side.

        The first image is the sheet, then each view. A character keeps its sheet (get_character shows it)."""
        fields = _fields(seed=seed, num_inference_steps=steps, width=width, height=height)
        async with tools.client(ctx) as fa:
            face = tools.image(face_image, "face_image") if face_image else None
            if not character_id and face is None:
                raise ToolError("give a character_id or a face_image")
            return await tools.run(ctx, fa, fa.submit_character("id-photo", character_id or None, face=face, **fields), wait)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False))
    async def edit_image(
        ctx: Context,
        target_image: Annotated[str, Field(description="The picture to change (path on stdio, http(s) URL, data: URI, base64, "
                                                       "or faceanchor://files/ID from an earlier result).")],
        prompt: Annotated[str, Field(min_length=1, max_length=10_000, description="The new scene (background mode) or how the face should look (face mode).")],
        character_id: Annotated[str | None, Field(max_length=64, description="Whose face to keep; or give face_image.")] = None,
        face_image: Annotated[str | None, Field(description="Instead of character_id: a face photo.")] = None,
        mode: Annotated[Literal["background", "face"], Field(description="background: keep the person, re-imagine the rest; "
                                                                          "face: re-render the face as the character's.")] = "background",
        strength: Annotated[float | None, Field(gt=0, le=1, description="Share of the schedule re-run (default 1.0 background, 0.55 face).")] = None,
        seed: Seed = -1,
        steps: Steps = None,
        width: Side = None,
        height: Side = None,
        wait: Wait = True,
    ) -> CallToolResult:
        """Edit a picture keeping a character's face: change everything but the person, or put the character's face on it.

        Pixels outside the edited region are unchanged. Kept in the character's history."""
        fields = _fields(seed=seed, num_inference_steps=steps, strength=strength, width=width, height=height)
        async with tools.client(ctx) as fa:
            target = await tools.target(fa, target_image)
            face = tools.image(face_image, "face_image") if face_image else None
            if not character_id and face is None:
                raise ToolError("give a character_id or a face_image")
            submit = fa.submit_character("edit", character_id or None, face=face, target=target, prompt=prompt, mode=mode, **fields)
            return await tools.run(ctx, fa, submit, wait)

    @mcp.tool(annotations=read_only, structured_output=False)
    async def get_job(
        ctx: Context,
        job_id: Annotated[str, Field(min_length=3, max_length=200, description="The job_id a tool returned (wait=false).")],
    ) -> CallToolResult:
        """Where a job is (IN_QUEUE, IN_PROGRESS with its step, COMPLETED, FAILED, CANCELLED); a finished job's images."""
        app, request_id = _split_job(job_id)
        async with tools.client(ctx) as fa:
            status = await tools.call(fa.status(app, request_id))
            if status.status == "COMPLETED":
                return await tools.finished(ctx, fa, job_id, await tools.call(fa.result(app, request_id)))
        return _result(_status(job_id, status))

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True))
    async def cancel_job(
        ctx: Context,
        job_id: Annotated[str, Field(min_length=3, max_length=200, description="The job to stop.")],
    ) -> CallToolResult:
        """Stop a queued or running job (it stops between denoising steps). A finished job is left as it is."""
        app, request_id = _split_job(job_id)
        async with tools.client(ctx) as fa:
            outcome = await tools.call(fa.cancel(app, request_id))
        return _result({"job_id": job_id, "outcome": outcome})

    @mcp.resource(FILE_URI, name="file", description="A generated image (full size) by file id.", mime_type="image/png")
    async def read_file(file_id: str, ctx: Context) -> bytes:
        async with tools.client(ctx) as fa:
            return await tools.call(fa.file(file_id), resource=True)

    @mcp.resource("faceanchor://characters/{character_id}", name="character", mime_type="application/json",
                  description="A stored character: photos, spaces, ID-photo sheet, number of generations.")
    async def read_character(character_id: str, ctx: Context) -> str:
        async with tools.client(ctx) as fa:
            return json.dumps(_character(await tools.call(fa.get_character(character_id), resource=True)))

    @mcp.resource("faceanchor://characters/{character_id}/sheet", name="character sheet", mime_type="image/png",
                  description="A character's 4-in-1 ID photo (make_id_photo makes it).")
    async def read_sheet(character_id: str, ctx: Context) -> bytes:
        async with tools.client(ctx) as fa:
            ch = await tools.call(fa.get_character(character_id), resource=True)
            if not ch.sheet_file:
                raise ValueError(f"character {character_id} has no ID photo yet (make_id_photo makes one)")
            return await tools.call(fa.character_file(character_id, ch.sheet_file), resource=True)

    @mcp.prompt(description="Keep one person's face across a series of scenes.")
    def character_story(character_name: str, scenes: str) -> str:
        return (f"Use faceanchor to picture {character_name} in each of these scenes, one image per scene: {scenes}. "
                f"If list_characters has no character named {character_name!r}, ask me for a face photo and call "
                "create_character first. Then call generate_image with its character_id for each scene, keeping the "
                "seed of an image I like when I ask for variations, and show me each preview.")

    return mcp


class _Tools:
    """What the tools share: the backend, its clients, errors as tool errors, following a job."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def client(self, ctx: Context) -> AsyncClient:
        try:
            return self.backend.client(_headers(ctx))
        except BackendError as e:
            raise ToolError(str(e)) from None

    def image(self, value: str, name: str) -> str:
        try:
            return self.backend.image(value, name)
        except BackendError as e:
            raise ToolError(str(e)) from None

    async def target(self, fa: AsyncClient, value: str) -> str:
        """An image argument that may also be an earlier result (``faceanchor://files/ID``)."""
        prefix = FILE_URI.split("{", 1)[0]
        if isinstance(value, str) and value.startswith(prefix):
            data = await self.call(fa.file(value[len(prefix):]))
            return base64.b64encode(data).decode()
        return self.image(value, "target_image")

    async def call(self, awaitable: Any, *, resource: bool = False) -> Any:
        """Await a client call; an error answer becomes a tool error with the server's message."""
        try:
            return await awaitable
        except FaceAnchorClientError as e:
            message = e.message if e.status_code is not None else str(e)
            text = f"{message} ({e.type})" if e.type not in ("error", "") else message
            raise (ValueError(text) if resource else ToolError(text)) from None
        except BackendError as e:
            raise ToolError(str(e)) from None

    async def run(self, ctx: Context, fa: AsyncClient, submit: Any, wait: bool) -> CallToolResult:
        """Queue a job, then (``wait``) follow it to the end with progress, cancelling it if the call is cancelled."""
        handle = await self.call(submit)
        job_id = f"{handle.app}:{handle.request_id}"
        if not wait:
            return _result({"job_id": job_id, "status": handle.status, "queue_position": handle.queue_position},
                           f"Queued as job {job_id}; follow it with get_job.")
        try:
            status = await self.follow(ctx, fa, handle.app, handle.request_id)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                try:
                    await fa.cancel(handle.app, handle.request_id)
                except FaceAnchorClientError:
                    pass
            raise
        if status.status != "COMPLETED":
            err = status.error
            raise ToolError(f"job {job_id} {status.status.lower()}" + (f": {err.message} ({err.type})" if err else ""))
        return await self.finished(ctx, fa, job_id, await self.call(fa.result(handle.app, handle.request_id)))

    async def follow(self, ctx: Context, fa: AsyncClient, app: str, request_id: str) -> JobStatus:
        """Poll the job's status until it ends, reporting each new step as MCP progress (0-1)."""
        last = -1.0
        while True:
            status = await self.call(fa.status(app, request_id))
            value, message = _progress(status)
            if value is not None and value > last:
                last = value
                await ctx.report_progress(value, 1.0, message)
            if status.finished:
                return status
            await anyio.sleep(self.backend.poll_interval)

    async def finished(self, ctx: Context, fa: AsyncClient, job_id: str, result: Result) -> CallToolResult:
        """A finished job: a summary, one preview per image and a resource link per full file."""
        content: list[Any] = []
        images = []
        for i, im in enumerate(result.images):
            data = await self.call(fa.file(im.file_id))
            content.append(ImageContent(data=_preview(data), mime_type="image/jpeg"))
            uri = FILE_URI.format(file_id=im.file_id)
            content.append(ResourceLink(uri=uri, name=f"image {i + 1} (seed {im.seed})", mime_type=im.content_type,
                                        size=len(data), description=f"{im.width}x{im.height}, full size"))
            entry = {"file_id": im.file_id, "resource": uri, "width": im.width, "height": im.height, "seed": im.seed,
                     "identity_score": im.identity_score}
            url = self.backend.file_url(im.url, _request_base(ctx))
            if url:
                entry["url"] = url
            if im.identity_reason:
                entry["identity_reason"] = im.identity_reason
            images.append(entry)
        data = {"job_id": job_id, "status": result.status, "images": images, "seeds": result.seeds,
                "warnings": result.warnings, "timings": result.timings}
        text = f"{len(images)} image(s), seeds {result.seeds}; full files: " + ", ".join(e["resource"] for e in images)
        return CallToolResult(content=[TextContent(text=text + "\n" + json.dumps(data)), *content], structured_content=data)


def _headers(ctx: Context) -> Any:
    try:
        return ctx.headers
    except (ValueError, AttributeError):
        return None


def _request_base(ctx: Context) -> str | None:
    """The base URL of the HTTP request carrying this MCP message (None on stdio / in memory)."""
    try:
        request = ctx.request_context.request
    except (ValueError, AttributeError):
        return None
    base = getattr(request, "base_url", None)
    return str(base) if base is not None else None


def _fields(**kw: Any) -> dict[str, Any]:
    return {k: v for k, v in kw.items() if v is not None}


def _split_job(job_id: str) -> tuple[str, str]:
    app, sep, request_id = job_id.rpartition(":")
    if not sep or not app or not request_id:
        raise ToolError(f"job_id {job_id!r} is not one a tool returned (APP:REQUEST_ID)")
    return app, request_id


def _progress(status: JobStatus) -> tuple[float | None, str]:
    """(fraction done 0-1, message) of a status; None before the job reports a step."""
    if status.status == "IN_QUEUE":
        pos = status.queue_position
        return 0.0, "in queue" + (f", position {pos}" if pos is not None else "")
    if status.status == "COMPLETED":
        return 1.0, "done"
    p = status.progress
    if p is None:
        return (0.0, "starting") if status.status == "IN_PROGRESS" else (None, status.status.lower())
    fraction = p.fraction if p.fraction is not None else (p.step / p.total if p.total else 0.0)
    message = f"{p.stage} step {p.step}/{p.total}" + (f" (image {p.sample + 1})" if p.sample else "")
    return min(max(float(fraction), 0.0), 0.999), message


def _preview(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
        im.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode()


def _character(ch: Any) -> dict[str, Any]:
    return {"id": ch.id, "name": ch.name, "photos": len(ch.photos), "spaces": ch.spaces, "generations": ch.generations,
            "id_photo": (f"faceanchor://characters/{ch.id}/sheet" if ch.sheet_file else None),
            "resource": f"faceanchor://characters/{ch.id}"}


def _status(job_id: str, status: JobStatus) -> dict[str, Any]:
    value, message = _progress(status)
    out: dict[str, Any] = {"job_id": job_id, "status": status.status, "progress": value, "message": message}
    if status.queue_position is not None:
        out["queue_position"] = status.queue_position
    if status.error is not None:
        out["error"] = {"type": status.error.type, "message": status.error.message}
    return out


def _style_names() -> list[str]:
    from faceanchor.styles.presets import style_names

    return list(style_names())


def _result(data: dict[str, Any], text: str | None = None) -> CallToolResult:
    body = json.dumps(data)
    return CallToolResult(content=[TextContent(text=f"{text}\n{body}" if text else body)], structured_content=data)
