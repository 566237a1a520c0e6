"""Crash: `faceanchor serve` as a subprocess, kill -9 mid-job, restart; the job completes once."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from api_helpers import b64, png_bytes

from faceanchor.config import Settings
from faceanchor.store.db import Database
from faceanchor.store.jobs import JobStore
from faceanchor.store.keys import KeyStore

TINY = Path(__file__).resolve().parents[1] / "service" / "tiny_engine.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, run_log: Path) -> subprocess.Popen:
    env = dict(os.environ, FACEANCHOR_HOME=str(home), FACEANCHOR_JOB_LEASE_SECONDS="1.0",
               TINY_STEP_DELAY="0.1", TINY_RUN_LOG=str(run_log))
    return subprocess.Popen(
        [sys.executable, "-m", "faceanchor", "serve", "--port", str(port), "--engine", f"{TINY}:factory", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def wait_health(base: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(base + "/health", timeout=1).json()["status"] == "ready":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server never became ready")


def test_kill_9_mid_job_then_restart_completes_once(tmp_path):
    home = tmp_path / "home"
    key, _ = KeyStore(Database.from_settings(Settings(home=home))).create("crash")
    headers = {"x-api-key": key}
    run_log = tmp_path / "runs.txt"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(home, port, run_log)
    face = None
    try:
        wait_health(base, proc)
        face = b64(png_bytes())
        job = httpx.post(base + "/queue/instantid", json={"face_image": face, "num_inference_steps": 15, "seed": 42},
                         headers={**headers, "Idempotency-Key": "crash-1"}, timeout=10).json()
        deadline = time.time() + 15
        while True:  # wait until it is visibly mid-run
            st = httpx.get(job["status_url"], headers=headers, timeout=5).json()
            if st["status"] == "IN_PROGRESS" and (st.get("progress") or {}).get("step", 0) >= 2:
                break
            assert time.time() < deadline, st
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert not run_log.exists()  # the first run never finished

    port2 = free_port()
    base2 = f"http://127.0.0.1:{port2}"
    proc2 = start_server(home, port2, run_log)
    try:
        wait_health(base2, proc2)
        status_url = job["status_url"].replace(base, base2)
        deadline = time.time() + 30
        while True:
            st = httpx.get(status_url, headers=headers, timeout=5).json()
            if st["status"] in ("COMPLETED", "FAILED", "CANCELLED"):
                break
            assert time.time() < deadline, st
            time.sleep(0.1)
        assert st["status"] == "COMPLETED" and st["attempts"] == 2
        result = httpx.get(job["response_url"].replace(base, base2), headers=headers, timeout=5).json()
        assert result["seed"] == 42 and len(result["images"]) == 1
        # resubmitting with the same idempotency key returns the same job, not a new run
        again = httpx.post(base2 + "/queue/instantid", json={"face_image": face, "num_inference_steps": 15, "seed": 42},
                           headers={**headers, "Idempotency-Key": "crash-1"}, timeout=10)
        assert again.status_code == 200 and again.json()["request_id"] == job["request_id"]
    finally:
        proc2.send_signal(signal.SIGTERM)
        try:
            proc2.wait(15)
        except subprocess.TimeoutExpired:
            proc2.kill()
    assert run_log.read_text().count("\n") == 1  # the engine finished it exactly once
    jobs = JobStore(Database(Settings(home=home).resolved_database_url()))
    counts = jobs.counts()
    assert counts["COMPLETED"] == 1 and sum(counts.values()) == 1
