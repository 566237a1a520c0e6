"""InfiniteYou's memory options (the official ``--quantize_8bit`` / ``--cpu_offload``) on tiny FLUX weights:
8-bit quanto weights really run and stay close, model CPU offload reaches the pipeline, and a GPU or a
CPU too small for full-size FLUX.1 is refused in one line with the figures (no model built)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faceanchor.pipelines.loading as loading
from faceanchor.config import Settings
from faceanchor.errors import InvalidInputError
from faceanchor.methods.registry import get
from faceanchor.models.flux import TINY_MAX_SEQUENCE_LENGTH as SEQ
from faceanchor.pipelines.loading import DummyLoader, RealLoader
from faceanchor.types import GenerationRequest

GB = 10**9
W = H = 64
#: FLUX.1-dev's parameters (transformer, T5 XXL encoder, CLIP-L text, VAE) and InfuseNet's (5 double + 10 single
#: blocks at the transformer's widths), counted once on the meta device: the estimate's inputs.
PARAMS = dict(transformer=11_901_408_320, text_encoder_2=4_762_310_656, text_encoder=123_060_480, vae=83_819_683, infusenet=3_301_925_888)


def _settings(tmp_path, **kw) -> Settings:
    return Settings(home=tmp_path / "home", device="cpu", **kw)


def _pipe(settings, device="cpu"):
    loader = DummyLoader(settings, device, torch.float32, seed=0, size="tiny")
    return get("infiniteyou").load(loader, "flux", GenerationRequest(method="infiniteyou"), 512).pipe


def _render(pipe, steps=3):
    emb = torch.nn.functional.normalize(torch.randn(1, 512, generator=torch.Generator().manual_seed(1)), dim=-1)
    lat = torch.randn(1, (H // 4) * (W // 4), 16, generator=torch.Generator().manual_seed(3))
    return pipe.generate(pipe.identity_tokens(emb), prompt="a portrait, cinematic", width=W, height=H, num_inference_steps=steps,
                         latents=lat, control_generator=torch.Generator().manual_seed(7), max_sequence_length=SEQ, output_type="np")


def test_8bit_quantises_transformer_t5_and_infusenet_and_stays_close(tmp_path):
    from optimum.quanto import QTensor, qint8

    full = _pipe(_settings(tmp_path))
    q8 = _pipe(_settings(tmp_path, flux_quantize="8bit"))
    base = q8.base
    for name, m in (("transformer", base.transformer), ("text_encoder_2", base.text_encoder_2), ("infusenet", q8.infusenet)):
        linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
        assert linears and all(isinstance(mod.weight, QTensor) and mod.weight.qtype == qint8 for mod in linears), name
        assert linears[0].weight._data.dtype == torch.int8, name  # stored as int8 with a scale
    for m in (base.text_encoder, base.vae):  # CLIP and the VAE stay as they are (as the official code)
        assert not any(isinstance(p, QTensor) for p in m.parameters())
    a, b = _render(full), _render(q8)
    delta, mean = float(np.abs(a - b).max()), float(np.abs(a - b).mean())
    assert a.std() > 0.1  # measured: std 0.27, max |Δ| 0.011, mean |Δ| 0.0016 on 0-1 images
    assert 1e-3 < delta < 0.03 and mean < 0.005, (delta, mean)  # it really ran with int8 weights, and the image stayed close


def test_cpu_offload_reaches_the_pipeline_and_refuses_without_a_gpu(tmp_path, monkeypatch):
    from faceanchor.pipelines.acceleration import SpeedOptions, accelerate
    from faceanchor.pipelines.infiniteyou_flux import InfiniteYouFluxPipeline

    settings = _settings(tmp_path, speed_cpu_offload=True, speed_tf32=False)
    with pytest.raises(InvalidInputError, match="cpu_offload"):
        accelerate(_pipe(_settings(tmp_path)), SpeedOptions.from_settings(settings), "cpu")
    method = get("infiniteyou")
    comps, _ = DummyLoader(settings, "cuda", torch.float32, size="tiny").flux_components(method._spec("flux1-dev-base"), None)
    mods = [m for m in comps.values() if isinstance(m, torch.nn.Module)]
    assert len(mods) == 4 and all(p.device.type == "cpu" for m in mods for p in m.parameters())  # offload: none moved to "cuda"
    calls = []
    monkeypatch.setattr(InfiniteYouFluxPipeline, "enable_model_cpu_offload", lambda self, *a, **k: calls.append(self))
    pipe = _pipe(settings)
    applied = accelerate(pipe, SpeedOptions.from_settings(settings), "cuda")
    assert calls == [pipe] and "model CPU offload" in applied.notes


def test_offload_hooks_keep_the_image(tmp_path):
    """The hooks themselves (accelerate's, executing on the CPU here): every model gets one, the image is unchanged."""
    want = _render(_pipe(_settings(tmp_path)))
    pipe = _pipe(_settings(tmp_path))
    pipe.enable_model_cpu_offload(device="cpu")
    for m in (pipe.base.text_encoder, pipe.base.text_encoder_2, pipe.base.vae, pipe.base.transformer, pipe.infusenet):
        assert hasattr(m, "_hf_hook")
    log = []
    for name, hook in zip(("clip", "t5", "vae", "infusenet", "transformer"), pipe._offload_hooks):
        hook.offload = (lambda h, n: lambda: (log.append(n), type(h).offload(h)))(hook, name)
    assert np.array_equal(_render(pipe), want)
    # InfuseNet and the transformer go back before the VAE decodes, then every model (accelerate's own chain,
    # each stage sending the previous one back, acts only on a GPU: it skips models already on the CPU)
    assert log == ["infusenet", "transformer", "clip", "t5", "vae", "infusenet", "transformer"], log


def _gpu(monkeypatch, free):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(free), int(80 * GB)))


def _est(bytes_per, quantised=(), stages=None):
    per = {c: n * (1 if c in quantised else bytes_per) for c, n in PARAMS.items()}
    if stages:
        return max(sum(per[c] for c in s) for s in stages) * 1.1 / GB
    return sum(per.values()) * 1.1 / GB


def test_gpu_too_small_names_cpu_offload_and_8bit_with_figures(tmp_path, monkeypatch):
    q = ("transformer", "text_encoder_2", "infusenet")
    stages = (("text_encoder", "text_encoder_2"), ("vae",), ("transformer", "infusenet"))
    bf16, off, q8, both = _est(2), _est(2, stages=stages), _est(2, q), _est(2, q, stages)
    assert (round(bf16, 1), round(off, 1), round(q8, 1), round(both, 1)) == (44.4, 33.4, 22.4, 16.7)  # official peaks: 43 / 30 / 24 / 16 GB
    _gpu(monkeypatch, 24 * GB)
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: 128 * GB)  # host memory enough to build in (8bit / offload)
    built = []
    monkeypatch.setattr("faceanchor.models.flux.build_components", lambda *a, **k: built.append(a) or 1 / 0)
    method = get("infiniteyou")
    for loader in (DummyLoader(_settings(tmp_path), "cuda", torch.bfloat16, size="full"), RealLoader(_settings(tmp_path), "cuda", torch.bfloat16)):
        with pytest.raises(InvalidInputError) as e:
            loader.check_fits(method, "flux")
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith("infiniteyou on FLUX.1 needs about 44.4 GB of GPU memory in bfloat16, 24.0 GB is free"), msg
        assert "cpu_offload (FACEANCHOR_SPEED_CPU_OFFLOAD=true) about 33.4 GB (does not fit either)" in msg, msg
        assert "8bit (--quantize 8bit) about 22.4 GB;" in msg and "cpu_offload and 8bit together about 16.7 GB" in msg, msg
    with pytest.raises(InvalidInputError, match=r"16.7 GB of GPU memory in bfloat16 with 8bit and cpu_offload, 12.0 GB is free.*larger GPU"):
        _gpu(monkeypatch, 12 * GB)
        DummyLoader(_settings(tmp_path, flux_quantize="8bit", speed_cpu_offload=True), "cuda", torch.bfloat16, size="full").check_fits(method, "flux")
    _gpu(monkeypatch, 24 * GB)
    DummyLoader(_settings(tmp_path, flux_quantize="8bit"), "cuda", torch.bfloat16, size="full").check_fits(method, "flux")  # 22.4 fits
    DummyLoader(_settings(tmp_path), "cuda", torch.bfloat16, size="tiny").check_fits(method, "flux")  # tiny: no check
    _gpu(monkeypatch, 48 * GB)
    RealLoader(_settings(tmp_path), "cuda", torch.bfloat16).check_fits(method, "flux")
    assert not built


def test_full_size_flux_on_a_24_gb_cpu_machine_refuses_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: 24 * GB)
    loader = DummyLoader(_settings(tmp_path), "cpu", torch.bfloat16, size="full")
    need, parts = loader.memory_needed(get("infiniteyou"), "flux")
    assert need == sum(PARAMS.values()) * 2 and set(parts) == set(PARAMS)
    with pytest.raises(InvalidInputError) as e:
        loader.check_fits(get("infiniteyou"), "flux")
    msg = str(e.value)
    assert "\n" not in msg and "needs about 48.4 GB of memory in bfloat16, 24.0 GB is available" in msg and "--weights tiny" in msg, msg


def test_8bit_or_offload_on_a_gpu_builds_in_host_memory_first_and_checks_it(tmp_path, monkeypatch):
    _gpu(monkeypatch, 140 * GB)
    monkeypatch.setattr(loading, "available_memory_bytes", lambda: 24 * GB)
    DummyLoader(_settings(tmp_path), "cuda", torch.bfloat16, size="full").check_fits(get("infiniteyou"), "flux")  # built on the GPU
    for kw in (dict(flux_quantize="8bit"), dict(speed_cpu_offload=True)):
        with pytest.raises(InvalidInputError, match=r"needs about 48.4 GB of memory in bfloat16, 24.0 GB is available"):
            DummyLoader(_settings(tmp_path, **kw), "cuda", torch.bfloat16, size="full").check_fits(get("infiniteyou"), "flux")
