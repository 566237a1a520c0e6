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
    assert kinds["tiny"].lcm_lora(None, "sdxl") is None  # random weights have no LCM-LoRA
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


def test_lcm_lora_loads_from_the_models_dir_and_toggles(loaded, monkeypatch):
    settings, base = loaded
    pipe = base.pipe
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    real = loading.RealLoader(settings, "cpu", torch.float32)
    with pytest.raises(ModelNotFoundError, match="lcm-lora-sdxl"):
        real.lcm_lora(pipe, "sdxl")
    # write an SDXL LoRA in diffusers' format where faceanchor looks first: models_dir/<name>/
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = pipe.unet
    plain = _run(pipe)
    torch.manual_seed(1)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="tmp")
    for n, p in unet.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.5)
    layers = get_peft_model_state_dict(unet, adapter_name="tmp")
    unet.delete_adapters("tmp")
    assert np.array_equal(_run(pipe), plain)
    out_dir = settings.models_dir / "lcm-lora-sdxl"
    StableDiffusionXLPipeline.save_lora_weights(out_dir, unet_lora_layers=layers, weight_name="pytorch_lora_weights.safetensors")

    name = real.lcm_lora(pipe, "sdxl")
    assert "lcm" in pipe.get_list_adapters().get("unet", []) and ("lcm-lora-sdxl" in name or str(out_dir) in name)
    pipe.set_adapters(["lcm"], adapter_weights=[1.0])
    with_lora = _run(pipe)
    pipe.set_adapters(["lcm"], adapter_weights=[0.0])
    without = _run(pipe)
    assert not np.array_equal(with_lora, plain)
    assert np.allclose(without, plain, atol=1e-6)
