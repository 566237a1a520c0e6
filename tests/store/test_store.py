"""The store: WAL database, concurrent claims, hashed keys, content-addressed files.

The database tests run on both backends (``db_url``: SQLite and a throwaway PostgreSQL)."""

import hashlib
import threading

from sqlalchemy import inspect, text

from faceanchor.store.db import Database, display_url
from faceanchor.store.files import FileStore, sniff_content_type
from faceanchor.store.jobs import JobStore
from faceanchor.store.keys import ApiKey, KeyCheck, KeyStore
from faceanchor.types import JobStatus


def make_db(url):
    db = Database(url)
    db.create_all()
    return db


def test_wal_mode_and_tables(tmp_path):
    db = make_db(f"sqlite:///{tmp_path}/sub/x.db")
    with db.read() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        names = {r[0] for r in s.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    assert {"jobs", "job_logs", "api_keys"} <= names


def test_postgres_tables_and_driver(pg_cluster):
    url = pg_cluster.create_database()
    db = make_db(url.replace("postgresql+psycopg://", "postgresql://"))  # the plain scheme means psycopg 3
    assert db.is_postgres and db.write_engine.dialect.driver == "psycopg"
    assert {"jobs", "job_logs", "api_keys", "file_owners"} <= set(inspect(db.write_engine).get_table_names())
    make_db(url)  # a second open (another replica) finds the schema and changes nothing
    with db.read() as s:
        assert s.execute(text("SHOW transaction_isolation")).scalar() == "read committed"
    assert display_url("postgresql://u:s3cret@db/x") == "postgresql://u:***@db/x"  # start-up lines hide it


def test_concurrent_claims_take_each_job_once(db_url):
    db = make_db(db_url)
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


def test_postgres_claim_skips_a_job_another_claim_holds(pg_cluster):
    """FOR UPDATE SKIP LOCKED: while another transaction holds the oldest job's row, a claim takes
    the next job at once instead of waiting for (and then fighting over) the held one."""
    db = make_db(pg_cluster.create_database())
    jobs = JobStore(db)
    first = jobs.submit("instantid", {"request": {"i": 1}})[0]
    second = jobs.submit("instantid", {"request": {"i": 2}})[0]
    holder = db.write_engine.connect()
    tx = holder.begin()
    holder.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": first.id})
    got: list = []
    t = threading.Thread(target=lambda: got.append(JobStore(Database(db.url)).claim("w2", 30)))
    t.start()
    t.join(10)
    alive = t.is_alive()
    tx.rollback()
    holder.close()
    t.join(10)
    assert not alive, "the claim waited for the locked row"
    assert got[0].id == second.id
    assert jobs.claim("w1", 30).id == first.id  # released: the held job is claimable again


def test_queue_positions_follow_creation_order(db_url):
    jobs = JobStore(make_db(db_url))
    views = [jobs.submit("faceid", {"request": {}})[0] for _ in range(4)]
    assert [jobs.get(v.id).queue_position for v in views] == [0, 1, 2, 3]
    jobs.request_cancel(views[1].id)
    assert jobs.get(views[1].id).status == JobStatus.CANCELLED
    assert [jobs.get(v.id).queue_position for v in (views[0], views[2], views[3])] == [0, 1, 2]
    assert jobs.request_cancel("nope") is None


def test_start_deadline_fails_queued_job(db_url):
    now = [1000.0]
    jobs = JobStore(make_db(db_url), clock=lambda: now[0])
    job, _ = jobs.submit("instantid", {"request": {}}, start_deadline=1005.0)
    now[0] = 1006.0
    assert jobs.claim("w", 10) is None
    failed = jobs.get(job.id)
    assert failed.status == JobStatus.FAILED and failed.error["status"] == 504


def test_keys_are_hashed_and_revocable(db_url):
    db = make_db(db_url)
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


def test_transient_errors_are_retried_and_others_are_not(tmp_path, pg_cluster):
    from sqlalchemy import create_engine

    from faceanchor.store.db import is_transient

    def error_of(url, sql="SELECT 1"):
        try:
            with create_engine(url).connect() as c:
                c.execute(text(sql))
        except Exception as e:  # noqa: BLE001
            return e
        raise AssertionError("no error")

    assert not is_transient(error_of(f"sqlite:///{tmp_path}/t.db", "SELECT * FROM no_such_table"))
    assert is_transient(error_of(f"postgresql+psycopg://u@/d?host={tmp_path}&port=1"))  # nobody listening
    db = make_db(pg_cluster.create_database())
    assert not is_transient(error_of(db.url, "SELECT * FROM no_such_table"))
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise error_of(f"postgresql+psycopg://u@/d?host={tmp_path}&port=1")
        return "ok"

    assert db.retrying(flaky, seconds=5) == "ok" and len(calls) == 3
    calls.clear()

    def broken():
        calls.append(1)
        raise error_of(db.url, "SELECT * FROM no_such_table")

    try:
        db.retrying(broken, seconds=5)
    except Exception as e:  # noqa: BLE001
        assert "no_such_table" in str(e) and len(calls) == 1
    else:
        raise AssertionError("a non-transient error was swallowed")
