"""`faceanchor keys create|list|revoke` and the serve command's engine-factory loading."""

import pytest
from api_helpers import Harness, b64, png_bytes, tiny
from typer.testing import CliRunner

from faceanchor.cli.app import build_app
from faceanchor.cli.serve import load_factory
from faceanchor.config import Settings
from faceanchor.errors import InvalidInputError


def test_keys_cli_round_trip(tmp_path):
    runner = CliRunner()
    app = build_app()
    home = ["--home", str(tmp_path)]
    r = runner.invoke(app, [*home, "keys", "create", "--name", "ci", "--rate-limit", "7"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert key.startswith("fa_")
    r = runner.invoke(app, [*home, "keys", "list"])
    key_id = key.split("_")[1]
    assert key_id in r.stdout and "active" in r.stdout and "7/min" in r.stdout and key not in r.stdout
    # the key works against an app on the same home, then is revoked
    settings = Settings(home=tmp_path, rate_limit_per_minute=0)
    with Harness(settings, tiny.TinyEngine()) as hz:
        body = {"face_image": b64(png_bytes()), "num_inference_steps": 1}
        assert hz.client.post("/queue/instantid", json=body, headers={"x-api-key": key}).status_code == 200
        assert runner.invoke(app, [*home, "keys", "revoke", key_id]).exit_code == 0
        assert hz.client.post("/queue/instantid", json=body, headers={"x-api-key": key}).status_code == 403
    assert "revoked" in runner.invoke(app, [*home, "keys", "list"]).stdout


def test_load_factory_specs(tmp_path):
    path = tmp_path / "eng.py"
    path.write_text("def make(settings):\n    return ('engine', settings)\n")
    assert load_factory(f"{path}:make")(1) == ("engine", 1)
    assert load_factory("faceanchor.cli.serve:default_engine_factory").__name__ == "default_engine_factory"
    for bad in ("nocolon", f"{path}:missing", "no.such.module:x", f"{tmp_path}/absent.py:f"):
        with pytest.raises(InvalidInputError):
            load_factory(bad)
