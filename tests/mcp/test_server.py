"""The MCP server driven by the mcp SDK's own client (in memory) over an embedded faceanchor
(the API app in process, the tiny test engine): tools and schemas, progress notifications from
the queue's step events, cancellation, tenant isolation through the API key, bad input."""

import base64
import io
import time

import anyio
import httpx
import pytest
from client_helpers import face_jpeg, noise_png
from mcp import Client
from PIL import Image

from faceanchor.mcp.backend import IN_PROCESS_URL, Backend
from faceanchor.mcp.server import PREVIEW_SIDE, build_server

TOOLS = {"list_methods", "create_character", "list_characters", "get_character", "delete_character", "generate_image",
         "make_id_photo", "edit_image", "get_job", "cancel_job"}
FACE = base64.b64encode(face_jpeg()).decode()


def run(fn):
    return anyio.run(fn)


def _image(block) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(block.data)))


def _kinds(result):
    return [c.type for c in result.content]


async def _jobs(backend):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=backend.app), base_url=IN_PROCESS_URL) as h:
        return (await h.get("/v1/jobs", headers={"x-api-key": backend.key})).json()["jobs"]


def test_tools_are_listed_with_schemas_and_descriptions(server):
    async def main():
        async with Client(server) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert set(tools) == TOOLS
            for t in tools.values():
                assert t.description and len(t.description) > 30, t.name
                assert t.input_schema["type"] == "object"
            gen = tools["generate_image"].input_schema
            assert gen["required"] == ["prompt"]
            assert gen["properties"]["samples"]["maximum"] == 4 and gen["properties"]["seed"]["minimum"] == -1
            assert "character_id" in gen["properties"] and "face_image" in gen["properties"]
            assert tools["edit_image"].input_schema["properties"]["mode"]["enum"] == ["background", "face"]
            assert set(tools["create_character"].input_schema["required"]) == {"name", "face_image"}
            assert tools["list_characters"].annotations.read_only_hint is True
            assert tools["delete_character"].annotations.destructive_hint is True
            templates = {t.uri_template for t in (await c.list_resource_templates()).resource_templates}
            assert {"faceanchor://files/{file_id}", "faceanchor://characters/{character_id}/sheet"} <= templates
            assert [p.name for p in (await c.list_prompts()).prompts] == ["character_story"]

    run(main)


def test_generate_with_a_character_reports_progress_and_returns_previews_and_files(server, engine):
    engine.step_delay = 0.15  # 12 steps: 1.8 s, several of the queue's progress flushes (every 0.25 s)

    async def main():
        async with Client(server) as c:
            made = await c.call_tool("create_character", {"name": "Barack", "face_image": FACE})
            assert not made.is_error, made.content[0].text
            cid = made.structured_content["id"]
            seen = []

            async def on_progress(progress, total, message):
                seen.append((progress, total, message))

            out = await c.call_tool("generate_image", {"prompt": "a portrait in a garden", "character_id": cid, "seed": 5,
                                                       "samples": 2, "steps": 6, "width": 512, "height": 640},
                                    progress_callback=on_progress)
            assert not out.is_error, out.content[0].text
            values = [p for p, _, _ in seen]
            assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing
            assert values[0] == 0.0 and values[-1] == 1.0 and all(t == 1.0 for _, t, _ in seen)
            steps = [m for _, _, m in seen if m.startswith("denoise step")]
            assert len(steps) >= 2, seen  # the queue's step events, as they were recorded
            assert _kinds(out) == ["text", "image", "resource_link", "image", "resource_link"]
            data = out.structured_content
            assert data["seeds"] == [5, 6] and [im["seed"] for im in data["images"]] == [5, 6]
            assert all(im["identity_score"] is not None for im in data["images"])
            preview = _image(out.content[1])
            assert preview.format == "JPEG" and max(preview.size) <= PREVIEW_SIDE and preview.size == (205, 256)
            link = out.content[2]
            assert link.uri == data["images"][0]["resource"] and link.uri.startswith("faceanchor://files/")
            full = (await c.read_resource(link.uri)).contents[0]
            im = Image.open(io.BytesIO(base64.b64decode(full.blob)))
            assert im.format == "PNG" and im.size == (512, 640)
            # the same colour in the preview and the full file (the tiny engine paints one colour)
            assert abs(sum(preview.convert("RGB").getpixel((10, 10))) - sum(im.convert("RGB").getpixel((10, 10)))) < 12
            got = await c.call_tool("get_character", {"character_id": cid})
            hist = got.structured_content["history"]
            assert got.structured_content["generations"] == 1
            assert [(e["kind"], e["prompt"], e["outputs"]) for e in hist] == [("generate", "a portrait in a garden", 2)]

    run(main)


def test_generate_from_a_face_photo_uses_the_methods_app(server, backend):
    async def main():
        async with Client(server) as c:
            out = await c.call_tool("generate_image", {"prompt": "p", "face_image": base64.b64encode(noise_png()).decode(),
                                                       "seed": 9, "steps": 2})
            assert not out.is_error, out.content[0].text
            assert out.structured_content["job_id"].startswith("instantid:")
            jobs = await _jobs(backend)
            assert [(j["app"], j["status"], j["seed"]) for j in jobs] == [("instantid", "COMPLETED", 9)]

    run(main)


def test_cancelling_the_call_cancels_the_job(server, backend, engine):
    engine.step_delay = 0.05

    async def main():
        async with Client(server) as c:
            cid = (await c.call_tool("create_character", {"name": "B", "face_image": FACE})).structured_content["id"]
            stepped = anyio.Event()

            async def on_progress(progress, total, message):
                if message.startswith("denoise"):
                    stepped.set()

            async with anyio.create_task_group() as tg:
                async def call():
                    await c.call_tool("generate_image", {"prompt": "p", "character_id": cid, "steps": 100},
                                      progress_callback=on_progress)
                    raise AssertionError("the call finished though it was cancelled")

                tg.start_soon(call)
                with anyio.fail_after(20):
                    await stepped.wait()
                tg.cancel_scope.cancel()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10:
                jobs = await _jobs(backend)
                if jobs and jobs[0]["status"] == "CANCELLED":
                    break
                await anyio.sleep(0.05)
            assert [j["status"] for j in jobs] == ["CANCELLED"]
            assert engine.calls == 1 and engine.completed == 0  # stopped between steps, not run to the end

    run(main)


def test_queued_job_get_and_cancel(server, engine):
    engine.step_delay = 0.05

    async def main():
        async with Client(server) as c:
            q = await c.call_tool("generate_image", {"prompt": "p", "face_image": FACE, "steps": 100, "wait": False})
            assert not q.is_error and q.structured_content["status"] == "IN_QUEUE"
            job = q.structured_content["job_id"]
            t0 = time.monotonic()
            while (s := (await c.call_tool("get_job", {"job_id": job})).structured_content)["status"] != "IN_PROGRESS":
                assert time.monotonic() - t0 < 10
                await anyio.sleep(0.05)
            assert 0 <= s["progress"] < 1
            stop = await c.call_tool("cancel_job", {"job_id": job})
            assert stop.structured_content["outcome"] == "CANCELLATION_REQUESTED"
            while (s := (await c.call_tool("get_job", {"job_id": job})).structured_content)["status"] == "IN_PROGRESS":
                assert time.monotonic() - t0 < 15
                await anyio.sleep(0.05)
            assert s["status"] == "CANCELLED"
            done = await c.call_tool("generate_image", {"prompt": "p", "face_image": FACE, "steps": 1, "seed": 2, "wait": False})
            job2 = done.structured_content["job_id"]
            while (r := await c.call_tool("get_job", {"job_id": job2})).structured_content["status"] != "COMPLETED":
                assert time.monotonic() - t0 < 25
                await anyio.sleep(0.05)
            assert _kinds(r) == ["text", "image", "resource_link"] and r.structured_content["seeds"] == [2]

    run(main)


def test_another_key_sees_none_of_the_first_ones_characters_or_jobs(server, backend):
    async def main():
        async with Client(server) as c:
            cid = (await c.call_tool("create_character", {"name": "Mine", "face_image": FACE})).structured_content["id"]
            job = (await c.call_tool("generate_image", {"prompt": "p", "character_id": cid, "steps": 1,
                                                        "wait": False})).structured_content["job_id"]
            other_key, _ = backend.app.state.service.keys.create("someone else")
            other = build_server(Backend(IN_PROCESS_URL, other_key, transport=httpx.ASGITransport(app=backend.app)))
            async with Client(other) as o:
                assert (await o.call_tool("list_characters", {})).structured_content["characters"] == []
                for name, args in [("get_character", {"character_id": cid}), ("generate_image", {"prompt": "p", "character_id": cid}),
                                   ("get_job", {"job_id": job}), ("cancel_job", {"job_id": job}),
                                   ("delete_character", {"character_id": cid})]:
                    r = await o.call_tool(name, args)
                    assert r.is_error, name
                    assert "not_found" in r.content[0].text or "not found" in r.content[0].text.lower(), r.content[0].text
                with pytest.raises(Exception):
                    await o.read_resource(f"faceanchor://characters/{cid}")
            assert [x["id"] for x in (await c.call_tool("list_characters", {})).structured_content["characters"]] == [cid]

    run(main)


def test_bad_input_is_a_tool_error_with_a_readable_message(server, tmp_path):
    grey = io.BytesIO()
    Image.new("RGB", (120, 120), (128, 128, 128)).save(grey, "PNG")
    cases = [
        ("generate_image", {"prompt": "p"}, "give a character_id"),
        ("generate_image", {"prompt": "p", "character_id": "c", "face_image": FACE}, "not both"),
        ("generate_image", {"prompt": "p", "face_image": FACE, "steps": 0}, "steps"),
        ("generate_image", {"prompt": "p", "face_image": FACE, "method": "nope"}, "unknown method 'nope'"),
        ("generate_image", {"prompt": "p", "face_image": str(tmp_path / "missing.jpg")}, "is not a file"),
        ("generate_image", {"prompt": "p", "character_id": "no-such-character"}, "not_found"),
        ("create_character", {"name": "Grey", "face_image": base64.b64encode(grey.getvalue()).decode()}, "no face"),
        ("create_character", {"name": "Junk", "face_image": "data:image/png;base64,bm90IGFuIGltYWdl"}, "image"),
        ("edit_image", {"prompt": "p", "target_image": FACE}, "give a character_id"),
        ("get_job", {"job_id": "nonsense"}, "APP:REQUEST_ID"),
        ("get_job", {"job_id": "instantid:0123"}, "not_found"),
    ]

    async def main():
        async with Client(server) as c:
            for name, args, needle in cases:
                r = await c.call_tool(name, args)
                text = r.content[0].text
                assert r.is_error, (name, args, text)
                assert needle.lower() in text.lower(), (name, needle, text)
                assert "Traceback" not in text and len(text) < 600, text
            assert not (await c.call_tool("list_characters", {})).is_error  # still serving

    run(main)


def test_local_paths_are_read_on_stdio_and_refused_over_the_network(backend, tmp_path):
    photo = tmp_path / "face.jpg"
    photo.write_bytes(face_jpeg())
    local = backend
    remote = Backend(IN_PROCESS_URL, None, transport=httpx.ASGITransport(app=local.app), allow_paths=False)

    async def main():
        async with Client(build_server(local)) as c:
            ok = await c.call_tool("create_character", {"name": "From a path", "face_image": str(photo)})
            assert not ok.is_error, ok.content[0].text
            remote.key = local.key
            async with Client(build_server(remote)) as r:
                refused = await r.call_tool("create_character", {"name": "x", "face_image": str(photo)})
                assert refused.is_error and "does not read file paths" in refused.content[0].text
                ok2 = await r.call_tool("create_character", {"name": "b64", "face_image": FACE})
                assert not ok2.is_error

    run(main)
