"""The character tables and their files: round trips, history, deletion that removes files
(on SQLite and PostgreSQL)."""

import numpy as np
import pytest

from faceanchor.store.characters import NAMESPACE, CharacterNotFoundError, CharacterStore
from faceanchor.store.db import Database
from faceanchor.store.files import FileStore


@pytest.fixture
def store(tmp_path, db_url):
    db = Database(db_url)
    db.create_all()
    yield CharacterStore(db, FileStore(tmp_path / "files"))
    db.dispose()


def _ident(space="dlib", source="photo:0", photo=None, seed=0):
    rs = np.random.RandomState(seed)
    return {"space": space, "source": source, "photo_file": photo, "embedding": rs.randn(128).astype(np.float32),
            "kps": rs.rand(5, 2) * 100, "bbox": [1.5, 2.5, 80.25, 90.0], "image_size": (360, 400), "det_score": 0.9,
            "quality": {"size_px": 80.0, "warnings": []}}


def test_round_trip_of_a_character_and_its_identities(store):
    photo = store.put_file(b"\x89PNG\r\n\x1a\nfake-photo")
    a, b = _ident(photo=photo), _ident(space="antelopev2", seed=1, photo=photo)
    b["embedding"] = np.random.RandomState(2).randn(512).astype(np.float32)
    ch = store.create("Ada", [photo], [a, b])
    got = store.get(ch.id)
    assert got.name == "Ada" and got.photos == [photo] and got.spaces == ["antelopev2", "dlib"]
    d = got.identities_for("dlib")[0]
    assert np.array_equal(d.embedding, a["embedding"]) and d.embedding.dtype == np.float32
    assert np.allclose(d.kps, a["kps"]) and d.image_size == (360, 400) and d.quality == a["quality"]
    assert got.identities_for("antelopev2")[0].embedding.shape == (512,)
    assert [c.id for c in store.list()] == [ch.id]
    assert got.to_dict()["identities"][0]["dim"] == 128


def test_unknown_character_is_a_404_error(store):
    with pytest.raises(CharacterNotFoundError) as e:
        store.get("nope")
    assert e.value.http_status == 404
    with pytest.raises(CharacterNotFoundError):
        store.delete("nope")
    with pytest.raises(CharacterNotFoundError):
        store.history("nope")


def test_history_and_id_photo_views(store):
    ch = store.create("B", [store.put_file(b"photo-b")], [_ident()])
    out = store.put_file(b"output-1")
    store.add_generation(ch.id, "generate", {"prompt": "x"}, [{"file_id": out, "seed": 3, "identity_score": None}])
    sheet, view = store.put_file(b"sheet"), store.put_file(b"view-front")
    got = store.set_id_photo(ch.id, sheet, [{"view": "front", "file_id": view}], [_ident(source="view:front", seed=4)])
    assert got.sheet_file == sheet and got.views[0]["file_id"] == view
    assert len(got.identities_for("dlib", "views")) == 1 and len(got.identities_for("dlib", "all")) == 2
    hist = store.history(ch.id)
    assert [h.kind for h in hist] == ["generate"] and hist[0].outputs[0]["seed"] == 3 and got.generations == 1
    # a new ID photo replaces the old sheet and its files
    sheet2 = store.put_file(b"sheet-2")
    store.set_id_photo(ch.id, sheet2, [], [])
    assert store.get_file(sheet) is None and store.get_file(view) is None and store.get_file(sheet2) is not None


def test_delete_removes_rows_and_files_but_keeps_shared_ones(store, tmp_path):
    shared = store.put_file(b"same photo bytes")
    a = store.create("A", [shared, store.put_file(b"only-a")], [_ident()])
    b = store.create("B", [shared], [_ident()])
    out = store.put_file(b"a-output")
    store.add_generation(a.id, "edit", {}, [{"file_id": out}])
    gone = store.delete(a.id)
    assert set(gone) == {store.files._path(NAMESPACE, f).name for f in gone}
    assert out in gone and shared not in gone
    assert store.get_file(out) is None and store.get_file(shared) is not None
    with pytest.raises(CharacterNotFoundError):
        store.get(a.id)
    store.delete(b.id)
    assert store.get_file(shared) is None
    assert not any(p.is_file() for p in (tmp_path / "files" / NAMESPACE).rglob("*"))
