"""CharacterService's own face analyzers are shared by API request threads (create) and the
queue worker (ID-photo views): their use must be serialised (dlib detectors are not thread-safe)."""

import io
import threading
import time

import numpy as np
from PIL import Image

from faceanchor.config import Settings
from faceanchor.service.characters import CharacterService
from faceanchor.store.db import Database
from faceanchor.store.files import FileStore
from faceanchor.types import Face


class ProbeAnalyzer:
    """Stands in for a prepared FaceAnalyzer and records how many threads are inside it at once."""

    def __init__(self):
        self.active = 0
        self.peak = 0
        self.calls = 0
        self._count = threading.Lock()

    def _use(self):
        with self._count:
            self.active += 1
            self.calls += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.03)
        with self._count:
            self.active -= 1
        return Face(bbox=[4, 4, 40, 40], kps=[[10, 12], [30, 12], [20, 22], [12, 32], [28, 32]], det_score=0.9,
                    embedding=np.ones(128, np.float32), space="dlib")

    def get_face(self, image, index=None, name=None):
        return self._use()

    def get(self, image, max_num=0, name=None):
        return [self._use()]


def _png(shade):
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), (shade, shade, shade)).save(buf, "PNG")
    return buf.getvalue()


def test_analyzer_use_is_serialised_across_threads(tmp_path):
    settings = Settings(home=tmp_path / "home", face_pack="dlib")
    chars = CharacterService(settings, Database(f"sqlite:///{tmp_path / 'db.sqlite'}"), FileStore(tmp_path / "files"))
    chars.store.db.create_all()
    probe = ProbeAnalyzer()
    chars._analyzers["dlib"] = probe
    start = threading.Barrier(6)
    errors = []

    def create(i):
        try:
            start.wait()
            chars.create(f"c{i}", [_png(40 + i), _png(90 + i)], spaces=["dlib"])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    def view(i):
        try:
            start.wait()
            assert chars._analyse_view(Image.new("RGB", (48, 48)), "dlib", f"view:{i}") is not None
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    threads += [threading.Thread(target=view, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert probe.calls == 4 * 2 + 2
    assert probe.peak == 1, f"{probe.peak} threads used one face analyzer at the same time"
    assert len(chars.list()) == 4
