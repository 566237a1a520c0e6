"""InstantID image-to-image and inpainting on SDXL (SDEdit start, optional latent mask blending).

:class:`InstantIDImg2ImgPipeline` is :class:`~faceanchor.pipelines.instantid_sdxl.InstantIDSDXLPipeline`
(sharing its components and loaded identity adapter through :meth:`~InstantIDImg2ImgPipeline.from_instantid`)
run with an :class:`ImageStart`: prompt encoding, identity tokens, IdentityNet with its region
mask, extra ControlNets, the denoising loop and decoding are the parent's; only where denoising
starts and what each step keeps change.

* **Start** (SDEdit), as the official ``StableDiffusionXLInstantIDImg2ImgPipeline``
  (instantX-research/InstantID ``pipeline_stable_diffusion_xl_instantid_img2img.py``), which
  inherits diffusers' ``StableDiffusionXLControlNetImg2ImgPipeline.prepare_latents``: the
  scheduler's ``num_inference_steps`` timesteps are cut to the last ``int(steps × strength)``
  (``get_timesteps``); the image is preprocessed to float32, cast to the prompt dtype, VAE-encoded
  by *sampling* the latent distribution with the generator (one generator per image: the image
  is repeated to the batch and row ``i`` sampled with ``generator[i]``; the VAE runs in float32
  when ``force_upcast``), scaled (SDXL latents mean/std honoured), and noised to the first kept
  timestep with ``scheduler.add_noise`` — also at ``strength = 1``. A 4-channel ``image`` is
  taken as latents, as there.
* **Inpainting** (``mask_image``, white = regenerate), as diffusers'
  ``StableDiffusionXLControlNetInpaintPipeline`` with a 4-channel UNet: the image latents are
  sampled like ``_encode_vae_image`` (one draw per input image, ``generator[i]`` for input row
  ``i``, then repeated to the batch), noise of the batch shape is drawn next, and the start is
  ``noise × init_noise_sigma`` at ``strength = 1`` (``is_strength_max``), else
  ``add_noise(image_latents, noise, first timestep)``. The mask is binarised (>= 0.5) and resized
  (nearest) to the latent grid; after each step the latents outside it are replaced by the image
  latents noised to the next timestep with that same noise (the clean latents after the last).
  Not done: diffusers also VAE-encodes the masked image, which only 9-channel inpainting UNets
  read; it draws from the generator after the start latents, so with a stochastic scheduler the
  later draws differ from diffusers'. Decoding still passes the VAE, so callers that need pixels
  outside the mask *exactly* unchanged composite in pixel space.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput
from diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl_img2img import retrieve_latents
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
        pixels = pipe.image_processor.preprocess(self.image, height=height, width=width).to(dtype=torch.float32)
        latent_timestep = timesteps[:1].repeat(num_images)
        if self.mask_image is None:
            return pipe.prepare_image_latents(pixels, latent_timestep, num_images, dtype, device, generator), None

        # Inpainting: diffusers' StableDiffusionXLControlNetInpaintPipeline.prepare_latents (4-channel UNet)
        image = pixels.to(device=device, dtype=dtype)
        image_latents = image if image.shape[1] == pipe.vae.config.latent_channels else pipe.encode_vae_image(image, generator)
        image_latents = image_latents.repeat(num_images // image_latents.shape[0], 1, 1, 1)
        f = pipe.vae_scale_factor
        shape = (num_images, pipe.vae.config.latent_channels, int(height) // f, int(width) // f)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if self.strength == 1.0:  # is_strength_max: pure noise
            latents = noise * pipe.scheduler.init_noise_sigma
        else:
            latents = pipe.scheduler.add_noise(image_latents, noise, latent_timestep)
        mask = latent_mask(self.mask_image, height, width, f, device, latents.dtype)

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
    def encode_vae_image(self, image: torch.Tensor, generator: Any = None) -> torch.Tensor:
        """Scaled VAE latents *sampled* from the latent distribution, one draw per row of ``image``.

        As diffusers' ``retrieve_latents(vae.encode(...), generator, sample_mode="sample")`` in
        ``StableDiffusionXLControlNetImg2ImgPipeline.prepare_latents`` / the inpaint pipeline's
        ``_encode_vae_image``: with a list of generators row ``i`` uses ``generator[i]``; the VAE
        runs in float32 when ``force_upcast`` (and is cast to the image's dtype afterwards, as
        there); SDXL ``latents_mean``/``latents_std`` are honoured when the VAE config has them.
        ``image``: ``(B, 3, H, W)`` in [-1, 1], already on the device in the pipeline's dtype.
        """
        vae = self.vae
        dtype = image.dtype
        if vae.config.force_upcast:
            image = image.float()
            vae.to(dtype=torch.float32)
        if isinstance(generator, list):
            latents = torch.cat(
                [retrieve_latents(vae.encode(image[i : i + 1]), generator=generator[i]) for i in range(image.shape[0])], dim=0
            )
        else:
            latents = retrieve_latents(vae.encode(image), generator=generator)
        if vae.config.force_upcast:
            vae.to(dtype)
        latents = latents.to(dtype)
        mean = getattr(vae.config, "latents_mean", None)
        std = getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            m = torch.tensor(mean).view(1, -1, 1, 1).to(device=latents.device, dtype=dtype)
            s = torch.tensor(std).view(1, -1, 1, 1).to(device=latents.device, dtype=dtype)
            return (latents - m) * vae.config.scaling_factor / s
        return vae.config.scaling_factor * latents

    @torch.no_grad()
    def prepare_image_latents(
        self, image: torch.Tensor, timestep: torch.Tensor, num_images: int, dtype: torch.dtype, device: Any, generator: Any
    ) -> torch.Tensor:
        """Image-to-image start latents: diffusers' ``StableDiffusionXLControlNetImg2ImgPipeline.prepare_latents``
        (``add_noise=True``) for one prompt and ``num_images`` images.

        ``image``: preprocessed pixels ``(B, 3, H, W)`` (or latents ``(B, 4, h, w)``); ``timestep``:
        the first kept timestep, one per image. With a list of generators the image is repeated to
        the batch before encoding, so every image samples its own latents from its own generator;
        the noise is drawn next from the same generator(s).
        """
        image = image.to(device=device, dtype=dtype)
        if image.shape[1] == self.vae.config.latent_channels:
            init_latents = image
        else:
            if isinstance(generator, list) and image.shape[0] < num_images:
                if num_images % image.shape[0]:
                    raise InvalidInputError(f"cannot repeat {image.shape[0]} images to {num_images}")
                image = torch.cat([image] * (num_images // image.shape[0]), dim=0)
            init_latents = self.encode_vae_image(image, generator)
        if num_images > init_latents.shape[0]:
            if num_images % init_latents.shape[0]:
                raise InvalidInputError(f"cannot repeat {init_latents.shape[0]} images to {num_images}")
            init_latents = torch.cat([init_latents] * (num_images // init_latents.shape[0]), dim=0)
        noise = randn_tensor(init_latents.shape, generator=generator, device=device, dtype=dtype)
        return self.scheduler.add_noise(init_latents, noise, timestep)

    @torch.no_grad()
    def encode_image_latents(
        self, image: Any, height: int, width: int, device: Any, generator: Any = None, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """Scaled VAE latents of a PIL image / array / [-1, 1] tensor, sampled with ``generator``
        (:meth:`encode_vae_image` after the pipeline's preprocessing); ``dtype`` defaults to the VAE's."""
        pixels = self.image_processor.preprocess(image, height=height, width=width).to(dtype=torch.float32)
        return self.encode_vae_image(pixels.to(device=device, dtype=dtype or self.vae.dtype), generator)

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
            strength: how much of the schedule runs, (0, 1]; at 1 the image is still noised to
                the first timestep (official img2img), or, with a mask, the start is pure noise
                (diffusers' inpainting).
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
