"""The character nodes in a graph (create / pick, generate, ID photo) and Edit, on tiny seeded
weights and the offline dlib pack, against the library's own results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from graph_helpers import ASK, OBAMA, photo_tensor, run, tiny_engine, u8  # noqa: E402

from faceanchor.comfyui.images import from_images, to_images  # noqa: E402
from faceanchor.imageio import load_image  # noqa: E402

pytestmark = pytest.mark.slow  # about 30 s alone, more than a minute on a loaded 2-core machine


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def photo():
    return photo_tensor()


def test_character_create_pick_and_generate_equal_the_library(engine, photo):
    created, info = run("FaceAnchorCharacter", engine=engine, action="create", name="Barack", image=photo)
    picked, info2 = run("FaceAnchorCharacter", engine=engine, action="pick", name="Barack")
    assert picked.character_id == created.character_id == json.loads(info)["id"] == json.loads(info2)["id"]
    images, meta, _ = run("FaceAnchorGenerate", engine=engine, identity=picked, **ASK)
    svc = engine.characters
    req = svc.request_for(svc.get(picked.character_id), dict(ASK), engine.engine)
    lib = engine.engine.generate(req)
    assert np.array_equal(u8(images)[0], np.asarray(lib.images[0].image))
    assert json.loads(meta)["params"]["character_id"] == picked.character_id
    assert svc.get(picked.character_id).generations == 1  # recorded in its history
    with pytest.raises(Exception, match="no character named 'Nobody'"):
        run("FaceAnchorCharacter", engine=engine, action="pick", name="Nobody")


def test_edit_keeps_the_rest_and_reports_the_changed_mask(engine, photo):
    identity, *_ = run("FaceAnchorFaceAnalysis", engine=engine, image=photo)
    target = to_images([load_image(OBAMA).resize((128, 128))])
    image, changed, info, _ = run("FaceAnchorEdit", engine=engine, identity=identity, image=target, mode="face",
                                  num_inference_steps=2, seed=3)
    assert tuple(image.shape) == (1, 128, 128, 3) and tuple(changed.shape) == (1, 128, 128)
    frac = float(changed.float().mean())
    assert 0.0 < frac < 1.0  # a face region changed, the rest kept exactly
    keep = ~changed[0].numpy().astype(bool)
    assert np.array_equal(u8(image)[0][keep], u8(target)[0][keep])
    assert json.loads(info)["params"]["edit"]["mode"] == "face"


def test_id_photo_gives_the_sheet_and_four_views(engine, photo):
    identity, *_ = run("FaceAnchorFaceAnalysis", engine=engine, image=photo)
    sheet, views, info = run("FaceAnchorIDPhoto", engine=engine, identity=identity, width=64, height=64, num_inference_steps=1, seed=2)
    assert tuple(views.shape) == (4, 64, 64, 3)
    from faceanchor.character.idphoto import compose_sheet

    expected, _ = compose_sheet(from_images(views))  # the library's sheet of these four views
    assert np.array_equal(u8(sheet)[0], np.asarray(expected))
    meta = json.loads(info)
    assert [v["view"] for v in meta["params"]["id_photo"]["views"]] == ["front", "left", "right", "smiling"]
