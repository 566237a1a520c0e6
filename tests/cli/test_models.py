"""`faceanchor models list|verify|pull` and `faceanchor styles` through the real entry point, on a fake HF cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def _cache_file(cache: Path, repo_id: str, name: str, data: bytes, rev: str = "f" * 40) -> Path:
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    target = repo / "snapshots" / rev / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    return target


def run(tmp_path: Path, *args: str, offline: bool = True):
    env = dict(os.environ)
    env["FACEANCHOR_HOME"] = str(tmp_path / "home")
    env["FACEANCHOR_INSIGHTFACE_ROOT"] = str(tmp_path / "insightface")
    env["HF_HOME"] = str(tmp_path / "hf")
    env["HF_HUB_CACHE"] = str(tmp_path / "hf" / "hub")
    env.pop("HF_HUB_OFFLINE", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "faceanchor", *args], capture_output=True, text=True, env=env, timeout=120)


def _one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_list_shows_presence_and_locations(tmp_path):
    cache = tmp_path / "hf" / "hub"
    _cache_file(cache, "InstantX/InstantID", "ip-adapter.bin", b"adapter")
    p = run(tmp_path, "models", "list", "--method", "instantid", "--json")
    assert p.returncode == 0, p.stderr
    rows = {r["name"]: r for r in json.loads(p.stdout)}
    assert rows["instantid-adapter"]["present"] and rows["instantid-adapter"]["source"] == "hf-cache"
    assert rows["instantid-identitynet"]["status"] == "missing"
    assert "faceanchor models pull instantid-identitynet" in rows["instantid-identitynet"]["how_to_get"]
    looked = [l["path"] for l in rows["instantid-identitynet"]["looked_in"]]
    assert str(tmp_path / "home" / "models" / "instantid-identitynet") in looked
    assert str(cache / "models--InstantX--InstantID") in looked
    assert rows["controlnet-pose-sdxl"]["status"] == "optional"
    assert rows["antelopev2"]["looked_in"][0]["path"] == str(tmp_path / "insightface" / "models" / "antelopev2")
    assert "faceid-sd15" not in rows
    text = run(tmp_path, "models", "list")
    assert text.returncode == 0 and "instantid-adapter" in text.stdout and "found (hf-cache)" in text.stdout
    assert "dlib" in text.stdout and "present" in text.stdout


def test_verify_prints_sha256(tmp_path):
    cache = tmp_path / "hf" / "hub"
    _cache_file(cache, "h94/IP-Adapter-FaceID", "ip-adapter-faceid_sd15.bin", b"faceid")
    p = run(tmp_path, "models", "verify", "faceid-sd15", "--json")
    assert p.returncode == 0, p.stderr
    [m] = json.loads(p.stdout)
    files = {f["file"]: f for f in m["files"]}
    assert files["ip-adapter-faceid_sd15.bin"]["sha256"] == hashlib.sha256(b"faceid").hexdigest()
    assert files["ip-adapter-faceid_sd15.bin"]["status"] == "unchecked"
    assert files["ip-adapter-faceid_sd15_lora.safetensors"]["status"] == "missing-optional"
    _one_line_error(run(tmp_path, "models", "verify", "instantid-adapter"), "instantid-adapter", "ip-adapter.bin", "models pull")
    allp = run(tmp_path, "models", "verify")
    assert allp.returncode == 0 and "faceid-sd15" in allp.stdout and "instantid-adapter" not in allp.stdout


def test_pull_offline_is_one_line_error(tmp_path):
    _one_line_error(run(tmp_path, "models", "pull", "instantid-adapter"), "HF_HUB_OFFLINE")
    _one_line_error(run(tmp_path, "models", "pull"), "name the models")
    _one_line_error(run(tmp_path, "models", "pull", "instantid-adaptr"), "did you mean instantid-adapter")


def test_pull_unreachable_hub_is_one_line_error(tmp_path, monkeypatch, capsys):
    """In-process (the real hub's retries take ~25 s): the error is one line on stderr, exit 2."""
    import huggingface_hub
    import pytest
    from huggingface_hub.errors import LocalEntryNotFoundError

    from faceanchor.cli.app import main

    def no_network(*a, **k):
        raise LocalEntryNotFoundError("cannot reach the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(SystemExit) as e:
        main(["--home", str(tmp_path / "home"), "models", "pull", "lcm-lora-sdxl"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download" in err[0] and "latent-consistency/lcm-lora-sdxl" in err[0] and "unreachable" in err[0]


def test_pull_skips_present_local_pack(tmp_path):
    p = run(tmp_path, "models", "pull", "dlib", offline=False)
    assert p.returncode == 0 and "already present" in p.stdout


def test_styles_command(tmp_path):
    p = run(tmp_path, "styles")
    assert p.returncode == 0
    lines = p.stdout.strip().splitlines()
    assert lines[0] == "(No style)" and lines[-1] == f"{len(lines) - 1} styles" and len(lines) - 1 >= 29
    j = json.loads(run(tmp_path, "styles", "--json").stdout)
    assert {"Headshot", "Film Noir", "Line art"} <= {s["name"] for s in j}
    assert all("{prompt}" in s["prompt"] for s in j)
