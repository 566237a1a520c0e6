"""`faceanchor remote generate|health` against a live server on loopback (uvicorn in a thread,
the tiny test engine), through faceanchor.client."""

import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

import tiny_engine  # noqa: E402
from client_helpers import LiveServer, face_jpeg, noise_png  # noqa: E402

from faceanchor.cli.app import main  # noqa: E402


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from faceanchor.config import Settings

    settings = Settings(home=tmp_path_factory.mktemp("home"), rate_limit_per_minute=0, job_lease_seconds=1, face_pack="dlib")
    with LiveServer(settings, tiny_engine.TinyEngine(step_delay=0.05)) as server:
        yield server


@pytest.fixture
def env(live, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path / "client-home"))
    monkeypatch.setenv("FACEANCHOR_SERVER", live.url)
    monkeypatch.setenv("FACEANCHOR_API_KEY", live.key)
    return live


def _exit(argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code


def test_health(env, capsys):
    main(["remote", "health"])
    out = capsys.readouterr().out
    assert '"status": "ready"' in out and '"workers": 1' in out


def test_generate_from_a_face_writes_the_images_and_shows_progress(env, tmp_path, capsys):
    face = tmp_path / "face.png"
    face.write_bytes(noise_png())
    main(["remote", "generate", "--face", str(face), "--prompt", "a portrait", "--seed", "7", "--samples", "2",
          "--steps", "8", "--width", "64", "--height", "128", "--out", str(tmp_path / "out")])
    cap = capsys.readouterr()
    paths = cap.out.split()
    assert [Path(p).name for p in paths] == ["faceanchor_7_0.png", "faceanchor_8_1.png"]
    assert all(Image.open(p).size == (64, 128) for p in paths)
    assert Image.open(paths[0]).getpixel((0, 0)) != Image.open(paths[1]).getpixel((0, 0))  # two seeds, two colours
    lines = cap.err.splitlines()
    assert lines[-1] == "COMPLETED" and any(line.startswith("IN_PROGRESS denoise") for line in lines), lines
    assert not list((tmp_path / "out").glob(".*part"))  # written whole


def test_generate_with_a_character(env, tmp_path, capsys):
    from faceanchor.client import Client

    with Client(env.url, env.key) as fa:
        ch = fa.create_character("Barack", face_jpeg())
    main(["remote", "generate", "--character", ch.id, "--prompt", "in a garden", "--seed", "3", "--steps", "1",
          "--out", str(tmp_path), "--quiet"])
    cap = capsys.readouterr()
    assert cap.err == "" and Path(cap.out.strip()).name == "faceanchor_3_0.png"
    with Client(env.url, env.key) as fa:
        assert [e.kind for e in fa.character_history(ch.id).entries] == ["generate"]


@pytest.mark.parametrize("argv,needle", [
    (["--prompt", "p"], "give --face PHOTO or --character ID"),
    (["--prompt", "p", "--face", "nope.jpg"], "--face nope.jpg: no such file"),
    (["--prompt", "p", "--character", "no-such"], "the server answered 404 not_found"),
    (["--prompt", "p", "--face", "FACE", "--method", "nope"], "--method 'nope': the server runs"),
    (["--prompt", "p", "--face", "GREY"], "the server answered"),
    (["--prompt", "p", "--face", "FACE", "--server", "gpu:8000"], "give an http(s) URL"),
    (["--prompt", "p", "--face", "FACE", "--key", "wrong"], "the server answered 401"),
    (["--prompt", "p", "--face", "FACE", "--steps", "0"], "--steps"),
])
def test_errors_are_one_line_and_exit_2(env, tmp_path, capsys, argv, needle):
    face = tmp_path / "face.png"
    face.write_bytes(noise_png())
    grey = tmp_path / "grey.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey)
    argv = [{"FACE": str(face), "GREY": str(grey)}.get(a, a) for a in argv]
    assert _exit(["remote", "generate", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    *progress, last = err.splitlines()
    assert last.startswith("error: ") and needle in last and "Traceback" not in err, err
    assert all(line in ("IN_QUEUE", "IN_PROGRESS", "FAILED") or line.startswith("IN_PROGRESS ") for line in progress), err


def test_unreachable_server(monkeypatch, tmp_path, capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path))
    assert _exit(["remote", "health", "--server", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
