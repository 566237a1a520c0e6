"""The store: WAL database, concurrent claims, hashed keys, content-addressed files."""

import hashlib
import threading

from sqlalchemy import text

from faceanchor.store.db import Database
from faceanchor.store.files import FileStore, sniff_content_type
from faceanchor.store.jobs import JobStore
from faceanchor.store.keys import ApiKey, KeyCheck, KeyStore
from faceanchor.types import JobStatus


def make_db(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/sub/x.db")
    db.create_all()
    return db


def test_wal_mode_and_tables(tmp_path):
    db = make_db(tmp_path)
    with db.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        names = {r[0] for r in s.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert {"jobs", "job_logs", "api_keys"} <= names


def test_concurrent_claims_take_each_job_once(tmp_path):
    db = make_db(tmp_path)
    jobs = JobStore(db)
    ids = {jobs.submit("instantid", {"request": {"i": i}})[0].id for i in range(60)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(n):
        store = JobStore(Database(db.url))  # its own engines, as another process would have
        while True:
            job = store.claim(f"w{n}", 30)
            if job is None:
                return
            with lock:
                claimed.append(job.id)
            assert store.complete(job.id, f"w{n}", {"ok": n})

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(ids)
    assert jobs.counts()["COMPLETED"] == 60


def test_queue_positions_follow_creation_order(tmp_path):
    jobs = JobStore(make_db(tmp_path))
    views = [jobs.submit("faceid", {"request": {}})[0] for _ in range(4)]
    assert [jobs.get(v.id).queue_position for v in views] == [0, 1, 2, 3]
    jobs.request_cancel(views[1].id)
    assert jobs.get(views[1].id).status == JobStatus.CANCELLED
    assert [jobs.get(v.id).queue_position for v in (views[0], views[2], views[3])] == [0, 1, 2]
    assert jobs.request_cancel("nope") is None


def test_start_deadline_fails_queued_job(tmp_path):
    now = [1000.0]
    jobs = JobStore(make_db(tmp_path), clock=lambda: now[0])
    job, _ = jobs.submit("instantid", {"request": {}}, start_deadline=1005.0)
    now[0] = 1006.0
    assert jobs.claim("w", 10) is None
    failed = jobs.get(job.id)
    assert failed.status == JobStatus.FAILED and failed.error["status"] == 504


def test_keys_are_hashed_and_revocable(tmp_path):
    db = make_db(tmp_path)
    keys = KeyStore(db)
    key, info = keys.create("me", rate_limit_per_minute=5)
    with db.read() as s:
        row = s.get(ApiKey, info.id)
        assert row.key_hash == hashlib.sha256(key.encode()).hexdigest() and key not in row.key_hash
    assert keys.verify(key)[0] == KeyCheck.OK and keys.verify(key)[1].rate_limit_per_minute == 5
    assert keys.verify(key[:-1] + ("A" if key[-1] != "A" else "B"))[0] == KeyCheck.UNKNOWN
    assert keys.verify("garbage")[0] == KeyCheck.UNKNOWN
    assert keys.revoke(key) and keys.verify(key)[0] == KeyCheck.REVOKED
    assert not keys.revoke("000000000000")
    assert [k.id for k in keys.list()] == [info.id] and keys.list()[0].revoked


def test_files_are_content_addressed(tmp_path):
    files = FileStore(tmp_path / "f")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    fid = files.put(png)
    assert fid == hashlib.sha256(png).hexdigest() and files.put(png) == fid
    assert files.get(fid) == png and files.content_type(fid) == "image/png"
    assert files.get(fid, "inputs") is None  # namespaces are separate
    assert files.path("../../etc/passwd") is None and files.path("A" * 64) is None
    assert files.delete(fid) and files.get(fid) is None
    assert sniff_content_type(b"\xff\xd8\xff\xe0") == "image/jpeg"
    assert sniff_content_type(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff_content_type(b"<html>") == "application/octet-stream"
