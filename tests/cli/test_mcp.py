"""`faceanchor mcp` (stdio / --http, embedded or --server) and `faceanchor serve --mcp/--no-mcp`:
what each builds, and its usage errors (one line, exit 2)."""

import pytest

from faceanchor.cli.app import main


def _paths(app):
    return {getattr(r, "path", None) for r in app.routes}


@pytest.fixture
def served(tmp_path, monkeypatch):
    import uvicorn

    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path))
    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    return seen


def test_serve_mounts_mcp_unless_told_not_to(served, capsys):
    main(["serve", "--port", "8124", "--weights", "tiny"])
    assert "/mcp" in _paths(served["app"]) and "/v1/characters" in served["app"].openapi()["paths"]
    assert "MCP at http://127.0.0.1:8124/mcp" in capsys.readouterr().err
    main(["serve", "--port", "8124", "--weights", "tiny", "--no-mcp"])
    assert "/mcp" not in _paths(served["app"])


def test_mcp_http_embedded_is_the_api_with_mcp(served):
    main(["mcp", "--http", "--port", "8125", "--weights", "tiny"])
    assert "/mcp" in _paths(served["app"]) and served["port"] == 8125
    assert {"/v1/characters", "/health"} <= set(served["app"].openapi()["paths"])


def test_mcp_http_in_front_of_a_server(served):
    main(["mcp", "--http", "--server", "http://gpu-box:8000", "--port", "8126"])
    assert _paths(served["app"]) == {"/mcp"} and served["host"] == "127.0.0.1"


@pytest.mark.parametrize("argv,needle", [
    (["mcp", "--server", "http://gpu-box:8000"], "--server needs an API key"),
    (["mcp", "--server", "gpu-box:8000", "--key", "k"], "give an http(s) URL"),
    (["mcp", "--server", "http://gpu-box:8000", "--key", "k", "--weights", "tiny"], "drop them with --server"),
    (["mcp", "--weights", "huge"], "'huge' is not one of"),
    (["mcp", "--port", "70000"], "--port"),
])
def test_usage_errors(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path))
    monkeypatch.delenv("FACEANCHOR_API_KEY", raising=False)
    monkeypatch.delenv("FACEANCHOR_SERVER", raising=False)
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and needle in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
