"""`faceanchor character ...` round trip on tiny weights (the dlib pack, 64x64, 1 step)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from faceanchor.cli.app import main

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"


@pytest.fixture
def run(capsys):
    def _run(home, *args):
        code = 0
        try:
            main(["--home", str(home), "--device", "cpu", "character", *args])
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return _run


def test_character_cli_round_trip(tmp_path, run):
    _run = run
    photo = tmp_path / "face.jpg"
    im = Image.open(FACES / "obama.jpg").convert("RGB")
    im.resize((300, round(im.height * 300 / im.width))).save(photo)
    home = tmp_path / "home"
    r = _run(home, "create", "Barack", "--face", str(photo), "--weights", "tiny", "--json")
    assert r.returncode == 0, r.stderr
    cid = json.loads(r.stdout)["id"]
    assert cid in _run(home, "list").stdout
    tiny = ["--weights", "tiny", "--steps", "1", "--seed", "4"]
    r = _run(home, "generate", cid, "-p", "a portrait", "--width", "64", "--height", "64", "-o", str(tmp_path / "g"), *tiny)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "g").glob("*.png"))) == 1
    r = _run(home, "id-photo", cid, "--width", "64", "--height", "64", "-o", str(tmp_path / "id"), *tiny)
    assert r.returncode == 0, r.stderr
    assert sorted(p.stem.split("_")[-1] for p in (tmp_path / "id").glob("*.png")) == ["front", "left", "right", "sheet", "smiling"]
    r = _run(home, "edit", cid, "--target", str(photo), "--mode", "face", "-o", str(tmp_path / "e"), *tiny)
    assert r.returncode == 0, r.stderr
    shown = json.loads(_run(home, "show", cid, "--history").stdout)
    assert [h["kind"] for h in shown["history"]] == ["edit", "id-photo", "generate"]
    r = _run(home, "show", "nope")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: no character")
    assert _run(home, "delete", cid).returncode == 0
    assert _run(home, "show", cid).returncode == 2
