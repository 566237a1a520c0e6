"""InstantID image-to-image and inpainting on SDXL (SDEdit start, optional latent mask blending).

Built on :class:`~faceanchor.pipelines.instantid_sdxl.InstantIDSDXLPipeline` and sharing its
components and loaded identity adapter (:meth:`InstantIDImg2ImgPipeline.from_instantid`):
prompt encoding, identity tokens (``encode_identity``), IdentityNet with its region mask and
extra ControlNets are the parent's; what changes is where denoising starts and what is kept.

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

from typing import Any, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from faceanchor.errors import Cancelled, InvalidInputError
from faceanchor.pipelines.instantid_sdxl import (
    CancelCheck,
    ExtraControl,
    InstantIDSDXLPipeline,
    StepCallback,
    _resize_mask,
    mask_to_tensor,
)


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

    # ------------------------------------------------------------------ helpers
    def start_timesteps(self, num_inference_steps: int, strength: float, device: Any) -> tuple[torch.Tensor, int]:
        """The kept timesteps for ``strength`` and their count (diffusers' ``get_timesteps``)."""
        if not 0.0 < strength <= 1.0:
            raise InvalidInputError(f"strength must be in (0, 1], got {strength}")
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        order = getattr(self.scheduler, "order", 1)
        init = min(int(num_inference_steps * strength), num_inference_steps)
        t_start = max(num_inference_steps - init, 0)
        timesteps = self.scheduler.timesteps[t_start * order :]
        if len(timesteps) == 0:
            raise InvalidInputError(
                f"strength {strength} with {num_inference_steps} steps leaves no denoising step; raise either"
            )
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * order)
        return timesteps, len(timesteps)

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

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        prompt: str | None = None,
        face_embedding: Any = None,
        kps_image: Any = None,
        image: Any = None,
        *,
        strength: float = 0.6,
        mask_image: Any = None,
        negative_prompt: str | None = None,
        face_mask: Any = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        num_images: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        identity_scale: float = 0.8,
        adapter_scale: float | None = None,
        control_guidance_start: float = 0.0,
        control_guidance_end: float = 1.0,
        negative_embedding_noise: float = 0.0,
        extra_controls: Sequence[ExtraControl] = (),
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        on_step: StepCallback | None = None,
        cancel: CancelCheck | None = None,
        output_type: str = "pil",
    ) -> StableDiffusionXLPipelineOutput:
        """Re-render ``image`` (PIL) with the identity; arguments as the parent's ``__call__`` plus:

        Args:
            image: the starting image (resized to ``width`` × ``height``, default its own size
                rounded down to the VAE grid).
            strength: how much of the schedule runs, (0, 1]; 1 starts from pure noise.
            mask_image: optional inpaint mask (white = regenerate); outside it the latents
                follow the image's noised latents every step.
        """
        if image is None:
            raise InvalidInputError("image-to-image needs an image to start from")
        extra_controls = list(extra_controls)
        if isinstance(image, PIL.Image.Image) and (height is None or width is None):
            f = self.vae_scale_factor
            width = width or image.width // f * f
            height = height or image.height // f * f
        embeds = self.check_instantid_inputs(
            prompt, face_embedding, kps_image, num_images, num_inference_steps, guidance_scale, generator,
            identity_scale, adapter_scale, control_guidance_start, control_guidance_end, negative_embedding_noise,
            extra_controls, height, width, prompt_embeds,
        )
        adapter = self._require_adapter()
        if adapter_scale is not None:
            adapter.set_scale(adapter_scale)

        # 1. Call parameters (as the parent)
        self._guidance_scale = guidance_scale
        self._clip_skip = None
        self._cross_attention_kwargs = None
        self._denoising_end = None
        self._interrupt = False
        do_cfg = self.do_classifier_free_guidance
        device = self._execution_device
        nets = [self.controlnet] + [x.controlnet for x in extra_controls]
        scales = [float(identity_scale)] + [float(x.scale) for x in extra_controls]
        starts = [control_guidance_start] + [control_guidance_start if x.guidance_start is None else x.guidance_start for x in extra_controls]
        ends = [control_guidance_end] + [control_guidance_end if x.guidance_end is None else x.guidance_end for x in extra_controls]

        # 2. Text
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = self.encode_prompt(
            prompt, None, device, num_images, do_cfg, negative_prompt, None,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
        )

        # 3. Control images
        images = []
        for net, img in zip(nets, [kps_image] + [x.image for x in extra_controls]):
            images.append(self.prepare_image(
                image=img, width=width, height=height, batch_size=num_images, num_images_per_prompt=num_images,
                device=device, dtype=net.dtype, do_classifier_free_guidance=do_cfg, guess_mode=False,
            ))
            height, width = images[0].shape[-2:]

        # 4. Timesteps cut by strength
        timesteps, n_steps = self.start_timesteps(num_inference_steps, strength, device)
        self._num_timesteps = n_steps

        # 5. Start latents: the image's latents noised to the first kept timestep
        image_latents = self.encode_image_latents(image, height, width, device).to(prompt_embeds.dtype)
        image_latents = image_latents.repeat(num_images // image_latents.shape[0], 1, 1, 1) if image_latents.shape[0] != num_images else image_latents
        noise = randn_tensor(tuple(image_latents.shape), generator=generator, device=device, dtype=image_latents.dtype)
        if strength >= 1.0:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(num_images))
        blend = None
        if mask_image is not None:
            blend = latent_mask(mask_image, height, width, self.vae_scale_factor, device, latents.dtype)
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            gs = torch.tensor(self.guidance_scale - 1).repeat(num_images)
            timestep_cond = self.get_guidance_scale_embedding(gs, embedding_dim=self.unet.config.time_cond_proj_dim).to(
                device=device, dtype=latents.dtype
            )

        # 6. Identity tokens
        id_tokens = self.encode_identity(embeds, num_images, do_cfg, negative_embedding_noise, generator, device, self.unet.dtype)

        # 7. Keep-lists, region masks, time ids
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, 0.0)
        keep = [
            [1.0 - float(i / n_steps < s or (i + 1) / n_steps > e) for s, e in zip(starts, ends)]
            for i in range(n_steps)
        ]
        region = ip_region = None
        if face_mask is not None:
            region = mask_to_tensor(face_mask, height, width, device, prompt_embeds.dtype)
            ip_region = mask_to_tensor(face_mask, height, width, self.unet.device, self.unet.dtype)
        add_time_ids = self._get_add_time_ids(
            tuple(images[0].shape[-2:]), (0, 0), (height, width), dtype=prompt_embeds.dtype,
            text_encoder_projection_dim=int(self.text_encoder_2.config.projection_dim)
            if self.text_encoder_2 is not None else int(pooled_prompt_embeds.shape[-1]),
        )
        add_text_embeds = pooled_prompt_embeds
        if do_cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)
            add_text_embeds = torch.cat([negative_pooled_prompt_embeds, add_text_embeds], dim=0)
            add_time_ids = torch.cat([add_time_ids, add_time_ids], dim=0)
        prompt_embeds = prompt_embeds.to(device)
        add_text_embeds = add_text_embeds.to(device)
        add_time_ids = add_time_ids.to(device).repeat(num_images, 1)
        encoder_hidden_states = torch.cat([prompt_embeds, id_tokens], dim=1)
        added_cond_kwargs = {"text_embeds": add_text_embeds, "time_ids": add_time_ids}

        # 8. Denoising loop (the parent's step, plus the inpaint blend)
        with adapter.region(ip_region):
            for i, t in enumerate(timesteps):
                if cancel is not None and cancel():
                    raise Cancelled(f"generation was cancelled before step {i + 1} of {n_steps}")
                latent_model_input = torch.cat([latents] * 2) if do_cfg else latents
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
                downs_list, mids = [], []
                for k, net in enumerate(nets):
                    down, mid = net(
                        latent_model_input, t,
                        encoder_hidden_states=id_tokens if k == 0 else prompt_embeds,
                        controlnet_cond=images[k], conditioning_scale=scales[k] * keep[i][k], guess_mode=False,
                        added_cond_kwargs=added_cond_kwargs, return_dict=False,
                    )
                    if k == 0 and region is not None:
                        down = [d * _resize_mask(region, d) for d in down]
                        mid = mid * _resize_mask(region, mid)
                    downs_list.append(down)
                    mids.append(mid)
                if len(nets) == 1:
                    down_res, mid_res = downs_list[0], mids[0]
                else:
                    mid_res = torch.stack(mids).sum(dim=0)
                    down_res = [torch.stack(ds).sum(dim=0) for ds in zip(*downs_list)]
                noise_pred = self.unet(
                    latent_model_input, t, encoder_hidden_states=encoder_hidden_states, timestep_cond=timestep_cond,
                    down_block_additional_residuals=down_res, mid_block_additional_residual=mid_res,
                    added_cond_kwargs=added_cond_kwargs, return_dict=False,
                )[0]
                if do_cfg:
                    uncond, text = noise_pred.chunk(2)
                    noise_pred = uncond + guidance_scale * (text - uncond)
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if blend is not None:
                    keep_latents = image_latents
                    if i < n_steps - 1:
                        keep_latents = self.scheduler.add_noise(image_latents, noise, timesteps[i + 1 : i + 2].repeat(num_images))
                    latents = (1 - blend) * keep_latents + blend * latents
                if on_step is not None:
                    on_step(i + 1, n_steps)

        # 9. Decode
        if output_type == "latent":
            return StableDiffusionXLPipelineOutput(images=latents)
        needs_upcasting = self.vae.dtype == torch.float16 and self.vae.config.force_upcast
        if needs_upcasting:
            self.upcast_vae()
            latents = latents.to(next(iter(self.vae.post_quant_conv.parameters())).dtype)
        mean = getattr(self.vae.config, "latents_mean", None)
        std = getattr(self.vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std_t = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std_t / self.vae.config.scaling_factor + mean_t
        else:
            latents = latents / self.vae.config.scaling_factor
        out = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        if needs_upcasting:
            self.vae.to(dtype=torch.float16)
        out = self.image_processor.postprocess(out, output_type=output_type)
        self.maybe_free_model_hooks()
        return StableDiffusionXLPipelineOutput(images=out)
