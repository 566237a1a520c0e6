"""The MCP server over its real transports, driven by the SDK's own client: an agent-like script
(create a character, its ID photo, two scenes, an edit; the images and the stored history
checked) over stdio (``faceanchor mcp`` as a subprocess) and over streamable HTTP (``/mcp``
mounted in the API app on loopback), with the real engine on tiny weights; and, with the tiny test
engine, ``/mcp``'s keys, tenant isolation and cancellation over HTTP."""

import base64
import io
import os
import socket
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from client_helpers import face_jpeg
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(width=64, height=64, steps=1)


class Served:
    """An ASGI app served by uvicorn on a free loopback port (a thread)."""

    def __init__(self, app):
        import uvicorn

        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()


class AppServer(Served):
    """``create_app`` + ``mount``, served."""

    def __init__(self, settings, engine, analyzer=None):
        from faceanchor.api.app import create_app
        from faceanchor.mcp.mount import mount

        app = create_app(settings, engine, load_in_background=False, serve_web=False)
        if analyzer is not None:  # test scaffolding: the prepared analyzer in the character service's cache
            app.state.characters._analyzers["dlib"] = analyzer
        mount(app)
        self.keys = app.state.service.keys
        super().__init__(app)


def http_client(url, key):
    headers = {"x-api-key": key} if key else {}
    return Client(streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers=headers, timeout=300)))


def _png(blob_b64):
    return Image.open(io.BytesIO(base64.b64decode(blob_b64)))


async def agent_script(c, face):
    """What an agent does with a character; returns the tool results it saw."""
    made = await c.call_tool("create_character", {"name": "Barack", "face_image": face})
    assert not made.is_error, made.content[0].text
    cid = made.structured_content["id"]
    sheet = await c.call_tool("make_id_photo", {"character_id": cid, "seed": 3, **TINY})
    assert not sheet.is_error, sheet.content[0].text
    assert len(sheet.structured_content["images"]) == 5  # the sheet, then front, left, right, smiling
    assert [b.type for b in sheet.content].count("image") == 5
    got = await c.call_tool("get_character", {"character_id": cid})
    assert got.structured_content["id_photo"] == f"faceanchor://characters/{cid}/sheet"
    sheet_blob = (await c.read_resource(got.structured_content["id_photo"])).contents[0].blob
    first = (await c.read_resource(sheet.structured_content["images"][0]["resource"])).contents[0].blob
    a, b = _png(sheet_blob), _png(first)
    assert a.format == "PNG" and a.size == b.size, (a.size, b.size)
    assert a.convert("RGB").tobytes() == b.convert("RGB").tobytes()  # the kept sheet is the call's first image
    scenes = []
    for i, prompt in enumerate(["reading in a library", "walking on a beach at sunset"]):
        progress = []

        async def on_progress(p, total, message):
            progress.append(p)

        out = await c.call_tool("generate_image", {"character_id": cid, "prompt": prompt, "seed": 10 + i, **dict(TINY, steps=2)},
                                progress_callback=on_progress)
        assert not out.is_error, out.content[0].text
        assert progress and progress[-1] == 1.0 and progress == sorted(progress)
        assert out.structured_content["seeds"] == [10 + i]
        full = _png((await c.read_resource(out.structured_content["images"][0]["resource"])).contents[0].blob)
        assert full.size == (64, 64)
        scenes.append(out)
    assert scenes[0].structured_content["images"][0]["file_id"] != scenes[1].structured_content["images"][0]["file_id"]
    edited = await c.call_tool("edit_image", {"character_id": cid, "prompt": "on a beach", "mode": "background", "seed": 4,
                                              "target_image": base64.b64encode(face_jpeg(width=160)).decode(), "steps": 1})
    assert not edited.is_error, edited.content[0].text
    assert [b.type for b in edited.content] == ["text", "image", "resource_link"]
    final = await c.call_tool("get_character", {"character_id": cid})
    history = final.structured_content["history"]
    assert [e["kind"] for e in history] == ["edit", "generate", "generate", "id-photo"]
    assert [e["prompt"] for e in history[1:3]] == ["walking on a beach at sunset", "reading in a library"]
    assert final.structured_content["generations"] == 4
    listed = (await c.call_tool("list_characters", {})).structured_content["characters"]
    assert [(x["id"], x["has_id_photo"]) for x in listed] == [(cid, True)]
    return cid


def readme_mcp_config():
    """The MCP host config the README shows (its ```json block with "mcpServers")."""
    import json
    import re

    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    configs = [json.loads(b) for b in blocks if "mcpServers" in b]
    assert len(configs) == 1
    return configs[0]["mcpServers"]["faceanchor"]


@pytest.mark.slow
def test_agent_script_over_stdio(tmp_path):
    """The server as the README's Claude Desktop config starts it (``faceanchor`` run as ``python -m faceanchor``)."""
    from faceanchor.config import Settings
    from faceanchor.store.db import Database
    from faceanchor.store.keys import KeyStore

    photo = tmp_path / "me.jpg"
    photo.write_bytes(face_jpeg())
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEANCHOR_")}
    env.update(PYTHONPATH=str(ROOT / "src"), FACEANCHOR_HOME=str(tmp_path / "home"), FACEANCHOR_FACE_PACK="dlib",
               FACEANCHOR_DEVICE="cpu", OMP_NUM_THREADS="1")
    config = readme_mcp_config()
    assert config["command"] == "faceanchor"
    params = StdioServerParameters(command=sys.executable, args=["-m", "faceanchor", *config["args"]], env=env, cwd=str(tmp_path))

    async def main():
        async with Client(params, mode="legacy") as c:
            return await agent_script(c, str(photo))  # a local path: read by the stdio server

    anyio.run(main)
    keys = KeyStore(Database.from_settings(Settings(home=tmp_path / "home"))).list()
    assert keys and all(k.tenant == "mcp-local" and k.revoked for k in keys)  # the run's key ended with it


@pytest.mark.slow
def test_agent_script_over_http(tmp_path, dlib_analyzer):
    import torch

    from faceanchor.config import Settings
    from faceanchor.engine import Engine

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    settings = Settings(home=tmp_path / "home", device="cpu", rate_limit_per_minute=0, job_lease_seconds=30, face_pack="dlib")
    try:
        with AppServer(settings, Engine(settings, weights="tiny", face_pack="dlib"), dlib_analyzer) as srv:
            key, _ = srv.keys.create("agent")

            async def main():
                async with http_client(srv.url, key) as c:
                    return await agent_script(c, base64.b64encode(face_jpeg()).decode())

            anyio.run(main)
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def tiny_app(settings, engine, dlib_analyzer):
    with AppServer(settings, engine, dlib_analyzer) as srv:
        yield srv


def test_mcp_over_http_needs_a_key(tiny_app):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    hdrs = {"accept": "application/json, text/event-stream"}
    _, revoked = tiny_app.keys.create("old")
    revoked_key, info = tiny_app.keys.create("revoked")
    tiny_app.keys.revoke(info.id)
    for extra, status, needle in [({}, 401, "an API key is required"), ({"x-api-key": "fa_000000000000_nope-nope-nope-nope-nope"}, 401, "not valid"),
                                  ({"authorization": f"Bearer {revoked_key}"}, 403, "revoked")]:
        r = httpx.post(f"{tiny_app.url}/mcp", json=init, headers={**hdrs, **extra})
        assert r.status_code == status and needle in r.json()["error"]["message"], r.text
    key, _ = tiny_app.keys.create("ok")
    r = httpx.post(f"{tiny_app.url}/mcp", json=init, headers={**hdrs, "x-api-key": key})
    assert r.status_code == 200 and "faceanchor" in r.text


def test_keys_over_http_keep_tenants_apart_and_links_are_fetchable(tiny_app, tmp_path):
    alice, _ = tiny_app.keys.create("alice")
    bob, _ = tiny_app.keys.create("bob")
    photo = tmp_path / "face.jpg"
    photo.write_bytes(face_jpeg())

    async def main():
        async with http_client(tiny_app.url, alice) as a:
            refused = await a.call_tool("create_character", {"name": "Path", "face_image": str(photo)})
            assert refused.is_error and "does not read file paths" in refused.content[0].text
            cid = (await a.call_tool("create_character", {"name": "Alice's",
                                                          "face_image": base64.b64encode(face_jpeg()).decode()})).structured_content["id"]
            out = await a.call_tool("generate_image", {"character_id": cid, "prompt": "p", "seed": 1, "steps": 1})
            image = out.structured_content["images"][0]
        assert image["url"].startswith(tiny_app.url + "/")  # an http link to the full file, for the key's owner
        assert httpx.get(image["url"], headers={"x-api-key": alice}).content.startswith(b"\x89PNG")
        assert httpx.get(image["url"], headers={"x-api-key": bob}).status_code == 404
        async with http_client(tiny_app.url, bob) as b:
            assert (await b.call_tool("list_characters", {})).structured_content["characters"] == []
            r = await b.call_tool("generate_image", {"character_id": cid, "prompt": "p"})
            assert r.is_error and "not_found" in r.content[0].text
            with pytest.raises(Exception):
                await b.read_resource(image["resource"])

    anyio.run(main)


def test_cancelling_over_http_cancels_the_job(tiny_app, engine):
    engine.step_delay = 0.05
    key, _ = tiny_app.keys.create("c")

    async def main():
        async with http_client(tiny_app.url, key) as c:
            stepped = anyio.Event()

            async def on_progress(p, total, message):
                if message.startswith("denoise"):
                    stepped.set()

            async with anyio.create_task_group() as tg:
                async def call():
                    await c.call_tool("generate_image", {"prompt": "p", "face_image": base64.b64encode(face_jpeg()).decode(),
                                                         "steps": 100}, progress_callback=on_progress)

                tg.start_soon(call)
                with anyio.fail_after(20):
                    await stepped.wait()
                tg.cancel_scope.cancel()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 10:
                jobs = httpx.get(f"{tiny_app.url}/v1/jobs", headers={"x-api-key": key}).json()["jobs"]
                if jobs and jobs[0]["status"] == "CANCELLED":
                    break
                await anyio.sleep(0.05)
            assert [j["status"] for j in jobs] == ["CANCELLED"] and engine.completed == 0

    anyio.run(main)


def test_against_a_running_server_by_url_and_key(tiny_app, engine):
    """What ``faceanchor mcp --server URL --key KEY`` builds: the tools over the HTTP API on the network."""
    from faceanchor.mcp.backend import Backend

    engine.step_delay = 0.15  # 10 steps: 1.5 s, several of the queue's progress flushes
    from faceanchor.mcp.server import build_server

    key, _ = tiny_app.keys.create("remote")
    server = build_server(Backend(tiny_app.url, key, public_url=tiny_app.url))

    async def main():
        async with Client(server) as c:
            seen = []

            async def on_progress(p, total, message):
                seen.append(message)

            out = await c.call_tool("generate_image", {"prompt": "p", "face_image": base64.b64encode(face_jpeg()).decode(),
                                                       "seed": 4, "steps": 10}, progress_callback=on_progress)
            assert not out.is_error, out.content[0].text
            image = out.structured_content["images"][0]
            assert image["url"] == f"{tiny_app.url}/files/{image['file_id']}"
            assert httpx.get(image["url"], headers={"x-api-key": key}).content.startswith(b"\x89PNG")
            assert seen[-1] == "done" and any(m.startswith("denoise step") for m in seen), seen
        async with Client(build_server(Backend(tiny_app.url, "fa_000000000000_wrong-wrong-wrong-wrong"))) as bad:
            r = await bad.call_tool("list_characters", {})
            assert r.is_error and "not valid" in r.content[0].text

    anyio.run(main)


def test_http_proxy_in_front_of_a_server_passes_each_requests_key_on(tiny_app):
    """``faceanchor mcp --http --server URL``: MCP over HTTP here, the API calls there with the caller's key."""
    from faceanchor.mcp.mount import proxy_app

    alice, _ = tiny_app.keys.create("alice")
    bob, _ = tiny_app.keys.create("bob")

    async def main(url):
        async with http_client(url, alice) as a:
            cid = (await a.call_tool("create_character", {"name": "A", "face_image": base64.b64encode(face_jpeg()).decode()})
                   ).structured_content["id"]
            out = await a.call_tool("generate_image", {"character_id": cid, "prompt": "p", "seed": 2, "steps": 2})
            assert not out.is_error and out.structured_content["images"][0]["url"].startswith(tiny_app.url + "/files/")
        async with http_client(url, bob) as b:
            assert (await b.call_tool("list_characters", {})).structured_content["characters"] == []
        async with http_client(url, None) as anonymous:
            r = await anonymous.call_tool("list_characters", {})
            assert r.is_error and "an API key is required" in r.content[0].text

    with Served(proxy_app(tiny_app.url)) as proxy:
        anyio.run(main, proxy.url)


def test_cancelling_over_stdio_cancels_the_job(tmp_path):
    """An MCP host cancelling a call over stdio (notifications/cancelled) stops the job between steps."""
    import sqlite3

    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEANCHOR_")}
    env.update(PYTHONPATH=str(ROOT / "src"), FACEANCHOR_HOME=str(tmp_path / "home"), FACEANCHOR_FACE_PACK="dlib",
               TINY_STEP_DELAY="0.05", TINY_RUN_LOG=str(tmp_path / "runs.log"))
    engine = ROOT / "tests" / "service" / "tiny_engine.py"
    params = StdioServerParameters(command=sys.executable, args=["-m", "faceanchor", "mcp", "--engine", f"{engine}:factory"],
                                   env=env, cwd=str(tmp_path))

    async def main():
        async with Client(params, mode="legacy") as c:
            stepped = anyio.Event()

            async def on_progress(p, total, message):
                if message.startswith("denoise"):
                    stepped.set()

            async with anyio.create_task_group() as tg:
                async def call():
                    await c.call_tool("generate_image", {"prompt": "p", "face_image": base64.b64encode(face_jpeg()).decode(),
                                                         "steps": 100}, progress_callback=on_progress)

                tg.start_soon(call)
                with anyio.fail_after(60):
                    await stepped.wait()
                tg.cancel_scope.cancel()
            db = sqlite3.connect(tmp_path / "home" / "data" / "faceanchor.db")
            t0 = time.monotonic()
            while (rows := db.execute("select status from jobs").fetchall()) != [("CANCELLED",)]:
                assert time.monotonic() - t0 < 15, rows
                await anyio.sleep(0.1)
            done = await c.call_tool("generate_image", {"prompt": "p", "face_image": base64.b64encode(face_jpeg()).decode(),
                                                        "steps": 2, "seed": 5})
            assert not done.is_error and done.structured_content["seeds"] == [5]

    anyio.run(main)
    assert (tmp_path / "runs.log").read_text().split()[1::2] == ["5"]  # only the second job ran to its end
