"""Chaos: the serving process killed -9 mid-denoise again and again, and (PostgreSQL) the database
restarted under running jobs. Every job still ends COMPLETED exactly once and none stays stuck
past its lease.

* ``test_kill_9_five_times_every_job_completes_once`` (SQLite and PostgreSQL): 20 jobs queued
  over HTTP, 5 ``kill -9`` of ``faceanchor serve`` (tiny engine, made slow) while a job is
  mid-denoise, a fresh ``faceanchor serve`` after each. To keep the test short each replacement
  process is spawned ahead with its imports done and waits on stdin for the go; it then runs
  ``faceanchor serve`` from scratch (new process, new app, new worker, nothing carried over).
* ``test_postgres_restart_mid_job_jobs_complete_once``: a two-worker service on PostgreSQL while
  the PostgreSQL cluster is restarted (every connection dropped) three times mid-job.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from PIL import Image
from sqlalchemy import select
from tiny_engine import TinyEngine

from faceanchor.config import Settings
from faceanchor.service.runtime import Service
from faceanchor.store.db import Database
from faceanchor.store.jobs import Job, JobLog, JobStore
from faceanchor.store.keys import KeyStore
from faceanchor.types import JobStatus

TINY = Path(__file__).resolve().parent / "tiny_engine.py"
LEASE = 1.0
STEPS, STEP_DELAY = 12, 0.04
N_JOBS, N_KILLS = 20, 5

# A process that does the slow imports first, then waits for one line on stdin and runs
# `faceanchor serve ARGS` exactly as `python -m faceanchor serve ARGS` would.
_SPARE = """
import importlib, pkgutil, sys
import uvicorn, fastapi, sqlalchemy.dialects.postgresql.psycopg, sqlalchemy.dialects.sqlite
import faceanchor.api, faceanchor.cli.app as cli, faceanchor.methods.registry, faceanchor.service.runtime
for m in pkgutil.iter_modules(faceanchor.api.__path__):
    importlib.import_module("faceanchor.api." + m.name)
cli.build_command()  # imports every command module; main() builds its own again
sys.stdin.readline()
cli.main(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _face_b64() -> str:
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


class Spare:
    """A warmed-up process that becomes `faceanchor serve` on :meth:`go`."""

    def __init__(self, env: dict[str, str], run_log: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--port", str(self.port), "--engine", f"{TINY}:factory", "--log-level", "error"]
        self.proc = subprocess.Popen([sys.executable, "-c", _SPARE, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=dict(env, TINY_RUN_LOG=str(run_log)))

    def go(self, timeout: float = 60.0) -> float:
        """Start serving; return when /health says ready (the time it did)."""
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"faceanchor serve exited with {self.proc.returncode}"
            try:
                if httpx.get(self.base + "/health", timeout=1).json()["status"] in ("ready", "busy"):
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("faceanchor serve never became ready")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _snapshot(jobs: JobStore, ids: list[str]) -> dict[str, tuple]:
    with jobs.db.read() as s:
        rows = s.scalars(select(Job).where(Job.id.in_(ids))).all()
        return {r.id: (r.status, r.finished_at, r.result_json, r.lease_expires_at, r.attempts,
                       json.loads(r.progress_json) if r.progress_json else None) for r in rows}


def _attempt_starts(jobs: JobStore, job_id: str) -> list[float]:
    with jobs.db.read() as s:
        return [lg.at for lg in s.scalars(select(JobLog).where(JobLog.job_id == job_id).order_by(JobLog.id))
                if lg.message.startswith("started on ")]


@pytest.mark.timeout(240)
def test_kill_9_five_times_every_job_completes_once(tmp_path, db_url):
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=db_url)
    db = Database.from_settings(settings)
    key, _ = KeyStore(db).create("chaos")
    jobs = JobStore(db)
    run_log = tmp_path / "runs.txt"
    env = dict(os.environ, FACEANCHOR_HOME=str(home), FACEANCHOR_DATABASE_URL=db_url,
               FACEANCHOR_JOB_LEASE_SECONDS=str(LEASE), FACEANCHOR_JOB_MAX_ATTEMPTS="10",
               TINY_STEP_DELAY=str(STEP_DELAY))
    spares: list[Spare] = [Spare(env, run_log)]
    t_start = time.monotonic()
    try:
        current = spares[0]
        serving_since = current.go()
        spares.append(Spare(env, run_log))  # warms up while the first one works
        face = _face_b64()
        headers = {"x-api-key": key}
        ids = []
        for i in range(N_JOBS):
            r = httpx.post(current.base + "/queue/instantid", headers={**headers, "Idempotency-Key": f"chaos-{i}"},
                           json={"face_image": face, "num_inference_steps": STEPS, "seed": 1000 + i}, timeout=30)
            assert r.status_code == 200, r.text
            ids.append(r.json()["request_id"])
        assert len(set(ids)) == N_JOBS

        first_completed: dict[str, tuple] = {}
        killed: dict[str, tuple[float, float]] = {}  # job id -> (time of the kill, time the next server was ready)
        stuck_seen: list[tuple[str, float]] = []
        deadline = time.monotonic() + 150
        while True:
            snap = _snapshot(jobs, ids)
            now = time.time()
            for jid, (status, finished_at, result_json, lease_exp, attempts, progress) in snap.items():
                if status == JobStatus.COMPLETED.value and jid not in first_completed:
                    first_completed[jid] = (finished_at, result_json)
                # no job sits past its lease once a server is up to take it (slack: heartbeat period, load)
                overdue = now - max(lease_exp or now, serving_since)
                if status == JobStatus.IN_PROGRESS.value and overdue > 3 * LEASE + 2:
                    stuck_seen.append((jid, overdue))
            if len(first_completed) == N_JOBS:
                break
            assert time.monotonic() < deadline, f"only {len(first_completed)} of {N_JOBS} completed"
            spaced = len(first_completed) >= (len(killed) + 1) * (N_JOBS // (N_KILLS + 1))
            if len(killed) < N_KILLS and spaced:
                # mid-denoise: running, past step 2, well before the last step, not killed before
                target = next((jid for jid, (status, _f, _r, _l, attempts, progress) in snap.items()
                               if status == JobStatus.IN_PROGRESS.value and jid not in killed and progress
                               and progress.get("stage") == "denoise" and 2 <= progress.get("step", 0) <= STEPS - 5), None)
                if target is not None:
                    current.kill9()
                    t_kill = time.time()
                    after = _snapshot(jobs, [target])[target]
                    assert after[0] == JobStatus.IN_PROGRESS.value, "the kill was meant to land mid-denoise"
                    current = spares[-1]
                    t_ready = serving_since = current.go()
                    killed[target] = (t_kill, t_ready)
                    spares.append(Spare(env, run_log))
                    continue
            time.sleep(0.03)
    finally:
        for sp in spares:
            sp.close()
    elapsed = time.monotonic() - t_start

    assert len(killed) == N_KILLS
    assert not stuck_seen, f"jobs held past their lease: {stuck_seen[:3]}"
    final = _snapshot(jobs, ids)
    for jid in ids:
        status, finished_at, result_json, lease_exp, attempts, _p = final[jid]
        assert status == JobStatus.COMPLETED.value and lease_exp is None
        # exactly once: the outcome first seen is the outcome kept (no later run rewrote it)
        assert (finished_at, result_json) == first_completed[jid]
        if jid in killed:
            assert attempts >= 2
            t_kill, t_ready = killed[jid]
            rerun = [t for t in _attempt_starts(jobs, jid) if t > t_kill]
            assert rerun, "the killed job was never run again"
            # taken again as soon as its lease ran out on the fresh server (slack for heartbeats and load)
            assert rerun[0] <= max(t_ready, t_kill + LEASE) + 2.0 + LEASE, (rerun[0] - t_kill, t_ready - t_kill)
        else:
            assert attempts == 1
    # each job's result is its own (seed), and the engine finished each job's run exactly once
    seeds = {jobs.get(jid).result["seed"] for jid in ids}
    assert seeds == {1000 + i for i in range(N_JOBS)}
    runs = Counter(int(line.split()[1]) for line in run_log.read_text().splitlines())
    assert runs == Counter({1000 + i: 1 for i in range(N_JOBS)})
    assert jobs.counts()["COMPLETED"] == N_JOBS and sum(jobs.counts().values()) == N_JOBS
    print(f"chaos ({db.write_engine.dialect.name}): {N_JOBS} jobs, {N_KILLS} kill -9, {elapsed:.1f} s")


@pytest.mark.timeout(180)
def test_postgres_restart_mid_job_jobs_complete_once(tmp_path, pg_cluster):
    url = pg_cluster.create_database()
    settings = Settings(home=tmp_path / "home", database_url=url, job_lease_seconds=2.0, job_max_attempts=5,
                        allow_private_urls=True)
    engines = [TinyEngine(step_delay=0.05), TinyEngine(step_delay=0.05)]
    svc = Service(settings, engine=engines, poll_interval=0.05)
    buf = io.BytesIO()
    Image.effect_noise((32, 32), 60).convert("RGB").save(buf, "PNG")
    face = buf.getvalue()
    ids = [svc.submit("instantid", {"face_image": face, "num_inference_steps": 20, "seed": 500 + i})[0].id for i in range(10)]
    observer = JobStore(Database(url))
    restarts = 0
    svc.start(background=False)
    try:
        deadline = time.monotonic() + 120
        while True:
            snap = observer.db.retrying(lambda: _snapshot(observer, ids))
            done = sum(1 for v in snap.values() if v[0] == JobStatus.COMPLETED.value)
            if done == len(ids):
                break
            assert time.monotonic() < deadline, f"{done} of {len(ids)} completed"
            running = [jid for jid, v in snap.items() if v[0] == JobStatus.IN_PROGRESS.value and v[5] and v[5].get("step", 0) >= 1]
            if restarts < 3 and running and done >= restarts * 2:
                pg_cluster.restart()  # every connection of every worker drops mid-job
                restarts += 1
                continue
            time.sleep(0.05)
    finally:
        svc.stop()
    assert restarts == 3
    final = _snapshot(observer, ids)
    assert all(v[0] == JobStatus.COMPLETED.value for v in final.values())
    assert sorted(observer.get(jid).result["seed"] for jid in ids) == [500 + i for i in range(10)]
    # no run was abandoned or repeated: each job ran on an engine once and was recorded once
    assert sum(e.completed for e in engines) == len(ids)
    assert all(v[4] == 1 for v in final.values()), {jid: v[4] for jid, v in final.items()}
    assert observer.counts()["COMPLETED"] == len(ids) and observer.counts()["FAILED"] == 0
