"""Few-step presets: a scheduler plus its distillation LoRA, with the steps and guidance the
LoRA's authors document. The request's ``scheduler`` names one (``lcm``, ``lightning``,
``hyper``, ``tcd``); the weights are the user's (``faceanchor models pull <name>``); random
(``dummy``/``tiny``) weights run the scheduler without a LoRA.

* ``lcm`` — LCM-LoRA (latent-consistency), LCMScheduler; 5 steps, guidance 1.5 (the InstantID
  demo's LCM mode).
* ``lightning`` — SDXL-Lightning 4-step LoRA (ByteDance), Euler with trailing timesteps; 4 steps,
  guidance 0 (the model card: "make sure to use guidance_scale=0"). SDXL only.
* ``hyper`` — Hyper-SD 8-step CFG LoRA (ByteDance), DDIM with trailing timesteps; 8 steps,
  guidance 5 (the card recommends 5-8; the CFG variant keeps negative prompts working).
* ``tcd`` — TCD LoRA (h1t), TCDScheduler (its default gamma/eta 0.3); 4 steps, guidance 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FewStepPreset:
    name: str
    scheduler: str  # diffusers class name
    scheduler_extra: dict = field(default_factory=dict)
    loras: dict[str, str] = field(default_factory=dict)  # family -> registry name
    steps: int = 4
    guidance: float = 0.0
    description: str = ""


PRESETS: dict[str, FewStepPreset] = {
    p.name: p
    for p in (
        FewStepPreset("lcm", "LCMScheduler", {}, {"sdxl": "lcm-lora-sdxl", "sd15": "lcm-lora-sd15"}, 5, 1.5, "LCM-LoRA"),
        FewStepPreset("lightning", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"},
                      {"sdxl": "sdxl-lightning-4step-lora"}, 4, 0.0, "SDXL-Lightning 4-step LoRA"),
        FewStepPreset("hyper", "DDIMScheduler", {"timestep_spacing": "trailing"},
                      {"sdxl": "hyper-sdxl-8step-cfg-lora", "sd15": "hyper-sd15-8step-cfg-lora"}, 8, 5.0, "Hyper-SD 8-step CFG LoRA"),
        FewStepPreset("tcd", "TCDScheduler", {}, {"sdxl": "tcd-sdxl-lora", "sd15": "tcd-sd15-lora"}, 4, 0.0, "TCD LoRA"),
    )
}


def lora_for(preset: FewStepPreset, family: str) -> str:
    """The preset's LoRA for ``family``, or a clear error naming the families it has."""
    from faceanchor.errors import InvalidInputError

    if family not in preset.loras:
        raise InvalidInputError(
            f"scheduler {preset.name!r} ({preset.description}) exists for {', '.join(sorted(preset.loras))} only, "
            f"not {family}; choose another scheduler"
        )
    return preset.loras[family]
