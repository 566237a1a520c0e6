"""A database made before tenancy (no owner/admin/tenant/quota columns) is migrated additively on
open, on SQLite and on PostgreSQL."""

import time

import sqlalchemy as sa

from faceanchor.store.characters import CharacterStore
from faceanchor.store.db import Database
from faceanchor.store.files import FileStore
from faceanchor.store.jobs import JobStore
from faceanchor.store.keys import KeyStore, hash_key


def _old_schema(url):
    """The three tables as the previous release created them (columns as of before issue 11)."""
    md = sa.MetaData()
    sa.Table("api_keys", md, sa.Column("id", sa.String(12), primary_key=True), sa.Column("name", sa.String(200)),
             sa.Column("key_hash", sa.String(64)), sa.Column("created_at", sa.Float), sa.Column("revoked_at", sa.Float, nullable=True),
             sa.Column("rate_limit_per_minute", sa.Integer, nullable=True))
    sa.Table("characters", md, sa.Column("id", sa.String(32), primary_key=True), sa.Column("name", sa.String(200)),
             sa.Column("created_at", sa.Float), sa.Column("updated_at", sa.Float), sa.Column("photos_json", sa.Text),
             sa.Column("sheet_file", sa.String(64), nullable=True), sa.Column("views_json", sa.Text))
    from faceanchor.store.jobs import Job

    sa.Table("jobs", md, *[sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                           for c in Job.__table__.columns if c.name not in ("owner", "images")])
    engine = sa.create_engine(url)
    md.create_all(engine)
    key = "fa_0123456789ab_" + "k" * 43
    with engine.begin() as conn:
        conn.execute(md.tables["api_keys"].insert().values(id="0123456789ab", name="old", key_hash=hash_key(key),
                                                            created_at=time.time(), revoked_at=None, rate_limit_per_minute=None))
        conn.execute(md.tables["characters"].insert().values(id="c" * 32, name="Old", created_at=1.0, updated_at=1.0,
                                                              photos_json="[]", sheet_file=None, views_json="[]"))
        conn.execute(md.tables["jobs"].insert().values(
            id="j" * 32, app="instantid", status="COMPLETED", request_json="{}", request_sha256="", key_id="0123456789ab",
            webhook_attempts=0, attempts=1, cancel_requested=False, created_at=time.time()))
    engine.dispose()
    return key


def test_old_database_gains_the_new_columns_and_old_rows_stay_valid(tmp_path, db_url):
    url = db_url
    key = _old_schema(url)
    db = Database(url)
    db.create_all()
    chars = CharacterStore(db, FileStore(tmp_path / "files"))
    cols = {t: {c["name"] for c in sa.inspect(db.write_engine).get_columns(t)} for t in ("api_keys", "characters", "jobs")}
    assert {"admin", "tenant", "images_per_day", "images_per_month"} <= cols["api_keys"]
    assert "owner" in cols["characters"] and {"owner", "images"} <= cols["jobs"]
    outcome, info = KeyStore(db).verify(key)
    assert outcome == "ok" and info.admin is False and info.tenant is None and info.owner == "key:0123456789ab"
    old_job = JobStore(db).get("j" * 32)
    assert old_job.owner is None and old_job.images is None and info.can_see(old_job.owner, old_job.key_id)
    assert JobStore(db).images_since(info.id, 0) == 1  # an old job counts as one image
    old = chars.get("c" * 32)
    assert old.owner is None
    assert not info.can_see(old.owner)  # an ownerless old character: admin keys only
    # new rows work next to the old ones; running the migration again adds nothing
    _, new = KeyStore(db).create("new", tenant="t1")
    job, _ = JobStore(db).submit("instantid", {}, key_id=new.id, owner=new.owner, images=2)
    assert JobStore(db).get(job.id).owner == "tenant:t1" and JobStore(db).images_since(new.id, 0) == 2
    from faceanchor.store.db import Base, add_missing_columns

    assert add_missing_columns(db.write_engine, Base.metadata) == []
    db.dispose()


def test_old_jobs_without_owner_stay_visible_to_their_key(db_url):
    db = Database(db_url)
    db.create_all()
    _, k = KeyStore(db).create("k")
    _, other = KeyStore(db).create("other")
    job, _ = JobStore(db).submit("instantid", {}, key_id=k.id)  # as written before owners existed
    view = JobStore(db).get(job.id)
    assert view.owner is None and k.can_see(view.owner, view.key_id) and not other.can_see(view.owner, view.key_id)
    db.dispose()
