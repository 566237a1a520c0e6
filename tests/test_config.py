import pytest
from pydantic import ValidationError

from faceanchor.config import Settings, load_settings, resolve_device, resolve_dtype


def test_home_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path / "fa"))
    s = load_settings()
    assert s.home == tmp_path / "fa"
    assert s.models_dir == tmp_path / "fa" / "models"
    assert s.resolved_database_url().endswith("fa/data/faceanchor.db")


def test_overrides_win_and_none_is_ignored(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEANCHOR_DEVICE", "cpu")
    assert load_settings(device=None).device == "cpu"
    assert load_settings(device="auto").device == "auto"


def test_bad_values_are_refused():
    with pytest.raises(ValidationError):
        Settings(device="tpu")
    with pytest.raises(ValidationError):
        Settings(dtype="int8")
    with pytest.raises(ValidationError):
        Settings(max_image_pixels=0)


def test_device_and_dtype_resolution_on_cpu():
    import torch

    dev = resolve_device("cpu")
    assert dev == "cpu"
    assert resolve_dtype("auto", "cpu") is torch.float32
    assert resolve_dtype("fp16", "cpu") is torch.float32  # fp16 is refused on CPU
    assert resolve_dtype("bf16", "cpu") is torch.bfloat16  # an explicit bf16 is kept
    assert resolve_dtype("fp16", "cuda") is torch.float16
    assert resolve_dtype("bf16", "cuda") is torch.bfloat16
    if not torch.cuda.is_available():
        from faceanchor.errors import InvalidInputError

        with pytest.raises(InvalidInputError, match="no CUDA GPU"):
            resolve_device("cuda")
