"""The nodes on a remote engine: a live faceanchor server (uvicorn on loopback, tiny weights)
reached through faceanchor.client; the images equal the server engine's own for the same request."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "client"))
from client_helpers import LiveServer  # noqa: E402
from photos import small_copy  # noqa: E402

from faceanchor.comfyui import NODE_CLASS_MAPPINGS as NODES  # noqa: E402
from faceanchor.comfyui.images import to_images  # noqa: E402
from faceanchor.errors import Cancelled, InvalidInputError  # noqa: E402
from faceanchor.imageio import load_image  # noqa: E402
from faceanchor.types import GenerationRequest  # noqa: E402

OBAMA = small_copy("obama.jpg")
pytestmark = pytest.mark.slow  # a live server on tiny weights: about a minute on a loaded 2-core machine
ASK = dict(prompt="a portrait", width=64, height=64, num_inference_steps=2, seed=11)


def run(key, **inputs):
    cls = NODES[key]
    spec = cls.INPUT_TYPES()
    values = {n: inputs.get(n, inp[1].get("default") if len(inp) == 2 else None) for n, inp in spec["required"].items()}
    values.update({k: v for k, v in inputs.items() if k in spec.get("optional", {})})
    return getattr(cls(), cls.FUNCTION)(**values)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from faceanchor.config import Settings
    from faceanchor.engine import Engine

    # watermark off: the remote image is compared pixel for pixel with the engine's (the mark is tested in tests/trust)
    settings = Settings(home=tmp_path_factory.mktemp("home"), rate_limit_per_minute=0, face_pack="dlib", device="cpu", watermark=False)
    with LiveServer(settings, Engine(settings, weights="tiny", face_pack="dlib")) as server:
        yield server


@pytest.fixture(scope="module")
def remote(live):
    (engine,) = run("FaceAnchorLoadEngine", where="remote", server_url=live.url, api_key=live.key)
    return engine


@pytest.fixture(scope="module")
def photo():
    return to_images([load_image(OBAMA)])


def test_remote_analysis_and_generate_equal_the_servers_engine(live, remote, photo):
    identity, report, preview, faces = run("FaceAnchorFaceAnalysis", engine=remote, image=photo)
    rep = json.loads(report)
    assert faces == 1 and rep["pack"] == "dlib" and rep["references"][0]["faces"][0]["quality"]["size_px"] > 20
    assert tuple(preview.shape) == tuple(photo.shape)
    images, info, _ = run("FaceAnchorGenerate", engine=remote, identity=identity, **ASK)
    assert tuple(images.shape) == (1, 64, 64, 3)
    meta = json.loads(info)
    assert meta["seed"] == 11 and meta["request_id"]
    lib = live.engine.generate(GenerationRequest(face_image=OBAMA, face_index=0, **ASK))
    assert np.array_equal(np.round(images.numpy()[0] * 255).astype(np.uint8), np.asarray(lib.images[0].image))


def test_remote_character_create_pick_generate(remote, photo):
    created, _ = run("FaceAnchorCharacter", engine=remote, action="create", name="Remote Barack", image=photo)
    picked, info = run("FaceAnchorCharacter", engine=remote, action="pick", name="Remote Barack")
    assert picked.character_id == created.character_id == json.loads(info)["id"]
    images, meta, _ = run("FaceAnchorGenerate", engine=remote, identity=picked, **ASK)
    assert tuple(images.shape) == (1, 64, 64, 3) and json.loads(meta)["params"]["character_id"] == picked.character_id


def test_a_cancel_check_cancels_the_servers_job(live, remote, photo):
    identity, *_ = run("FaceAnchorFaceAnalysis", engine=remote, image=photo)
    from faceanchor.comfyui.widgets import request_fields, request_widgets

    fields, _ = request_fields({**{k: v[1]["default"] for k, v in request_widgets().items()}, **ASK, "num_inference_steps": 50}, "instantid")
    submitted = []
    real_submit = remote.client.submit

    def spy(app, args, **kw):
        handle = real_submit(app, args, **kw)
        submitted.append(handle)
        return handle

    remote.client.submit = spy
    try:
        with pytest.raises(Cancelled):
            remote.generate(identity, fields, cancel=lambda: bool(submitted))
    finally:
        remote.client.submit = real_submit
    handle = submitted[0]
    deadline = time.time() + 30
    while (status := remote.client.status(handle.app, handle.request_id)).status != "CANCELLED" and time.time() < deadline:
        time.sleep(0.1)
    assert status.status == "CANCELLED"


def test_scoring_on_a_remote_engine_is_a_clear_error(remote, photo):
    identity, *_ = run("FaceAnchorFaceAnalysis", engine=remote, image=photo)
    with pytest.raises(InvalidInputError, match="need a local engine"):
        run("FaceAnchorIdentityScore", engine=remote, identity=identity, image=photo)


def test_remote_id_photo_and_edit(remote, photo):
    identity, *_ = run("FaceAnchorFaceAnalysis", engine=remote, image=photo)
    sheet, views, info = run("FaceAnchorIDPhoto", engine=remote, identity=identity, width=64, height=64, num_inference_steps=1, seed=2)
    assert tuple(views.shape) == (4, 64, 64, 3) and sheet.shape[0] == 1
    target = to_images([load_image(OBAMA).resize((128, 128))])
    image, changed, info, _ = run("FaceAnchorEdit", engine=remote, identity=identity, image=target, mode="face", strength=0.5,
                                  num_inference_steps=2, seed=3)
    assert tuple(image.shape) == (1, 128, 128, 3) and 0.0 < float(changed.float().mean()) < 1.0
    assert json.loads(info)["params"]["edit"]["strength"] == 0.5
