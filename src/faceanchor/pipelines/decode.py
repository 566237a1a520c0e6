"""The one VAE decode: latents → images, as the diffusers SD / SDXL pipelines decode them."""

from __future__ import annotations

from typing import Any


def decode_latents(pipe: Any, latents: Any, output_type: str = "pil") -> Any:
    """VAE-decode ``latents`` (a batch tensor or a list of latents) and post-process.

    As diffusers: the SDXL pipelines (which have ``upcast_vae``) decode an fp16 VAE in fp32 when
    its config says ``force_upcast``; SD1.5 pipelines have no upcast and decode in fp16. SDXL
    VAEs with ``latents_mean``/``latents_std`` are de-normalised with them.
    """
    import torch

    if isinstance(latents, (list, tuple)):
        latents = torch.stack(list(latents))
    vae = pipe.vae
    with torch.no_grad():
        needs_upcast = (
            vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False) and hasattr(pipe, "upcast_vae")
        )
        if needs_upcast:
            vae.to(dtype=torch.float32)
            latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
        elif latents.dtype != vae.dtype:
            latents = latents.to(vae.dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            m = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
            s = torch.tensor(std).view(1, -1, 1, 1).to(latents)
            latents = latents * s / vae.config.scaling_factor + m
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        if needs_upcast:
            vae.to(dtype=torch.float16)
    if getattr(pipe, "watermark", None) is not None:  # SDXL pipelines' optional invisible watermark
        image = pipe.watermark.apply_watermark(image)
    return pipe.image_processor.postprocess(image, output_type=output_type)
