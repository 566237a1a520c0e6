"""Several people in one picture through the engine (tiny weights, dlib faces): placement,
per-person scores, exactness against the single-person path, clear refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from photos import small_copy  # noqa: E402

from faceanchor.config import Settings  # noqa: E402
from faceanchor.errors import InvalidInputError  # noqa: E402
from faceanchor.types import GenerationRequest, PlacedIdentity  # noqa: E402

W, H = 128, 64
LEFT, RIGHT = [0, 0, 64, 64], [64, 0, 128, 64]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from faceanchor.engine import Engine

    return Engine(Settings(home=tmp_path_factory.mktemp("home"), device="cpu"), weights="tiny", face_pack="dlib")


@pytest.fixture(scope="module")
def photos():
    return small_copy("obama.jpg"), small_copy("biden.jpg")


def _req(face, **kw):
    kw.setdefault("width", W)
    kw.setdefault("height", H)
    return GenerationRequest(face_image=face, prompt="two friends at a cafe", num_inference_steps=2, seed=3, **kw)


def _pixels(result):
    return np.stack([np.asarray(im.image) for im in result.images])


def test_face_box_on_the_mapped_face_equals_the_single_person_path(engine, photos):
    """One person whose box is exactly where today's path puts its face: bit-identical."""
    from faceanchor.methods.instantid import map_points

    obama, _ = photos
    ident = engine.identity(_req(obama))
    box = map_points(np.asarray(ident.bbox).reshape(2, 2), ident.image_size, (64, 64)).reshape(4)
    plain = engine.generate(_req(obama, width=64, height=64))
    boxed = engine.generate(_req(obama, width=64, height=64, face_box=[float(v) for v in box]))
    assert np.array_equal(_pixels(plain), _pixels(boxed))


def test_a_second_person_at_zero_strength_changes_nothing(engine, photos):
    obama, biden = photos
    alone = engine.generate(_req(obama, face_box=LEFT))
    silent = engine.generate(_req(obama, face_box=LEFT, more_identities=[
        PlacedIdentity(face_image=biden, box=RIGHT, identity_strength=0.0, adapter_strength=0.0)]))
    assert np.array_equal(_pixels(alone), _pixels(silent))


def test_two_people_get_a_score_each(engine, photos):
    obama, biden = photos
    two = engine.generate(_req(obama, face_box=LEFT, samples=2, more_identities=[PlacedIdentity(face_image=biden, box=RIGHT)]))
    alone = engine.generate(_req(obama, face_box=LEFT, samples=2))
    assert np.abs(_pixels(two).astype(int) - _pixels(alone).astype(int)).max() > 0
    meta = two.metadata()
    assert len(meta["identity_scores_per_person"]) == 2 and all(len(s) == 2 for s in meta["identity_scores_per_person"])
    for im in two.images:  # tiny weights draw no faces: each person's score is null, with the reason
        assert im.identity_score is None or im.identity_score == min(im.identity_scores)
        if im.identity_score is None:
            assert "region" in im.identity_reason
    assert meta["params"]["more_identities"][0]["box"] == RIGHT


def test_people_from_a_pose_photo_left_to_right(engine, photos, tmp_path):
    """A pose photo with two faces: person 1 takes the left face, person 2 the right one."""
    from PIL import Image

    obama, biden = photos
    a, b = Image.open(obama).convert("RGB"), Image.open(biden).convert("RGB")
    h = min(a.height, b.height)
    a, b = a.resize((a.width * h // a.height, h)), b.resize((b.width * h // b.height, h))
    group = Image.new("RGB", (a.width + b.width, h))
    group.paste(a, (0, 0))
    group.paste(b, (a.width, 0))
    path = tmp_path / "group.jpg"
    group.save(path)
    res = engine.generate(_req(obama, pose_image=str(path), more_identities=[PlacedIdentity(face_image=biden)]))
    assert len(res.images) == 1 and len(res.images[0].identity_scores) == 2
    # person 2 on the left face too collides with person 1; a third face does not exist
    with pytest.raises(InvalidInputError, match="overlap"):
        engine.generate(_req(obama, pose_image=str(path), more_identities=[PlacedIdentity(face_image=biden, pose_index=0)]))
    from faceanchor.errors import NoFaceError

    with pytest.raises(NoFaceError, match="2 face"):
        engine.generate(_req(obama, pose_image=str(path), more_identities=[PlacedIdentity(face_image=biden, pose_index=2)]))


def test_refusals(engine, photos):
    obama, biden = photos
    with pytest.raises(InvalidInputError, match="needs a place"):
        engine.generate(_req(obama, more_identities=[PlacedIdentity(face_image=biden)]))
    with pytest.raises(InvalidInputError, match="overlap"):
        engine.generate(_req(obama, face_box=LEFT, more_identities=[PlacedIdentity(face_image=biden, box=[32, 0, 128, 64])]))
    with pytest.raises(InvalidInputError, match="faceid places each person by a box"):
        engine.generate(GenerationRequest(method="faceid", face_image=obama, prompt="x", width=W, height=H,
                                          more_identities=[PlacedIdentity(face_image=biden, box=RIGHT)]))


@pytest.mark.parametrize("method", ["faceid", "faceid-plusv2", "faceid-portrait"])
def test_faceid_family_two_people(engine, photos, method):
    """FaceID: a silent second person changes nothing; an active one changes the picture; a score each."""
    obama, biden = photos
    base = dict(method=method, face_image=obama, prompt="two friends", width=W, height=H, num_inference_steps=2, seed=4, face_box=LEFT)
    alone = engine.generate(GenerationRequest(**base))
    silent = engine.generate(GenerationRequest(**base, more_identities=[PlacedIdentity(face_image=biden, box=RIGHT, adapter_strength=0.0)]))
    assert np.array_equal(_pixels(alone), _pixels(silent))
    two = engine.generate(GenerationRequest(**base, more_identities=[PlacedIdentity(face_image=biden, box=RIGHT)]))
    assert np.abs(_pixels(two).astype(int) - _pixels(alone).astype(int)).max() > 0
    assert len(two.images[0].identity_scores) == 2


def test_two_people_over_the_http_api_and_no_server_paths(tmp_path, photos):
    """POST /v1/instantid with a second person (base64) gives a PNG with both scores; a server
    path as that person's photo is refused at submit, never opened."""
    import base64
    import json

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
    from api_helpers import Harness

    from faceanchor.engine import Engine
    from faceanchor.imageio import read_metadata

    obama, biden = photos
    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0, device="cpu")
    enc = lambda p: base64.b64encode(Path(p).read_bytes()).decode()  # noqa: E731
    body = {"face_image": enc(obama), "prompt": "two friends", "width": W, "height": H, "num_inference_steps": 1, "seed": 1,
            "face_box": LEFT, "more_identities": [{"face_image": enc(biden), "box": RIGHT, "adapter_strength": 0.5}]}
    with Harness(settings, Engine(settings, weights="tiny", face_pack="dlib")) as h:
        r = h.client.post("/v1/instantid", json=body, headers=h.headers)
        assert r.status_code == 200, r.text
        meta = read_metadata(r.content)
        assert len(meta["identity_scores_per_person"][0]) == 2
        secret = tmp_path / "secret.png"
        secret.write_bytes(Path(obama).read_bytes())
        bad = dict(body, more_identities=[{"face_image": str(secret), "box": RIGHT}])
        r = h.client.post("/v1/instantid", json=bad, headers=h.headers)
        assert 400 <= r.status_code < 500 and "more_identities[0].face_image" in json.dumps(r.json())


@pytest.mark.slow  # a 512x256 tiny run (dlib needs faces of ~100 px): 30-100 s on a busy machine
def test_scores_per_person_and_best_of_keeps_the_highest_lowest(engine, monkeypatch):
    """Best-of ranks two-person outputs by the lower of the two scores. The model's images are
    replaced by real photos side by side (tiny weights draw no faces): a "drifted" candidate whose
    person 1 is the reference photo itself but whose person 2 turned into person 1, and a good one
    (another photo of person 1, person 2 right). dlib scores each region's face against its own
    person; the good candidate wins although the drifted one has the higher person-1 score."""
    from PIL import Image, ImageOps

    from faceanchor.face.analyzer import FaceAnalyzer

    faces = Path(__file__).resolve().parents[1] / "data" / "faces"
    half = lambda name: ImageOps.pad(Image.open(faces / name).convert("RGB"), (256, 256))  # noqa: E731

    def pair(left, right):
        im = Image.new("RGB", (512, 256))
        im.paste(half(left), (0, 0))
        im.paste(half(right), (256, 0))
        return im

    drifted, good = pair("obama.jpg", "obama2.jpg"), pair("obama2.jpg", "biden.jpg")
    method = engine.method("instantid")
    real_run = method.run

    def run(loaded, ctx):  # noqa: ANN001, ANN202
        images = real_run(loaded, ctx)  # sets the regions; the pictures are then swapped for the photos
        assert len(images) == 2
        return [drifted, good]

    monkeypatch.setattr(method, "run", run)
    monkeypatch.setattr(engine.settings, "work_megapixels_sdxl", 100.0)  # tiny weights cap 512x256 to 192x64 otherwise
    req = GenerationRequest(face_image=str(faces / "obama.jpg"), prompt="two friends", width=512, height=256, num_inference_steps=1,
                            seed=11, best_of=2, face_box=[0, 0, 256, 256],
                            more_identities=[PlacedIdentity(face_image=str(faces / "biden.jpg"), box=[256, 0, 512, 256])])
    res = engine.generate(req)
    assert len(res.images) == 1 and res.images[0].seed == 12  # the second candidate: the good one
    kept = res.images[0]
    assert np.array_equal(np.asarray(kept.image), np.asarray(good)) and kept.identity_score == min(kept.identity_scores)
    # the same numbers from dlib directly: each half's face against that person's own photo
    an = FaceAnalyzer(engine.settings, "dlib").prepare()
    ref = {n: an.get_face(np.asarray(Image.open(faces / n).convert("RGB"))).embedding for n in ("obama.jpg", "biden.jpg")}

    def cos(im, box, who):
        f = an.get_face(np.asarray(im.crop(box)))
        a, b = np.asarray(f.embedding, np.float64), np.asarray(ref[who], np.float64)
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    L, R = (0, 0, 256, 256), (256, 0, 512, 256)
    good_scores = [cos(good, L, "obama.jpg"), cos(good, R, "biden.jpg")]
    drifted_scores = [cos(drifted, L, "obama.jpg"), cos(drifted, R, "biden.jpg")]
    assert np.allclose(kept.identity_scores, good_scores, atol=0.02), (kept.identity_scores, good_scores)
    assert drifted_scores[0] > good_scores[0] and min(drifted_scores) < min(good_scores), (drifted_scores, good_scores)


@pytest.mark.parametrize("method, asked, left, right", [
    ("instantid", (256, 128), [0, 0, 128, 128], [128, 0, 256, 128]),
    ("faceid", (128, 128), [0, 32, 64, 96], [64, 32, 128, 96]),
])
def test_boxes_follow_the_working_size_cap(engine, photos, method, asked, left, right):
    """Boxes are in the pixels asked for: a size above tiny weights' working-size cap is scaled down
    (then rounded to the grid), and the boxes shrink with it, giving bit for bit the picture asked
    at the capped size with the boxes scaled to it."""
    obama, biden = photos
    big = engine.generate(_req(obama, method=method, width=asked[0], height=asked[1], face_box=left,
                               more_identities=[PlacedIdentity(face_image=biden, box=right)]))
    w, h = big.images[0].image.size
    assert w * h < asked[0] * asked[1]
    sx, sy = w / asked[0], h / asked[1]
    scale = lambda b: [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]  # noqa: E731
    small = engine.generate(_req(obama, method=method, width=w, height=h, face_box=scale(left),
                                 more_identities=[PlacedIdentity(face_image=biden, box=scale(right))]))
    assert np.array_equal(_pixels(big), _pixels(small))
