"""A method is one object registered in one place: a test-only method, registered from here, shows
up in the CLI's choices and help, in ``GET /v1/methods``, gets its own ``/v1/{app}`` and queue app,
and runs through the real engine (face analysis, normalisation, seeds, progress, scoring) — with no
change to the engine, the API, the worker or the CLI."""

from __future__ import annotations

import base64
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from photos import small_copy  # noqa: E402

from faceanchor.config import Settings  # noqa: E402
from faceanchor.engine import Engine  # noqa: E402
from faceanchor.errors import InvalidInputError  # noqa: E402
from faceanchor.methods import registry  # noqa: E402
from faceanchor.methods.contract import Loaded, Method, RunContext  # noqa: E402
from faceanchor.types import GenerationRequest, ProgressEvent  # noqa: E402

OBAMA = small_copy("obama.jpg")


class Solid(Method):
    """Paints the image in a colour read off the (normalised) identity embedding it was handed."""

    name = "test-solid"
    app = "test-solid-app"
    label = "Solid colour (test)"
    families = ("sdxl",)
    space = "dlib"
    normalised = True
    fields = frozenset({"s_scale"})
    seen: list[np.ndarray] = []

    def load(self, loader, family, request, id_dim):
        return Loaded(family, pipe=None, models={"base": f"{loader.kind}:solid"})

    def run(self, loaded: Loaded, ctx: RunContext):
        emb = ctx.identity.embedding
        self.seen.append(emb)
        out = []
        for chunk, seed in enumerate(ctx.seeds):
            with ctx.stage("denoise"):
                cb = ctx.step_callback(chunk)
                for i in range(ctx.request.steps):
                    cb(None, i, None, {})
            rgb = tuple(int(abs(v) * 255) % 256 for v in emb[:3])
            out.append(Image.new("RGB", (ctx.request.width or 32, ctx.request.height or 32), rgb))
        return out


@pytest.fixture
def solid():
    m = registry.register(Solid())
    Solid.seen.clear()
    yield m
    registry.unregister(m.name)


def test_registered_method_is_listed_with_its_app(solid):
    assert registry.get("test-solid") is solid
    assert "test-solid" in registry.names() and registry.apps()["test-solid-app"] == ("test-solid",)
    with pytest.raises(InvalidInputError, match="did you mean test-solid"):
        registry.get("test-soli")
    registry.unregister("test-solid")
    with pytest.raises(InvalidInputError, match="unknown method"):
        registry.get("test-solid")


def test_registered_method_runs_through_the_engine_unchanged(solid, tmp_path):
    engine = Engine(Settings(home=tmp_path / "home", device="cpu"), weights="tiny", face_pack="dlib")
    events: list[ProgressEvent] = []
    res = engine.generate(GenerationRequest(method="test-solid", face_image=OBAMA, num_inference_steps=3, seed=4,
                                            samples=2, width=64, height=64), on_progress=events.append)
    assert [im.seed for im in res.images] == [4, 5] and res.models == {"base": "tiny:solid"}
    emb = Solid.seen[-1]
    assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-6  # the engine applied the method's rule
    raw = engine.analyzer("dlib").get_face(engine.analyzer("dlib").load(OBAMA)).embedding
    assert np.allclose(emb, raw / np.linalg.norm(raw), atol=1e-6)
    assert [e.step for e in events if e.stage == "denoise" and e.total] == [1, 2, 3, 1, 2, 3]
    assert res.params["embedding_normalised"] is True and res.params["method"] == "test-solid"
    # fields outside the method's declaration are refused; its own are taken
    with pytest.raises(InvalidInputError, match="test-solid does not use identity_strength"):
        engine.generate(GenerationRequest(method="test-solid", face_image=OBAMA, identity_strength=0.3))
    engine.generate(GenerationRequest(method="test-solid", face_image=OBAMA, s_scale=0.5, num_inference_steps=1, width=64, height=64))


def test_registered_method_is_a_cli_choice(solid, capsys, monkeypatch):
    from faceanchor.cli.app import main

    monkeypatch.setenv("COLUMNS", "400")  # one help line per option
    with pytest.raises(SystemExit) as done:
        main(["generate", "--help"])
    assert done.value.code == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "--method" in ln)
    assert "instantid" in line and "faceid-plusv2" in line and "test-solid" in line
    try:
        main(["methods", "--json"])
    except SystemExit as ok:
        assert ok.code in (0, None)
    import json

    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["test-solid"]["app"] == "test-solid-app" and listed["instantid"]["embedding_space"] == "antelopev2"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--face", OBAMA, "--method", "test-sold", "--weights", "tiny"])
    assert e.value.code == 2
    assert "unknown method 'test-sold' (did you mean test-solid?)" in capsys.readouterr().err


def test_registered_method_is_served_over_http(solid, tmp_path):
    from api_helpers import Harness

    settings = Settings(home=tmp_path / "home", rate_limit_per_minute=0)
    engine = Engine(settings, weights="tiny", face_pack="dlib")
    face = base64.b64encode(Path(OBAMA).read_bytes()).decode()
    with Harness(settings, engine) as h:
        listed = h.client.get("/v1/methods").json()
        assert "test-solid" in [m["name"] for m in listed["methods"]] and listed["apps"]["test-solid-app"] == ["test-solid"]
        r = h.client.post("/v1/test-solid-app", headers=h.headers, json={"face_image": face, "prompt": "x", "seed": 3,
                                                                        "num_inference_steps": 2, "width": 64, "height": 64})
        assert r.status_code == 200, r.text
        img = Image.open(io.BytesIO(r.content))
        assert img.size == (64, 64) and r.headers["X-Seed"] == "3"
        q = h.client.post("/queue/test-solid-app", headers=h.headers, json={"face_image": face, "num_inference_steps": 1,
                                                                            "width": 64, "height": 64})
        assert q.status_code == 200, q.text
        assert h.wait(q.json()["status_url"])["status"] == "COMPLETED"
        # refused at submit, before any queue wait: a field the method does not take
        bad = h.client.post("/queue/test-solid-app", headers=h.headers, json={"face_image": face, "pose_image": face})
        assert bad.status_code == 422 and "does not use pose_image" in bad.json()["error"]["message"]
        assert h.client.post("/v1/instantid", headers=h.headers, json={"face_image": face, "method": "test-solid"}).status_code == 400  # Segmind's code
