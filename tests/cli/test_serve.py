"""`faceanchor serve --weights`: the weights kind reaches the settings the app and its engine get."""

import pytest

from faceanchor.cli.app import main


@pytest.mark.parametrize("flag,env,expected", [(["--weights", "tiny"], None, "tiny"), ([], "dummy", "dummy"),
                                               (["--weights", "tiny"], "dummy", "tiny"), ([], None, "real")])
def test_serve_weights(tmp_path, monkeypatch, flag, env, expected):
    import uvicorn

    import faceanchor.api.app as api_app

    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path))
    if env:
        monkeypatch.setenv("FACEANCHOR_WEIGHTS", env)
    else:
        monkeypatch.delenv("FACEANCHOR_WEIGHTS", raising=False)
    seen = {}

    def create_app(settings, engine_factory):
        seen["weights"] = settings.weights
        seen["settings"] = settings
        seen["factory"] = engine_factory
        return "app"

    monkeypatch.setattr(api_app, "create_app", create_app)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, port=kw["port"]))
    main(["serve", "--port", "8123", "--no-mcp", *flag])
    assert seen["weights"] == expected and seen["app"] == "app" and seen["port"] == 8123
    assert seen["factory"].__name__ == "default_engine_factory"
    from faceanchor.engine import Engine

    assert Engine(seen["settings"]).weights == expected  # what default_engine_factory builds (before warmup)
