"""A fake Hugging Face cache laid out as huggingface_hub writes it, and offline settings."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from faceanchor.config import Settings


def write_cached(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "a" * 40, ref: str = "main") -> Path:
    """models--org--name/{blobs/<sha>, snapshots/<rev>/<file> -> blob, refs/<ref>}; returns the snapshot dir."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        target = snap / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        target.symlink_to(Path("../" * (name.count("/") + 2)) / "blobs" / blob.name)
    return snap


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", insightface_root=tmp_path / "insightface")


@pytest.fixture
def cached():
    """``cached(cache, repo_id, {name: bytes})`` writes files into a fake HF cache."""
    return write_cached
