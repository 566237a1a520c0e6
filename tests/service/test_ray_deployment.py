"""The HTTP API on a real local Ray Serve (two CPU replicas, the tiny engine) sharing one database:
a SQLite file in tmp_path, and one PostgreSQL database (the multi-node set-up).

Everything listens on loopback. Each replica builds the app itself from the pickled
``functools.partial(ray_app, settings, "…/tiny_engine.py:factory")`` that ``faceanchor serve --ray``
deploys; its lifespan loads the engine and starts the worker, and the replicas share the queue
through the one database.
"""

import base64
import functools
import io
import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

HERE = Path(__file__).resolve().parent

from faceanchor.cli.serve import absolute_spec, ray_app  # noqa: E402
from faceanchor.config import Settings  # noqa: E402
from faceanchor.errors import InvalidInputError  # noqa: E402
from faceanchor.service.ray_deployment import build_application, run_on_ray  # noqa: E402
from faceanchor.store.db import Database  # noqa: E402
from faceanchor.store.keys import KeyStore  # noqa: E402


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _face_b64() -> str:
    buf = io.BytesIO()
    Image.effect_noise((48, 48), 60).convert("RGB").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _tiny_colour(seed: int) -> tuple[int, int, int]:
    import random

    rng = random.Random(seed)
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _poll(fn, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last is not None:
                return last
        except httpx.TransportError as e:  # the proxy is not routing to the replica yet
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s; last: {last!r}")


def test_build_application_rejects_bad_arguments():
    with pytest.raises(InvalidInputError):
        build_application("not callable")
    with pytest.raises(InvalidInputError):
        build_application(lambda: None, num_gpus=-1)


@pytest.mark.timeout(240)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray's own pydantic-v1-style fields
def test_api_on_ray_serve_runs_queued_and_sync_jobs(tmp_path, db_url):
    import ray
    from ray import serve

    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, job_lease_seconds=10, database_url=db_url)
    run_log = tmp_path / "runs.log"
    # The API key lives in the shared database; both replicas open the same one.
    db = Database.from_settings(settings)
    key, _ = KeyStore(db).create("ray")
    db.dispose()
    headers = {"x-api-key": key}

    port = _free_port()
    ray.init(
        num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20,
        _node_ip_address="127.0.0.1",
        # The replicas log their runs; 0.4 s per step keeps a replica's worker busy long enough
        # for the other one to claim jobs.
        runtime_env={"env_vars": {"TINY_RUN_LOG": str(run_log), "TINY_STEP_DELAY": "0.4"}},
    )
    try:
        spec = absolute_spec(os.path.relpath(HERE / "tiny_engine.py") + ":factory")
        factory = functools.partial(ray_app, settings, spec)
        run_on_ray(factory, num_replicas=2, num_gpus=0, num_cpus=0.5, host="127.0.0.1", port=port)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as c:
            def ready():
                r = c.get("/health")
                return r.json() if r.status_code == 200 and r.json()["status"] in ("ready", "busy") else None

            health = _poll(ready, 60, "the replica never reported ready")
            assert health["workers"] == 1

            face = _face_b64()
            # queued jobs: submit, poll the status, fetch the result and its file
            subs = {}
            for seed in (21, 22, 23, 24):
                q = c.post("/queue/instantid", json={"face_image": face, "seed": seed, "num_inference_steps": 3}, headers=headers)
                assert q.status_code == 200, q.text
                subs[seed] = q.json()
                assert subs[seed]["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED")

            for seed, sub in subs.items():
                def finished(sub=sub):
                    body = c.get(sub["status_url"], headers=headers).json()
                    return body if body["status"] in ("COMPLETED", "FAILED", "CANCELLED") else None

                status = _poll(finished, 30, f"the queued job {seed} never finished")
                assert status["status"] == "COMPLETED", status
                result = c.get(sub["response_url"], headers=headers).json()
                assert result["seed"] == seed and [img["seed"] for img in result["images"]] == [seed]
                png = c.get(result["images"][0]["url"], headers=headers)
                assert png.status_code == 200
                assert Image.open(io.BytesIO(png.content)).convert("RGB").getpixel((0, 0)) == _tiny_colour(seed)

            # sync job, two samples, base64 JSON
            r = c.post("/v1/faceid", json={"face_image": face, "seed": 5, "samples": 2, "num_inference_steps": 1,
                                           "base64": True}, headers=headers)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["seed"] == 5 and body["seeds"] == [5, 6] and r.headers["x-seed"] == "5"
            pixels = [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB").getpixel((0, 0)) for b in body["images"]]
            assert pixels == [_tiny_colour(5), _tiny_colour(6)]

            # auth and errors come from the same app
            assert c.post("/v1/faceid", json={"face_image": face}).status_code == 401

        # every job ran once, in the replicas' processes (not this one), and both replicas worked
        runs = [line.split() for line in run_log.read_text().splitlines()]
        assert sorted(int(seed) for _, seed in runs) == [5, 21, 22, 23, 24]
        pids = {int(pid) for pid, _ in runs}
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        serve.shutdown()
        ray.shutdown()


def test_cli_serve_ray_reports_a_bad_engine_spec_before_starting_ray(tmp_path, capsys):
    from faceanchor.cli.app import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--home", str(tmp_path), "serve", "--ray", "--gpus-per-replica", "0", "--engine", str(tmp_path / "nope.py") + ":f"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1


def test_absolute_spec_keeps_module_specs_and_resolves_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("faceanchor.engine:Engine") == "faceanchor.engine:Engine"
    assert absolute_spec("eng/my.py:make") == f"{tmp_path}/eng/my.py:make"
