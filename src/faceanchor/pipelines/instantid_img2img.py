"""InstantID image-to-image and inpainting on SDXL (SDEdit start, optional latent mask blending).

:class:`InstantIDImg2ImgPipeline` is :class:`~faceanchor.pipelines.instantid_sdxl.InstantIDSDXLPipeline`
(sharing its components and loaded identity adapter through :meth:`~InstantIDImg2ImgPipeline.from_instantid`)
run with an :class:`ImageStart`: prompt encoding, identity tokens, IdentityNet with its region
mask, extra ControlNets, the denoising loop and decoding are the parent's; only where denoising
starts and what each step keeps change.

* **Start** (SDEdit, as diffusers' ``StableDiffusionXLImg2ImgPipeline``): the scheduler's
  ``num_inference_steps`` timesteps are cut to the last ``int(steps × strength)``; the input
  image is VAE-encoded (distribution mode, SDXL latents mean/std honoured), and noised to the
  first kept timestep with ``scheduler.add_noise``. ``strength = 1`` starts from pure noise
  (``init_noise_sigma``), as diffusers' inpaint pipeline does.
* **Inpainting** (``mask_image``, white = regenerate, as diffusers' SD/SDXL inpaint pipelines
  with a 4-channel UNet): the mask is resized (nearest) to the latent grid; after each step
  the latents outside the mask are replaced by the image's latents noised to the next
  timestep (the clean image latents after the last step). Decoding still passes the VAE, so
  callers that need pixels outside the mask *exactly* unchanged composite in pixel space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from faceanchor.errors import InvalidInputError
from faceanchor.pipelines.instantid_sdxl import AfterStep, InstantIDSDXLPipeline, NoiseStart


def latent_mask(mask: Any, height: int, width: int, vae_scale_factor: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """An inpaint mask (PIL/array/tensor, white or 1 = regenerate) as ``(1, 1, h/f, w/f)`` in {0, 1}."""
    if isinstance(mask, PIL.Image.Image):
        mask = mask.convert("L")
        if mask.size != (width, height):
            mask = mask.resize((width, height), PIL.Image.NEAREST)
        arr = np.asarray(mask, dtype=np.float32) / 255.0
    elif isinstance(mask, np.ndarray):
        arr = mask[..., 0] if mask.ndim == 3 else mask
        arr = arr.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0)
    elif isinstance(mask, torch.Tensor):
        arr = mask.detach().float().cpu().numpy()
        arr = arr.reshape(arr.shape[-2:]) if arr.ndim > 2 else arr
    else:
        raise InvalidInputError(f"mask_image must be a PIL image, numpy array or tensor, got {type(mask).__name__}")
    if arr.ndim != 2:
        raise InvalidInputError(f"mask_image must be one channel (H, W), got shape {arr.shape}")
    t = torch.from_numpy((arr >= 0.5).astype(np.float32))[None, None]
    if tuple(t.shape[-2:]) != (height, width):
        t = F.interpolate(t, size=(height, width), mode="nearest")
    t = F.interpolate(t, size=(height // vae_scale_factor, width // vae_scale_factor))
    return t.to(device=device, dtype=dtype)



class ImageStart(NoiseStart):
    """Denoising from ``image`` noised to ``strength`` of the schedule; inpainting with ``mask_image``."""

    def __init__(self, image: Any, strength: float, mask_image: Any = None):
        if not 0.0 < strength <= 1.0:
            raise InvalidInputError(f"strength must be in (0, 1], got {strength}")
        super().__init__()
        self.image, self.strength, self.mask_image = image, strength, mask_image

    def timesteps(self, pipe: InstantIDSDXLPipeline, num_inference_steps: int, device: Any) -> torch.Tensor:
        """The last ``int(steps × strength)`` timesteps (diffusers' ``get_timesteps``)."""
        all_timesteps = super().timesteps(pipe, num_inference_steps, device)
        order = getattr(pipe.scheduler, "order", 1)
        init = min(int(num_inference_steps * self.strength), num_inference_steps)
        t_start = max(num_inference_steps - init, 0)
        timesteps = all_timesteps[t_start * order :]
        if len(timesteps) == 0:
            raise InvalidInputError(
                f"strength {self.strength} with {num_inference_steps} steps leaves no denoising step; raise either"
            )
        if hasattr(pipe.scheduler, "set_begin_index"):
            pipe.scheduler.set_begin_index(t_start * order)
        return timesteps

    def latents(
        self, pipe: InstantIDSDXLPipeline, timesteps: torch.Tensor, num_images: int, height: int, width: int,
        dtype: torch.dtype, device: Any, generator: Any,
    ) -> tuple[torch.Tensor, AfterStep | None]:
        """The image's latents noised to the first kept timestep, and the inpaint blend if masked."""
        if not isinstance(pipe, InstantIDImg2ImgPipeline):
            raise InvalidInputError("an image start needs an InstantIDImg2ImgPipeline (see from_instantid)")
        image_latents = pipe.encode_image_latents(self.image, height, width, device).to(dtype)
        if image_latents.shape[0] != num_images:
            image_latents = image_latents.repeat(num_images // image_latents.shape[0], 1, 1, 1)
        noise = randn_tensor(tuple(image_latents.shape), generator=generator, device=device, dtype=image_latents.dtype)
        if self.strength >= 1.0:
            latents = noise * pipe.scheduler.init_noise_sigma
        else:
            latents = pipe.scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(num_images))
        if self.mask_image is None:
            return latents, None
        mask = latent_mask(self.mask_image, height, width, pipe.vae_scale_factor, device, latents.dtype)

        def blend(i: int, latents: torch.Tensor) -> torch.Tensor:
            """Outside the mask: the image's latents noised to the next timestep (clean after the last)."""
            keep = image_latents
            if i < len(timesteps) - 1:
                keep = pipe.scheduler.add_noise(image_latents, noise, timesteps[i + 1 : i + 2].repeat(num_images))
            return (1 - mask) * keep + mask * latents

        return latents, blend


class InstantIDImg2ImgPipeline(InstantIDSDXLPipeline):
    """InstantID SDXL starting from an image (``strength``), optionally inpainting a mask."""

    @classmethod
    def from_instantid(cls, pipe: InstantIDSDXLPipeline) -> "InstantIDImg2ImgPipeline":
        """A view of ``pipe``: same modules, same loaded adapter, own scheduler slot."""
        new = cls(
            vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2, tokenizer=pipe.tokenizer,
            tokenizer_2=pipe.tokenizer_2, unet=pipe.unet, controlnet=pipe.controlnet, scheduler=pipe.scheduler,
        )
        new.identity_adapter = pipe.identity_adapter
        new.set_progress_bar_config(disable=True)
        return new

    @torch.no_grad()
    def encode_image_latents(self, image: Any, height: int, width: int, device: Any) -> torch.Tensor:
        """VAE latents (distribution mode, scaled) of a PIL image / array / [-1, 1] tensor."""
        pixels = self.image_processor.preprocess(image, height=height, width=width)
        vae = self.vae
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        if upcast:
            vae.to(dtype=torch.float32)
        pixels = pixels.to(device=device, dtype=vae.dtype)
        latents = vae.encode(pixels).latent_dist.mode()
        if upcast:
            vae.to(dtype=torch.float16)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            m = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
            s = torch.tensor(std).view(1, -1, 1, 1).to(latents)
            latents = (latents - m) * vae.config.scaling_factor / s
        else:
            latents = latents * vae.config.scaling_factor
        return latents

    def __call__(  # type: ignore[override]
        self,
        prompt: str | None = None,
        face_embedding: Any = None,
        kps_image: Any = None,
        image: Any = None,
        *,
        strength: float = 0.6,
        mask_image: Any = None,
        height: int | None = None,
        width: int | None = None,
        **kwargs: Any,
    ) -> StableDiffusionXLPipelineOutput:
        """Re-render ``image`` with the identity; other keyword arguments as :meth:`InstantIDSDXLPipeline.__call__`.

        Args:
            image: the starting image (resized to ``width`` × ``height``, default its own size
                rounded down to the VAE grid).
            strength: how much of the schedule runs, (0, 1]; 1 starts from pure noise.
            mask_image: optional inpaint mask (white = regenerate); outside it the latents
                follow the image's noised latents every step.
        """
        if image is None:
            raise InvalidInputError("image-to-image needs an image to start from")
        if isinstance(image, PIL.Image.Image) and (height is None or width is None):
            f = self.vae_scale_factor
            width = width or image.width // f * f
            height = height or image.height // f * f
        start = ImageStart(image, strength, mask_image)
        return super().__call__(prompt, face_embedding, kps_image, height=height, width=width, start=start, **kwargs)
