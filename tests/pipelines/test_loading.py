"""Loading helpers: schedulers by name and the LCM-LoRA path of real weights (on a tiny base)."""

import numpy as np
import pytest
import torch

from faceanchor.config import Settings
from faceanchor.errors import InvalidInputError, ModelNotFoundError
from faceanchor.pipelines import loading


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from faceanchor.methods.registry import get
    from faceanchor.types import GenerationRequest

    settings = Settings(home=tmp_path_factory.mktemp("home"), device="cpu")
    loader = loading.make_loader("tiny", settings, "cpu", torch.float32, 0)
    return settings, get("instantid").load(loader, "sdxl", GenerationRequest(), 128)


def test_one_loader_per_weights_kind(tmp_path):
    settings = Settings(home=tmp_path / "home", device="cpu")
    kinds = {k: loading.make_loader(k, settings, "cpu", torch.float32) for k in ("real", "dummy", "tiny")}
    assert {k: type(v).__name__ for k, v in kinds.items()} == {"real": "RealLoader", "dummy": "DummyLoader", "tiny": "DummyLoader"}
    assert kinds["real"].honours_model_name and not kinds["real"].adapts_to_encoder
    assert not kinds["tiny"].honours_model_name and kinds["tiny"].adapts_to_encoder and kinds["tiny"].size == "tiny"
    from faceanchor.models.few_step import PRESETS

    assert all(kinds["tiny"].few_step_lora(None, "sdxl", p) is None for p in PRESETS.values())  # random weights: no LoRA
    with pytest.raises(InvalidInputError, match="weights 'bogus' is unknown; use real, dummy, tiny"):
        loading.make_loader("bogus", settings, "cpu", torch.float32)


def test_schedulers_by_name(loaded):
    _, base = loaded
    for name, (cls, _) in loading.SCHEDULERS.items():
        assert type(loading.make_scheduler(name, base.scheduler_config)).__name__ == cls
    with pytest.raises(InvalidInputError, match="unknown"):
        loading.make_scheduler("plms", base.scheduler_config)


def _run(pipe):
    from faceanchor.face.kps import draw_kps

    kps = draw_kps((64, 64), [[20, 24], [44, 24], [32, 34], [22, 46], [42, 46]])
    out = pipe("a photo", face_embedding=torch.ones(128), kps_image=kps, height=64, width=64, num_inference_steps=1,
               guidance_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="np")
    return out.images[0]


def _kohya(layers: dict) -> dict:
    """The kohya/sd-scripts naming (``lora_unet_<path_with_underscores>.lora_down.weight``, ``alpha``)
    that SDXL-Lightning and Hyper-SD ship their LoRAs in, written from peft's names by hand."""
    out = {}
    for key, value in layers.items():
        path, kind = key.rsplit(".lora_", 1)
        path = path.removeprefix("base_model.model.")
        name = "lora_unet_" + path.replace(".", "_")
        out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        if kind.startswith("A"):
            out[f"{name}.alpha"] = torch.tensor(float(value.shape[0]))
    return out


@pytest.mark.parametrize("preset, layout", [("lcm", "diffusers"), ("lightning", "kohya"), ("tcd", "diffusers"), ("hyper", "kohya")])
def test_few_step_loras_load_from_the_models_dir_and_toggle(loaded, monkeypatch, preset, layout):
    from safetensors.torch import save_file

    from faceanchor.models.few_step import PRESETS, lora_for

    settings, base = loaded
    pipe = base.pipe
    p = PRESETS[preset]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = loading.RealLoader(settings, "cpu", torch.float32)
    with pytest.raises(ModelNotFoundError, match=lora_for(p, "sdxl")):
        real.few_step_lora(pipe, "sdxl", p)
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = pipe.unet
    plain = _run(pipe)
    torch.manual_seed(1)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="tmp")
    for n, prm in unet.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(prm, std=0.5)
    layers = {k: v.contiguous() for k, v in get_peft_model_state_dict(unet, adapter_name="tmp").items()}
    unet.delete_adapters("tmp")
    assert np.array_equal(_run(pipe), plain)
    from faceanchor.models.registry import default_registry

    spec = default_registry().get(lora_for(p, "sdxl"))
    out_dir = settings.models_dir / spec.name
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {f"unet.{k}": v for k, v in layers.items()} if layout == "diffusers" else _kohya(layers)
    save_file(state, str(out_dir / spec.files[0].path))

    name = real.few_step_lora(pipe, "sdxl", p)
    assert preset in pipe.get_list_adapters().get("unet", []) and (name == spec.repo_id or str(out_dir) in name)
    pipe.set_adapters([preset], adapter_weights=[1.0])
    with_lora = _run(pipe)
    pipe.set_adapters([preset], adapter_weights=[0.0])
    without = _run(pipe)
    pipe.delete_adapters(preset)
    assert not np.array_equal(with_lora, plain)
    assert np.allclose(without, plain, atol=1e-6)


def test_few_step_defaults_and_families():
    from faceanchor.errors import InvalidInputError as Bad
    from faceanchor.models.few_step import PRESETS, lora_for
    from faceanchor.types import GenerationRequest

    for name, steps, guidance in (("lcm", 5, 1.5), ("lightning", 4, 0.0), ("hyper", 8, 5.0), ("tcd", 4, 0.0)):
        r = GenerationRequest(prompt="x", scheduler=name)
        assert (r.steps, r.guidance) == (steps, guidance)
    assert GenerationRequest(prompt="x", scheduler="tcd", num_inference_steps=6).steps == 6
    with pytest.raises(Bad, match="lightning.*sdxl only"):
        lora_for(PRESETS["lightning"], "sd15")
