"""Service overhead benchmark (tiny engine, loopback only).

Measures
  * direct: one ``engine.generate`` call (the tiny engine: decode the face, make one image);
  * service: the same job through the durable queue in-process (submit → worker → stored result);
  * http sync: ``POST /v1/instantid`` over loopback HTTP (uvicorn), image bytes back;
  * http queue: ``POST /queue/instantid`` + polling status + ``GET`` result over loopback;
  * submit latency p50/p99 with 200 concurrent ``POST /queue/instantid`` (httpx async).
Prints the figures and the per-job overhead over the direct call, absolute and as a ratio.

Intake (issue 11's targets), against ``faceanchor serve`` in its own process (tiny engine), after
one warm-up burst (printed; only its RSS growth counts), in ``--rounds`` interleaved rounds of:
``/health`` alone (the baseline), then a burst of ``--concurrent`` submits of a ``--side``-pixel
PNG while ``/health`` is probed:
  * submit p50 ≤ 50 ms, p99 ≤ 300 ms, ≥ 300 submits/s, 0 lost (every submit accepted, distinct
    ids, every job in the database);
  * ``/health`` p99 during the burst ≤ 50 ms (and its ratio to the idle baseline);
  * peak RSS growth of the server per in-flight submit ≤ 2× the body size.
Each target prints as met or NOT MET. The burst's client is a lean one (pre-encoded bodies, one
raw HTTP/1.1 request per connection on asyncio streams): httpx spent more CPU per submit than
the server, on the same 2 cores. The server's worker is parked on its first job (the tiny
engine's ``TINY_STEP_DELAY``), so the figures are the intake's alone; ``--with-jobs`` lets the
worker run the submitted jobs during the burst. The server's and the client's CPU per submit
are printed (process CPU time: robust to other load on the machine, unlike wall time).

Little's law: with ``--concurrent`` 200 submits in flight at once, p50 <= 50 ms needs the server
to complete about 100 / 0.050 = 2000 submits/s (the median one waits for 100 ahead of it), i.e.
at most 1 ms of CPU per submit on 2 cores, client included.

Run: ``python benchmarks/service.py [--jobs 30] [--concurrent 200] [--rounds 3] [--intake-only] [--with-jobs]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib.util
import io
import json
import os
import socket
import statistics
import subprocess
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


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for pid {pid}")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads together): unlike wall time, what
    other processes on the machine do barely moves it."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def raw_post(host: str, port: int, request: bytes) -> tuple[int, bytes]:
    """Send one pre-built HTTP/1.1 request (``Connection: close``) on a new connection; return
    the status and the body. Far less client CPU than httpx, so the server is what is measured."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.strip().lower() == "content-length"), None)
        body = await (reader.readexactly(length) if length is not None else reader.read())
        return status, body
    finally:
        writer.close()


def http_request(path: str, port: int, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def intake(concurrent: int, rounds: int, side: int, with_jobs: bool = False) -> bool:
    """The intake figures against a `faceanchor serve` subprocess; True when every target is met."""
    from faceanchor.config import Settings
    from faceanchor.store.db import Database
    from faceanchor.store.jobs import JobStore
    from faceanchor.store.keys import KeyStore

    buf = io.BytesIO()
    Image.effect_noise((side, side), 60).convert("RGB").save(buf, "PNG")
    png = buf.getvalue()
    b64 = base64.b64encode(png).decode()
    home = tempfile.mkdtemp(prefix="faceanchor-bench-")
    db = Database.from_settings(Settings(home=home))
    key, _ = KeyStore(db).create("bench")
    headers = {"x-api-key": key}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, FACEANCHOR_HOME=home, FACEANCHOR_RATE_LIMIT_PER_MINUTE="0", FACEANCHOR_MAX_QUEUE_SIZE="1000000",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if not with_jobs:  # the worker takes the first job and sleeps in it: the burst's jobs stay queued
        env["TINY_STEP_DELAY"] = "3600"
    proc = subprocess.Popen([sys.executable, "-m", "faceanchor", "serve", "--port", str(port), "--engine",
                             f"{ROOT / 'tests' / 'service' / 'tiny_engine.py'}:factory", "--log-level", "warning"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    body = {"face_image": b64, "num_inference_steps": 1}
    body_bytes = len(json_dumps(body))
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, "faceanchor serve exited"
            try:
                if httpx.get(url + "/health", timeout=2).json()["status"] in ("ready", "busy"):
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "faceanchor serve never became ready"
            time.sleep(0.1)
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:  # warm every path once
            for i in range(5):
                assert c.post("/queue/instantid", json={**body, "seed": i}).status_code == 200

        async def health_probe(client, stop: asyncio.Event, out: list[float]) -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = await client.get("/health")
                assert r.status_code == 200
                out.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

        async def one_round(r: int):
            async with httpx.AsyncClient(base_url=url, timeout=30) as hclient:
                idle: list[float] = []
                for _ in range(40):  # the baseline: /health with nothing else going on
                    t0 = time.perf_counter()
                    await hclient.get("/health")
                    idle.append(time.perf_counter() - t0)
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.5)
                rss0 = _rss_kb(proc.pid)
                peak = [rss0]
                sampling = threading.Event()

                def sample() -> None:
                    while not sampling.is_set():
                        peak[0] = max(peak[0], _rss_kb(proc.pid))
                        time.sleep(0.002)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                stop = asyncio.Event()
                busy: list[float] = []
                prober = asyncio.create_task(health_probe(hclient, stop, busy))

                requests = [http_request("/queue/instantid", port, headers, json_dumps({**body, "seed": r * 100_000 + i}))
                            for i in range(concurrent)]  # encoded before the clock starts

                async def submit(req: bytes):
                    t0 = time.perf_counter()
                    status, answer = await raw_post("127.0.0.1", port, req)
                    rid = json.loads(answer).get("request_id") if status == 200 else None
                    return status, rid, time.perf_counter() - t0

                t0, cpu0, own0 = time.perf_counter(), _cpu_seconds(proc.pid), time.process_time()
                out = await asyncio.gather(*(submit(req) for req in requests))
                wall = time.perf_counter() - t0
                cpu.append((_cpu_seconds(proc.pid) - cpu0) / concurrent)
                client_cpu.append((time.process_time() - own0) / concurrent)
                del requests
                stop.set()
                await prober
                sampling.set()
                sampler.join()
                return idle, busy, out, wall, (peak[0] - rss0) * 1024

        idle_all, busy_all, lat_all, rates, growths, ids, lost, cpu, client_cpu = [], [], [], [], [], [], 0, [], []
        # One burst first, not counted for time (printed): the server's first burst pays for growing
        # its heap, starting its threads and filling SQLAlchemy's statement cache.
        _, wbusy, wout, wwall, wgrowth = asyncio.run(one_round(rounds))
        print(f"  warm-up burst (not counted): {concurrent} submits in {wwall:.2f} s ({concurrent / wwall:.0f}/s), p50"
              f" {pct([o[2] for o in wout], 50) * 1e3:.0f} ms, /health p99 {pct(wbusy, 99) * 1e3:.0f} ms, RSS +{wgrowth / 2**20:.1f} MiB,"
              f" server CPU {cpu.pop() * 1e3:.2f} ms/submit")
        client_cpu.pop()
        lost += sum(o[0] != 200 for o in wout)
        growths.append(wgrowth)  # the first burst grows the heap: its peak counts for the RSS target
        for r in range(rounds):
            idle, busy, out, wall, growth = asyncio.run(one_round(r))
            idle_all += idle
            busy_all += busy
            lat_all += [o[2] for o in out]
            lost += sum(o[0] != 200 for o in out)
            ids += [o[1] for o in out if o[0] == 200]
            rates.append(concurrent / wall)
            growths.append(growth)
            print(f"  round {r + 1}: {concurrent} submits in {wall:.2f} s ({concurrent / wall:.0f}/s), p50 {pct([o[2] for o in out], 50) * 1e3:.0f} ms,"
                  f" p99 {pct([o[2] for o in out], 99) * 1e3:.0f} ms, /health p99 {pct(busy, 99) * 1e3:.0f} ms (idle {pct(idle, 99) * 1e3:.1f} ms),"
                  f" RSS +{growth / 2**20:.1f} MiB, server CPU {cpu[-1] * 1e3:.2f} ms/submit (client {client_cpu[-1] * 1e3:.2f})")
        stored = {j for j in ids if JobStore(db).get(j) is not None}
        lost += len(ids) - len(set(ids)) + len(set(ids)) - len(stored)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    p50, p99 = pct(lat_all, 50), pct(lat_all, 99)
    rate = statistics.median(rates)
    h99, i99 = pct(busy_all, 99), pct(idle_all, 99)
    per_inflight = max(growths) / concurrent
    print(f"intake: {rounds} rounds x {concurrent} concurrent submits of a {len(png) / 1024:.0f} KiB PNG "
          f"(JSON body {body_bytes / 1024:.0f} KiB), faceanchor serve in its own process, {os.cpu_count()} CPUs, "
          f"{'the worker running the jobs' if with_jobs else 'the worker parked (intake alone)'}")
    checks = [
        ("submit p50", f"{p50 * 1e3:.1f} ms", "<= 50 ms", p50 <= 0.050),
        ("submit p99", f"{p99 * 1e3:.1f} ms", "<= 300 ms", p99 <= 0.300),
        ("submits/s (median round)", f"{rate:.0f}", ">= 300", rate >= 300),
        ("lost submits", f"{lost}", "0", lost == 0),
        ("/health p99 in the burst", f"{h99 * 1e3:.1f} ms ({h99 / i99:.1f}x idle {i99 * 1e3:.1f} ms)", "<= 50 ms", h99 <= 0.050),
        ("peak RSS growth / in-flight submit", f"{per_inflight / 1024:.0f} KiB ({per_inflight / body_bytes:.2f}x body)",
         "<= 2x body", per_inflight <= 2 * body_bytes),
    ]
    print(f"  server CPU per submit (median round): {statistics.median(cpu) * 1e3:.2f} ms"
          f"{' (the worker' + chr(39) + 's concurrent jobs included)' if with_jobs else ''}; client {statistics.median(client_cpu) * 1e3:.2f} ms;"
          f" 300 submits/s on {os.cpu_count()} cores allows at most {os.cpu_count() / 300 * 1e3:.1f} ms for both together")
    print(f"  Little's law: {concurrent} in flight at once and p50 <= 50 ms need ~{concurrent / 2 / 0.050:.0f} completions/s"
          f" (<= {os.cpu_count() / (concurrent / 2 / 0.050) * 1e3:.2f} ms CPU per submit, client included); measured"
          f" {rate:.0f}/s")
    for name, value, target, ok in checks:
        print(f"  {name:36} {value:34} target {target:10} {'met' if ok else 'NOT MET'}")
    return all(c[3] for c in checks)


def json_dumps(value) -> bytes:  # noqa: ANN001
    import json

    return json.dumps(value).encode()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--concurrent", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved intake rounds (idle /health, then a burst)")
    ap.add_argument("--side", type=int, default=256, help="side in pixels of the intake's (noise, so large) PNG")
    ap.add_argument("--intake-only", action="store_true")
    ap.add_argument("--with-jobs", action="store_true", help="intake: let the worker run the submitted jobs during the burst")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(ROOT / "src"))
    if args.intake_only:
        intake(args.concurrent, args.rounds, args.side, args.with_jobs)
        return
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
    intake(args.concurrent, args.rounds, args.side, args.with_jobs)


if __name__ == "__main__":
    main()
