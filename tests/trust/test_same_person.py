"""The same-person check with the real dlib stack on the public-domain test photos
(tests/data/faces/PROVENANCE.md: obama↔obama2 0.376, obama↔biden 0.845, threshold 0.6)."""

import numpy as np
import pytest

from faceanchor.errors import DifferentPeopleError
from faceanchor.face.same_person import check_same_person


def test_pairwise_verdicts_in_each_space():
    a, b = np.ones(128, np.float32), np.ones(128, np.float32)
    b[:64] += 0.12  # euclidean 0.96: different in dlib's space
    with pytest.raises(DifferentPeopleError, match=r"photo 1 and photo 2 look like different people \(dlib euclidean 0.960, above"):
        check_same_person([a, b], "dlib", ["photo 1", "photo 2"])
    rec = check_same_person([a, b], "dlib", ["photo 1", "photo 2"], allow=True)
    assert rec["overridden"] and not rec["all_same"] and rec["pairs"][0]["score"] == pytest.approx(0.96, abs=1e-3)
    # cosine spaces: the same vectors are "same" in an ArcFace-like space (cosine ~0.998 >= 0.3)
    assert check_same_person([a, b], "buffalo_l")["all_same"]
    assert check_same_person([a], "dlib") is None


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from faceanchor.config import Settings
    from faceanchor.engine import Engine

    return Engine(Settings(home=tmp_path_factory.mktemp("home")), weights="tiny", face_pack="dlib")


def test_obama_and_biden_refused_obama_twice_accepted(engine):
    from photos import small_copy

    from faceanchor.types import GenerationRequest

    obama, obama2, biden = (small_copy(n, 320) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    with pytest.raises(DifferentPeopleError) as e:
        engine.identity(GenerationRequest(face_image=obama, face_images=[biden], prompt="x"))
    assert obama in str(e.value) and biden in str(e.value) and "allow_different_people" in str(e.value)
    assert e.value.http_status == 422
    ident = engine.identity(GenerationRequest(face_image=obama, face_images=[obama2], prompt="x"))
    assert len(ident.faces) == 2
    # precomputed embeddings are checked too
    embs = [f.embedding.tolist() for f in ident.faces]
    bid = engine.identity(GenerationRequest(face_image=biden, prompt="x")).faces[0].embedding.tolist()
    with pytest.raises(DifferentPeopleError, match="embedding 1 and embedding 2"):
        engine.identity(GenerationRequest(face_embeddings=[embs[0], bid], face_embedding_space="dlib", prompt="x"))


def test_override_is_recorded_and_group_photo_reported(engine, tmp_path):
    from PIL import Image
    from photos import FACES, small_copy

    from faceanchor.types import GenerationRequest

    obama, biden = small_copy("obama.jpg", 320), small_copy("biden.jpg", 320)
    res = engine.generate(GenerationRequest(face_image=obama, face_images=[biden], allow_different_people=True, prompt="x",
                                            num_inference_steps=1, width=64, height=64, seed=0))
    rec = res.params["same_person"]
    assert rec["overridden"] is True and rec["pairs"][0]["same"] is False and rec["pairs"][0]["score"] > 0.6
    assert res.params["allow_different_people"] is True
    # a group photo: two people side by side; the largest is used and the other is counted
    a, b = Image.open(obama), Image.open(biden).resize((200, round(Image.open(biden).height * 200 / Image.open(biden).width)))
    group = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    group.paste(a, (0, 0))
    group.paste(b, (a.width, 0))
    path = tmp_path / "group.png"
    group.save(path)
    ident = engine.identity(GenerationRequest(face_image=str(path), prompt="x"))
    assert ident.faces[0].faces_in_image == 2
    from faceanchor.engine import _reference_report

    rep = _reference_report(GenerationRequest(face_image=str(path), prompt="x"), ident)["reference_faces"]
    assert rep == [{"reference": 1, "face_index": 0, "faces_found": 2, "others": 1}]


def test_blended_character_refused_then_accepted_with_override(tmp_path):
    from photos import small_copy

    from faceanchor.config import Settings
    from faceanchor.service.characters import CharacterService
    from faceanchor.store.db import Database
    from faceanchor.store.files import FileStore

    settings = Settings(home=tmp_path / "home")
    svc = CharacterService(settings, Database.from_settings(settings), FileStore(tmp_path / "files"))
    obama, obama3, biden = (small_copy(n, 320) for n in ("obama.jpg", "obama3.jpg", "biden.jpg"))
    with pytest.raises(DifferentPeopleError, match="photo 1 and photo 2 look like different people"):
        svc.create("blend", [obama, biden], spaces=["dlib"])
    assert svc.list() == []
    ok = svc.create("obama", [obama, obama3], spaces=["dlib"])
    hist = svc.history(ok.id)
    assert hist[0].info["same_person"][0]["all_same"] is True
    blend = svc.create("blend", [obama, biden], spaces=["dlib"], allow_different_people=True)
    rec = svc.history(blend.id)[0]
    assert rec.kind == "create" and rec.request["allow_different_people"] is True
    assert rec.info["same_person"][0]["overridden"] is True


def test_cli_refuses_two_people_in_one_line(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from photos import small_copy

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, FACEANCHOR_HOME=str(tmp_path / "home"), PYTHONPATH=str(root / "src"))
    p = subprocess.run([sys.executable, "-m", "faceanchor", "generate", "--weights", "tiny", "--face", small_copy("obama.jpg", 320),
                        "--face", small_copy("biden.jpg", 320), "--prompt", "x", "--steps", "1", "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2 and "look like different people" in p.stderr and "allow_different_people" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_api_character_of_two_people_is_422_then_201_with_override(tmp_path):
    import base64

    import tiny_engine as tiny
    from api_helpers import Harness
    from photos import small_copy

    from faceanchor.config import Settings

    photos = [base64.b64encode(open(small_copy(n, 320), "rb").read()).decode() for n in ("obama.jpg", "biden.jpg")]
    with Harness(Settings(home=tmp_path / "home", rate_limit_per_minute=0), tiny.TinyEngine()) as h:
        body = {"name": "blend", "images": {"face": photos[0], "faces": [photos[1]]}, "spaces": ["dlib"]}
        r = h.client.post("/v1/characters", headers=h.headers, json=body)
        assert r.status_code == 422 and r.json()["error"]["type"] == "different_people", r.text
        assert "photo 1 and photo 2" in r.json()["error"]["message"]
        r = h.client.post("/v1/characters", headers=h.headers, json=dict(body, allow_different_people=True))
        assert r.status_code == 201, r.text
