"""Service overhead benchmark (tiny engine, loopback only).

Measures
  * direct: one ``engine.generate`` call (the tiny engine: decode the face, make one image);
  * service: the same job through the durable queue in-process (submit → worker → stored result);
  * http sync: ``POST /v1/instantid`` over loopback HTTP (uvicorn), image bytes back;
  * http queue: ``POST /queue/instantid`` + polling status + ``GET`` result over loopback;
  * submit latency p50/p99 with 200 concurrent ``POST /queue/instantid`` (httpx async).
Prints the figures and the per-job overhead over the direct call, absolute and as a ratio.

Run: ``python benchmarks/service.py [--jobs 30] [--concurrent 200]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def load_tiny():
    spec = importlib.util.spec_from_file_location("tiny_engine", ROOT / "tests" / "service" / "tiny_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def face_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


class ServerThread:
    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(15)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--concurrent", type=int, default=200)
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    from faceanchor.api.app import create_app
    from faceanchor.config import Settings
    from faceanchor.service.runtime import Service
    from faceanchor.types import GenerationRequest

    tiny = load_tiny()
    face = face_png()
    b64 = base64.b64encode(face).decode()

    # direct engine calls
    engine = tiny.TinyEngine()
    direct = []
    for i in range(args.jobs + 3):
        req = GenerationRequest(face_image=face, num_inference_steps=1, seed=i)
        t0 = time.perf_counter()
        engine.generate(req, lambda ev: None, lambda: False)
        direct.append(time.perf_counter() - t0)
    direct = direct[3:]

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=home, rate_limit_per_minute=0, max_queue_size=100_000)
        # in-process service
        svc = Service(settings, engine=tiny.TinyEngine(), poll_interval=0.01)
        svc.start(background=False)
        service_times = []
        for i in range(args.jobs):
            t0 = time.perf_counter()
            job, _ = svc.submit("instantid", {"face_image": face, "num_inference_steps": 1, "seed": i})
            while not svc.jobs.get(job.id).status.finished:
                time.sleep(0.002)
            service_times.append(time.perf_counter() - t0)
        svc.stop()

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=home, rate_limit_per_minute=0, max_queue_size=100_000)
        app = create_app(settings, tiny.TinyEngine())
        key, _ = app.state.service.keys.create("bench")
        headers = {"x-api-key": key}
        with ServerThread(app) as srv:
            while httpx.get(srv.url + "/health").json()["status"] != "ready":
                time.sleep(0.02)
            sync_times, queue_times = [], []
            with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as client:
                for i in range(args.jobs):
                    t0 = time.perf_counter()
                    r = client.post("/v1/instantid", json={"face_image": b64, "num_inference_steps": 1, "seed": i})
                    assert r.status_code == 200, r.text
                    sync_times.append(time.perf_counter() - t0)
                for i in range(args.jobs):
                    t0 = time.perf_counter()
                    job = client.post("/queue/instantid", json={"face_image": b64, "num_inference_steps": 1, "seed": i}).json()
                    while client.get(job["status_url"]).json()["status"] != "COMPLETED":
                        time.sleep(0.005)
                    assert client.get(job["response_url"]).status_code == 200
                    queue_times.append(time.perf_counter() - t0)

            async def burst():
                limits = httpx.Limits(max_connections=args.concurrent, max_keepalive_connections=args.concurrent)
                async with httpx.AsyncClient(base_url=srv.url, headers=headers, timeout=120, limits=limits) as client:
                    async def one(i):
                        t0 = time.perf_counter()
                        r = await client.post("/queue/instantid", json={"face_image": b64, "num_inference_steps": 1, "seed": 10_000 + i})
                        return r.status_code, r.json().get("request_id"), time.perf_counter() - t0

                    t0 = time.perf_counter()
                    out = await asyncio.gather(*(one(i) for i in range(args.concurrent)))
                    return out, time.perf_counter() - t0

            results, wall = asyncio.run(burst())
            lat = [r[2] for r in results]
            ok = sum(r[0] == 200 for r in results)
            unique = len({r[1] for r in results if r[1]})

    d = statistics.median(direct)
    print(f"tiny engine, {args.jobs} sequential jobs each (medians)")
    print(f"  direct engine call      {d * 1e3:8.2f} ms")
    for name, values in (("service (in-process)", service_times), ("HTTP sync /v1", sync_times), ("HTTP queue+poll+result", queue_times)):
        m = statistics.median(values)
        print(f"  {name:23} {m * 1e3:8.2f} ms   overhead {(m - d) * 1e3:8.2f} ms   ratio {m / d:6.1f}x")
    print(f"{args.concurrent} concurrent submissions over loopback: {ok} accepted, {unique} distinct ids, wall {wall:.2f} s "
          f"({args.concurrent / wall:.0f} submissions/s)")
    print(f"  submit latency p50 {pct(lat, 50) * 1e3:.1f} ms   p99 {pct(lat, 99) * 1e3:.1f} ms   p99/p50 {pct(lat, 99) / pct(lat, 50):.1f}x")


if __name__ == "__main__":
    main()
