"""Quotas are atomic: N concurrent submits of one key for the last M images of its day admit
exactly M, on SQLite and on PostgreSQL, through one service or two services ("two nodes") on one
database. The check and the insert share one transaction serialised per key (store/jobs.py)."""

from __future__ import annotations

import threading

import pytest

from faceanchor.config import Settings
from faceanchor.service.quotas import QuotaExceededError
from faceanchor.service.runtime import Service, ServiceUnavailableError
from faceanchor.store.db import Database
from tiny_engine import TinyEngine

THREADS = 12


def _services(tmp_path, url: str, nodes: int, **settings) -> list[Service]:
    """``nodes`` services on one database URL, each with its own engine pool and connections
    (what separate servers would have); none started (no worker takes the jobs)."""
    out = []
    for _ in range(nodes):
        s = Settings(home=tmp_path / "home", rate_limit_per_minute=0, database_url=url, **settings)
        db = Database(url)
        db.create_all()
        out.append(Service(s, engine=TinyEngine(), database=db))
    return out


def _burst(services: list[Service], submit) -> tuple[list[str], list[BaseException]]:  # noqa: ANN001
    """THREADS submits at once (a barrier releases them together), spread over the services."""
    barrier = threading.Barrier(THREADS)
    ok: list[str] = []
    refused: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            job, created = submit(services[i % len(services)], i)
            with lock:
                ok.append(job.id) if created else None
        except (QuotaExceededError, ServiceUnavailableError) as e:
            with lock:
                refused.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    return ok, refused


@pytest.mark.parametrize("nodes", [1, 2])
def test_concurrent_submits_for_the_last_images_admit_exactly_those(tmp_path, db_url, nodes):
    services = _services(tmp_path, db_url, nodes)
    try:
        _, info = services[0].keys.create("q", images_per_day=7)
        _, other = services[0].keys.create("other", images_per_day=100)
        for i in range(3):  # 3 of 7 used before the burst: 4 left
            services[0].submit("instantid", {"prompt": "before", "seed": i}, key=info)

        def submit(svc: Service, i: int):  # noqa: ANN202
            return svc.submit("instantid", {"prompt": "burst", "seed": i, "face_image": b"\x89PNG-%d" % i}, key=info)

        ok, refused = _burst(services, submit)
        assert len(ok) == 4 and len(set(ok)) == 4
        assert len(refused) == THREADS - 4 and all(isinstance(e, QuotaExceededError) for e in refused)
        assert all(e.limit == 7 and e.used == 7 for e in refused)  # each refusal saw every admitted job
        assert services[-1].jobs.images_since(info.id, 0) == 7
        # another key's submits are not held up or counted by the first key's lock
        job, created = services[-1].submit("instantid", {"prompt": "other"}, key=other)
        assert created and services[0].jobs.images_since(other.id, 0) == 1
    finally:
        for svc in services:
            svc.db.dispose()


def test_concurrent_samples_never_pass_the_limit_and_idempotent_repeats_count_once(tmp_path, db_url):
    services = _services(tmp_path, db_url, 2)
    try:
        _, info = services[0].keys.create("q", images_per_day=10)

        def submit(svc: Service, i: int):  # noqa: ANN202
            return svc.submit("instantid", {"prompt": "p", "samples": 1 + i % 3, "seed": i}, key=info)

        ok, refused = _burst(services, submit)
        used = services[0].jobs.images_since(info.id, 0)
        assert used <= 10 and ok and refused
        # what was admitted is exactly what was asked for by the admitted requests
        assert used == sum(services[0].jobs.get(j).images for j in ok)
        # whatever the last refusal saw, one more image beyond the limit is refused
        remaining = 10 - used
        for _ in range(remaining):
            services[1].submit("instantid", {"prompt": "fill"}, key=info)
        with pytest.raises(QuotaExceededError):
            services[0].submit("instantid", {"prompt": "over"}, key=info)

        _, k2 = services[0].keys.create("idem", images_per_day=1)

        def repeat(svc: Service, i: int):  # noqa: ANN202
            return svc.submit("instantid", {"prompt": "same"}, key=k2, idempotency_key="one")

        ok, refused = _burst(services, repeat)  # one job created; the repeats return it, none refused
        assert len(ok) == 1 and not refused
        assert services[1].jobs.images_since(k2.id, 0) == 1
    finally:
        for svc in services:
            svc.db.dispose()


def test_the_queue_limit_holds_under_concurrent_submits_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    services = _services(tmp_path, url, 2, max_queue_size=5)
    try:
        ok, refused = _burst(services, lambda svc, i: svc.submit("instantid", {"prompt": "p", "seed": i}))
        assert len(ok) == 5 and len(refused) == THREADS - 5
        assert all(isinstance(e, ServiceUnavailableError) for e in refused)
        assert services[0].jobs.queue_depth() == 5
    finally:
        for svc in services:
            svc.db.dispose()
