"""`--weights tiny` renders at its native size by default; `--weights dummy` on a CPU refuses, in one line,
when the full-size models will not fit in the memory available (no full-size model is built)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import faceanchor.pipelines.loading as loading
from faceanchor.cli.app import main
from faceanchor.methods.registry import get
from faceanchor.methods.sizing import output_size
from faceanchor.models.dummy import native_size, parameter_count
from faceanchor.pipelines.loading import DummyLoader

FACES = Path(__file__).resolve().parents[1] / "data" / "faces"
ROOT = Path(__file__).resolve().parents[2]
GB = 10**9


def test_native_sizes():
    # the published native resolutions of SDXL and SD1.5; tiny: 32-latent UNet, 2x VAE
    assert native_size("sdxl", "full") == 1024 and native_size("sd15", "full") == 512
    assert native_size("sdxl", "tiny") == 64 and native_size("sd15", "tiny") == 64


def test_loader_default_sizes(settings):
    assert DummyLoader(settings, "cpu", torch.float32, size="tiny").default_size("sdxl") == 64
    assert DummyLoader(settings, "cpu", torch.float32, size="full").default_size("sdxl") is None
    assert output_size((600, 800), None, None, "sdxl", 64) == (64, 64)
    assert output_size((600, 800), None, None, "sd15", 64) == (64, 80)
    assert output_size((600, 800), 128, 128, "sdxl", 64) == (128, 128)  # explicit sizes win
    assert output_size((600, 800), None, None, "sdxl") == (960, 1280)  # real/dummy: from the photo, as before


def test_generate_tiny_without_size_renders_small(tmp_path):
    small = tmp_path / "face.jpg"
    Image.open(FACES / "obama.jpg").resize((300, 375)).save(small)
    env = dict(os.environ, FACEANCHOR_HOME=str(tmp_path / "home"), FACEANCHOR_DEVICE="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "faceanchor", "generate", "--weights", "tiny", "--face", str(small),
                           "--prompt", "x", "--steps", "1", "--seed", "3", "--out", str(tmp_path / "o"), "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Image.open(meta["files"][0]).size == (64, 64)


def test_sdxl_instantid_memory_estimate(settings):
    assert parameter_count("unet", "sdxl", "full") == 2_567_463_684  # SDXL base UNet's published parameter count
    fp32 = DummyLoader(settings, "cpu", torch.float32, size="full")
    bf16 = DummyLoader(settings, "cpu", torch.bfloat16, size="full")
    need32, parts = fp32.memory_needed(get("instantid"), "sdxl")
    need16, _ = bf16.memory_needed(get("instantid"), "sdxl")
    assert set(parts) == {"unet", "vae", "text_encoder", "text_encoder_2", "controlnet"}
    assert 18.8 * GB < need32 < 19.0 * GB and need16 * 2 == need32  # weights alone: 4.72 G parameters
    need_faceid, parts = fp32.memory_needed(get("faceid"), "sd15")
    assert set(parts) == {"unet", "vae", "text_encoder"} and need_faceid < 5 * GB


def _refusal(tmp_path, monkeypatch, capsys, available, *dtype):
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: available)
    monkeypatch.setenv("FACEANCHOR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FACEANCHOR_DEVICE", "cpu")
    built = []
    monkeypatch.setattr("faceanchor.models.dummy.build_components", lambda *a, **k: built.append(a) or 1 / 0)
    with pytest.raises(SystemExit) as exc:
        main([*dtype, "generate", "--weights", "dummy", "--face", str(FACES / "obama.jpg"), "--prompt", "x", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith("[transformers]")]
    assert exc.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert not built  # refused before building anything
    return lines[0]


def test_dummy_on_cpu_refuses_when_it_will_not_fit(tmp_path, monkeypatch, capsys):
    line = _refusal(tmp_path, monkeypatch, capsys, 16 * GB)
    assert line.startswith("error: --weights dummy: instantid on sdxl") and "float32" in line, line
    assert "--dtype bf16" in line and "16.0 GB is available" in line, line
    line = _refusal(tmp_path, monkeypatch, capsys, 4 * GB, "--dtype", "bf16")
    assert "bfloat16" in line and "--weights tiny" in line and "--dtype bf16" not in line, line


def test_dummy_check_passes_when_it_fits(settings, monkeypatch):
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: 64 * GB)
    DummyLoader(settings, "cpu", torch.float32, size="full").check_fits(get("instantid"), "sdxl")  # no error
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: 1 * GB)
    DummyLoader(settings, "cuda", torch.float16, size="full").check_fits(get("instantid"), "sdxl")  # GPU: not RAM
    DummyLoader(settings, "cpu", torch.float32, size="tiny").check_fits(get("instantid"), "sdxl")


def test_available_memory_reads_the_system():
    got = loading.available_memory_bytes()
    assert got is not None and 0 < got
