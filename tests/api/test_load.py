"""Load: 200 concurrent submissions over loopback HTTP; none dropped, none duplicated."""

import asyncio
import threading
import time

import httpx
import uvicorn
from api_helpers import b64, png_bytes, tiny

from faceanchor.api.app import create_app
from faceanchor.config import Settings


class ServerThread:
    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 15
        while not self.server.started:
            assert time.time() < deadline
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)


def test_200_concurrent_submissions(tmp_path):
    settings = Settings(home=tmp_path, rate_limit_per_minute=0)
    app = create_app(settings, tiny.TinyEngine())
    service = app.state.service
    key, _ = service.keys.create("load")
    face = b64(png_bytes((24, 24)))

    async def run(url):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=60, limits=limits) as client:
            async def one(i):
                return await client.post("/queue/instantid", json={"face_image": face, "seed": i, "num_inference_steps": 1})

            return await asyncio.gather(*(one(i) for i in range(200)))

    with ServerThread(app) as srv:
        responses = asyncio.run(run(srv.url))
        assert [r.status_code for r in responses] == [200] * 200
        ids = [r.json()["request_id"] for r in responses]
        assert len(set(ids)) == 200
        deadline = time.time() + 60
        while service.jobs.counts()["COMPLETED"] < 200:
            assert time.time() < deadline, service.jobs.counts()
            time.sleep(0.1)
    counts = service.jobs.counts()
    assert counts["COMPLETED"] == 200 and sum(counts.values()) == 200
    seeds = sorted(service.jobs.get(i).result["seed"] for i in ids)
    assert seeds == list(range(200))  # every submission ran exactly once, with its own request
