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


def test_two_characters_in_one_picture(tmp_path, run):
    """`character generate ID1 ID2 --layout left-right` (and --box): one image, both characters'
    histories, a score per person; misuse exits 2 with one line."""
    from faceanchor.imageio import read_metadata

    home = tmp_path / "home"
    ids = []
    for name, photo in (("Barack", "obama.jpg"), ("Joe", "biden.jpg")):
        r = run(home, "create", name, "--face", str(FACES / photo), "--weights", "tiny", "--json")
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stdout)["id"])
    tiny = ["--weights", "tiny", "--steps", "1", "--seed", "4", "--width", "128", "--height", "64", "-p", "two friends at a cafe"]
    r = run(home, "generate", *ids, "--layout", "left-right", "-o", str(tmp_path / "lr"), *tiny)
    assert r.returncode == 0, r.stderr
    assert "per_person=" in r.stdout and r.stdout.split("per_person=")[1].strip().count(",") == 1
    (png,) = (tmp_path / "lr").glob("*.png")
    meta = read_metadata(png.read_bytes())
    assert Image.open(png).size == (128, 64) and len(meta["identity_scores_per_person"][0]) == 2
    left, right = meta["params"]["face_box"], meta["params"]["more_identities"][0]["box"]
    assert left[2] <= 64 <= right[0]
    r = run(home, "generate", *ids, "--box", "0,0,64,64", "--box", "64,0,128,64", "-o", str(tmp_path / "box"), "--json", *tiny)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"]["face_box"] == [0, 0, 64, 64] and out["params"]["more_identities"][0]["box"] == [64, 0, 128, 64]
    for cid in ids:
        shown = json.loads(run(home, "show", cid, "--history").stdout)
        assert [h["kind"] for h in shown["history"]] == ["generate", "generate"]
    for args, needle in ((["--box", "0,0,64,64"], "one --box per character"),
                         ([], "several characters need a place"),
                         (["--layout", "diagonal"], "--layout must be one of left-right"),
                         (["--layout", "left-right", "--box", "0,0,64,64", "--box", "64,0,128,64"], "one way"),
                         (["--box", "0,0,80,64", "--box", "64,0,128,64"], "overlap")):
        bad = run(home, "generate", *ids, *args, "-o", str(tmp_path / "bad"), *tiny)
        assert bad.returncode == 2 and needle in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    no_size = run(home, "generate", *ids, "--layout", "left-right", "--weights", "tiny", "--steps", "1", "-o", str(tmp_path / "bad"))
    assert no_size.returncode == 2 and "give width and height" in no_size.stderr
