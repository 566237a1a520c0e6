"""Characters end to end on the tiny engine with the offline dlib pack: creation, generation from
stored identities (no face analysis), the 4-in-1 ID photo, edits and the face-detail pass."""

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceanchor.character.edit import crop_box, feather_alpha
from faceanchor.character.idphoto import VIEWS, compose_sheet
from faceanchor.config import Settings
from faceanchor.engine import Engine
from faceanchor.errors import EmbeddingMismatchError, InvalidInputError, NoFaceError
from faceanchor.imageio import read_metadata
from faceanchor.service.characters import CharacterService
from faceanchor.store.characters import NAMESPACE, CharacterNotFoundError
from faceanchor.store.db import Database
from faceanchor.store.files import FileStore
from faceanchor.types import GenerationRequest

sys.path.insert(0, str(Path(__file__).parent))
from photos import FACES, small_copy  # noqa: E402
FIELDS = dict(prompt="a portrait", width=64, height=64, num_inference_steps=2, seed=5)


OBAMA = small_copy("obama.jpg")
SMALL_OBAMA = small_copy("obama.jpg", 200)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home, device="cpu")
    engine = Engine(settings, weights="tiny", face_pack="dlib")
    db = Database(f"sqlite:///{home / 'db.sqlite'}")
    db.create_all()
    chars = CharacterService(settings, db, FileStore(home / "files"))
    ch = chars.create("Barack", [OBAMA], engine=engine)
    yield engine, chars, ch
    db.dispose()


def _exif_jpeg() -> bytes:
    im = Image.open(OBAMA)
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x0112] = 1
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def test_create_stores_a_clean_photo_and_the_identity(env):
    engine, chars, _ = env
    ch = chars.create("Exif", [_exif_jpeg()], engine=engine)
    assert ch.spaces == ["dlib"] and len(ch.photos) == 1
    data = chars.store.get_file(ch.photos[0])
    assert data.startswith(b"\x89PNG") and b"SecretCam" not in data
    assert "exif" not in Image.open(io.BytesIO(data)).info
    ident = ch.identities_for("dlib")[0]
    assert ident.embedding.shape == (128,) and ident.kps.shape == (5, 2) and ident.image_size == Image.open(OBAMA).size
    assert ident.quality is not None and ident.photo_file == ch.photos[0]
    chars.delete(ch.id)


def test_create_refuses_bad_input(env):
    engine, chars, _ = env
    buf = io.BytesIO()
    Image.new("RGB", (120, 120), (128, 128, 128)).save(buf, "PNG")
    with pytest.raises(NoFaceError):
        chars.create("Nobody", [buf.getvalue()], engine=engine)
    with pytest.raises(InvalidInputError):
        chars.create("", [OBAMA], engine=engine)
    with pytest.raises(InvalidInputError):
        chars.create("x", [], engine=engine)
    assert all(c.name != "Nobody" for c in chars.list())


def test_generation_from_a_character_runs_no_face_analysis(env, monkeypatch):
    engine, chars, ch = env
    an = engine.analyzer("dlib")
    calls = {"get_face": 0, "detect": [], "embed": []}

    def size(img):
        return tuple(img.size) if hasattr(img, "size") and not isinstance(img, np.ndarray) else img.shape[1::-1]

    def count(name, orig):
        def wrapper(*a, **k):
            if name in ("detect", "embed"):
                calls[name].append(size(a[0]))
            elif name == "detect_many":  # scoring: every output in one call
                calls["detect"].extend(size(img) for img in a[0])
            elif name == "embed_many":
                calls["embed"].extend(size(img) for img, _ in a[0])
            else:
                calls[name] += 1
            return orig(*a, **k)
        return wrapper

    for name in ("get_face", "detect", "embed", "detect_many", "embed_many"):
        monkeypatch.setattr(an, name, count(name, getattr(an, name)))
    res = chars.generate(engine, FIELDS, character_id=ch.id)
    assert calls["get_face"] == 0
    # the detector ran only to score the 64x64 output, never on the reference photo
    assert calls["detect"] == [(64, 64)] and calls["embed"] == []
    assert res.images[0].identity_score is None and "no face" in res.images[0].identity_reason
    assert res.params["face_space"] == "dlib" and res.params["character_id"] == ch.id
    # a plain photo request does analyse the photo: the counter works
    engine.generate(GenerationRequest(face_image=OBAMA, **FIELDS))
    assert calls["get_face"] == 1
    hist = chars.history(ch.id)
    assert hist[0].kind == "generate" and hist[0].outputs[0]["seed"] == 5
    assert chars.store.get_file(hist[0].outputs[0]["file_id"]).startswith(b"\x89PNG")


def test_same_seed_same_image_from_stored_identity_as_from_the_photo(env):
    engine, chars, ch = env
    # (the region mask differs: from stored keypoints the engine pads a box around them)
    fields = dict(FIELDS, enhance_face_region=False)
    a = chars.generate(engine, fields, character_id=ch.id).images[0].image
    b = engine.generate(GenerationRequest(face_image=OBAMA, **fields)).images[0].image
    assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1


def test_character_errors(env):
    engine, chars, ch = env
    with pytest.raises(CharacterNotFoundError):
        chars.generate(engine, FIELDS, character_id="0" * 32)
    with pytest.raises(InvalidInputError, match="face_image"):
        chars.generate(engine, dict(FIELDS, face_image=OBAMA), character_id=ch.id)
    with pytest.raises(EmbeddingMismatchError, match="views"):  # no ID-photo view held a face (tiny model)
        chars.generate(engine, FIELDS, character_id=ch.id, references="views")
    with pytest.raises(InvalidInputError, match="references"):
        chars.generate(engine, FIELDS, character_id=ch.id, references="everything")
    with pytest.raises(InvalidInputError):
        chars.generate(engine, FIELDS)


def test_sheet_layout():
    ims = [Image.new("RGB", (30, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))]
    sheet, boxes = compose_sheet(ims, gutter=4)
    assert sheet.size == (2 * 30 + 12, 2 * 40 + 12)
    assert boxes == [(4, 4, 34, 44), (38, 4, 68, 44), (4, 48, 34, 88), (38, 48, 68, 88)]
    for im, (x1, y1, x2, y2) in zip(ims, boxes):
        assert np.array_equal(np.asarray(sheet.crop((x1, y1, x2, y2))), np.asarray(im))
    with pytest.raises(InvalidInputError):
        compose_sheet(ims[:3])


def test_id_photo_from_a_character(env):
    engine, chars, ch = env
    res = chars.id_photo(engine, dict(FIELDS, seed=9), character_id=ch.id)
    sheet = res.images[0].image
    assert sheet.size == (2 * 64 + 3 * 8, 2 * 64 + 3 * 8) and len(res.images) == 5
    meta = res.params["id_photo"]
    assert meta["order"] == ["front", "left", "right", "smiling"] == [v[0] for v in VIEWS]
    views = meta["views"]
    assert [v["yaw"] for v in views] == [0.0, -45.0, 45.0, 0.0]
    for v, im in zip(views, res.images[1:]):
        assert tuple(v["box"]) and im.image.size == (64, 64) and v["seed"] == 9
        assert v["identity_score"] is None and "no face" in v["identity_reason"]
        x1, y1, x2, y2 = v["box"]
        assert np.array_equal(np.asarray(sheet.crop((x1, y1, x2, y2))), np.asarray(im.image))
    kps = {v["view"]: np.asarray(v["kps"]) for v in views}
    assert kps["left"][2, 0] < kps["front"][2, 0] < kps["right"][2, 0]
    assert np.linalg.norm(kps["left"][1] - kps["left"][0]) < np.linalg.norm(kps["front"][1] - kps["front"][0])
    got = chars.get(ch.id)
    assert got.sheet_file and [v["view"] for v in got.views] == ["front", "left", "right", "smiling"]
    stored = read_metadata(chars.store.get_file(got.sheet_file))
    assert stored["layout"] == "2x2" and stored["order"] == ["front", "left", "right", "smiling"]
    assert chars.history(ch.id)[0].kind == "id-photo"
    # the views held no face (tiny model): none became a reference
    assert res.params["views_as_references"] == 0


def test_edit_face_changes_only_the_face_crop(env):
    engine, chars, ch = env
    target = Image.open(SMALL_OBAMA).convert("RGB")
    res = chars.edit(engine, FIELDS, SMALL_OBAMA, mode="face", character_id=ch.id)
    out = res.images[0].image
    info = res.params["edit"]
    x1, y1, x2, y2 = info["box"]
    a, b = np.asarray(target), np.asarray(out)
    outside = np.ones(a.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert out.size == target.size
    assert np.array_equal(a[outside], b[outside])
    assert np.abs(a[~outside].astype(int) - b[~outside]).mean() > 1
    assert info["identity_score_before"] is not None  # the target is a real photo of him
    assert chars.history(ch.id)[0].kind == "edit"


def test_edit_background_keeps_the_person_pixels(env):
    from faceanchor.character.edit import edit_background

    engine, chars, ch = env
    target_img = Image.open(SMALL_OBAMA).convert("RGB")
    target = np.asarray(target_img)
    request = chars.request_for(chars.get(ch.id), dict(FIELDS, prompt="on a beach"), engine)
    for source in ("face-box", "auto"):
        res = edit_background(engine, request, target_img, mask_source=source)
        out = np.asarray(res.image)
        edited = np.asarray(res.mask) > 0
        assert 0.05 < edited.mean() < 0.95 and res.info["mask_source"] in ("face-box", "segmentation")
        assert np.array_equal(out[~edited], target[~edited])  # the person: exactly unchanged
        assert np.abs(out[edited].astype(int) - target[edited]).mean() > 1  # the rest: regenerated
        if source == "face-box":
            assert res.info["mask_source"] == "face-box"
    res = chars.edit(engine, dict(FIELDS, prompt="on a beach"), SMALL_OBAMA, mode="background", character_id=ch.id)
    assert res.images[0].image.size == target_img.size and res.params["edit"]["mode"] == "background"
    assert chars.history(ch.id)[0].kind == "edit"
    with pytest.raises(InvalidInputError):
        chars.edit(engine, FIELDS, SMALL_OBAMA, mode="sky", character_id=ch.id)


def test_face_detail_pass_reports_scores_and_touches_only_the_face(env):
    engine, _, _ = env
    plain = engine.generate(GenerationRequest(face_image=OBAMA, **FIELDS))
    detailed = engine.generate(GenerationRequest(face_image=OBAMA, face_detail=True, **FIELDS))
    rep = detailed.params["face_detail"][0]
    assert rep["applied"] and rep["face_from"] == "control keypoints" and rep["render_size"] == 128
    assert "score_before" in rep and "score_after" in rep and rep["reason_after"]
    x1, y1, x2, y2 = rep["crop_box"]
    a, b = np.asarray(plain.images[0].image), np.asarray(detailed.images[0].image)
    outside = np.ones(a.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.abs(a[outside].astype(int) - b[outside]).max() <= 1  # same seed; only the crop re-rendered
    assert np.abs(a[~outside].astype(int) - b[~outside]).mean() > 1
    assert "face_detail" in detailed.timings


def test_crop_and_feather_helpers():
    assert crop_box(np.array([40, 40, 60, 70]), (100, 100)) == (23, 28, 77, 82)
    assert crop_box(np.array([0, 0, 90, 90]), (100, 80)) == (5, 0, 85, 80)  # clipped to the image, centred
    a = feather_alpha((40, 40))
    assert a[20, 20] == 1.0 and a[0, :].max() == 0 and a[:, 0].max() == 0 and a[-1, :].max() == 0


def test_delete_removes_the_character_files(env, tmp_path):
    engine, chars, _ = env
    ch = chars.create("Temp", [small_copy("obama2.jpg")], engine=engine)
    chars.generate(engine, FIELDS, character_id=ch.id)
    files = set(ch.photos) | {o["file_id"] for h in chars.history(ch.id) for o in h.outputs}
    assert all(chars.store.get_file(f) for f in files)
    chars.delete(ch.id)
    assert not any(chars.store.files.path(f, NAMESPACE) for f in files)
    with pytest.raises(CharacterNotFoundError):
        chars.get(ch.id)


def test_id_photo_face_region_follows_each_views_keypoints(env, monkeypatch):
    """A stored face box is in the reference photo's coordinates: the views (own canvas and
    keypoints) must not reuse it for the face-region mask."""
    from faceanchor.character.idphoto import id_photo
    from faceanchor.types import GeneratedImage, GenerationResult

    engine = env[0]
    seen = []

    def fake_generate(request, on_progress=None, cancel=None):
        seen.append(request)
        return GenerationResult(images=[GeneratedImage(Image.new("RGB", (64, 64)), request.seed)], seed=request.seed)

    monkeypatch.setattr(engine, "generate", fake_generate)
    kps = [[780.0, 760.0], [840.0, 760.0], [810.0, 800.0], [785.0, 840.0], [835.0, 840.0]]
    request = GenerationRequest(face_embedding=[0.1] * 128, face_embedding_space="dlib", face_kps=kps,
                                face_bbox=[740.0, 700.0, 880.0, 880.0], face_image_size=(1000, 1000), **FIELDS)
    id_photo(engine, request)
    assert len(seen) == 4
    for view_req in seen:
        method = engine.method("instantid")
        _, _, _, mask, _ = method.controls(view_req, engine.identity(view_req), engine._tools(method))
        m = np.asarray(mask)[..., 0] > 0
        x, y = np.round(np.asarray(view_req.face_kps)[2]).astype(int)
        assert m[y, x], "the face-region mask must cover the view's nose"
