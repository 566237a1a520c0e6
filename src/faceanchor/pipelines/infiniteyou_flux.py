"""InfiniteYou on FLUX: InfuseNet residuals driven by identity tokens, added to the FLUX transformer.

The arithmetic of bytedance/InfiniteYou's ``FluxInfuseNetPipeline`` (``pipelines/pipeline_flux_infusenet.py``)
and ``InfUFluxPipeline.__call__`` (``pipelines/pipeline_infu_flux.py``), built on diffusers' FLUX
parts (``FluxPipeline.encode_prompt`` / ``prepare_latents`` / ``_pack_latents`` /
``_unpack_latents``, its ``calculate_shift`` / ``retrieve_timesteps``):

* text: CLIP pooled + T5 states as FLUX.1 encodes them; the transformer reads the T5 states;
* identity: the Resampler's ``(B, 8, 4096)`` tokens are **InfuseNet's** encoder states (not the
  text), with all-zero text ids of their length; InfuseNet shares the transformer's pooled text;
* control image: keypoints drawn on black, at the keypoints of the face found on the pose photo
  resized and padded to the output size (:func:`resize_and_pad` + :func:`control_image`); black
  without a pose photo. It goes through the VAE (``(z - shift) * scale``, a sample of the
  posterior) and is packed 2×2 like the latents;
* schedule: ``sigmas = linspace(1, 1/n, n)`` shifted by ``mu`` from the image token count;
* each step: InfuseNet(latents, control, identity tokens, ``t/1000``, guidance 1.0 when it has a
  guidance embedding) → residuals scaled by ``conditioning_scale × keep``, where keep is 0 outside
  ``[guidance_start, guidance_end]`` (``i/n < start or (i+1)/n > end``); the transformer gets them
  with ``guidance_scale`` as its distilled guidance; a flow-matching Euler step. Outside the window
  InfuseNet is not run (its residuals would be multiplied by 0).

User LoRAs (:meth:`InfiniteYouFluxPipeline.set_loras`, :mod:`faceanchor.pipelines.loras`): adapters on
the FLUX transformer as the official ``load_loras`` adds them, active for the requests that ask for
them only; the base weights are never changed.

Memory: :meth:`InfiniteYouFluxPipeline.enable_model_cpu_offload` keeps one stage at a time on the
GPU, the official ``cpu_offload`` stages (CLIP + T5, the VAE for the control image, InfuseNet with
the transformer while denoising, the VAE to decode), with accelerate's hooks as diffusers' own
model CPU offload; 8-bit weights come from the loaders (:mod:`faceanchor.pipelines.quantization`).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from faceanchor.errors import InvalidInputError


def resize_and_pad(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The pose photo fitted to ``size = (width, height)`` as InfiniteYou does: the side of the
    target's shorter dimension is matched (the other follows the photo's aspect, truncated),
    LANCZOS, centred on white (offsets floored); what overflows is cut."""
    tw, th = int(size[0]), int(size[1])
    sw, sh = image.size
    if tw <= th:
        nw, nh = tw, int(tw * (sh / sw))
    else:
        nw, nh = int(th * (sw / sh)), th
    canvas = Image.new("RGB", (tw, th), (255, 255, 255))
    canvas.paste(image.convert("RGB").resize((nw, nh), Image.LANCZOS), ((tw - nw) // 2, (th - nh) // 2))
    return canvas


def control_image(width: int, height: int, kps: np.ndarray | None = None) -> Image.Image:
    """The InfuseNet control image: the 5 keypoints drawn on black (InstantID's ``draw_kps``
    geometry), or all black without keypoints."""
    if kps is None:
        return Image.fromarray(np.zeros((int(height), int(width), 3), np.uint8), "RGB")
    from faceanchor.face.kps import draw_kps

    return draw_kps((int(width), int(height)), kps)


def control_keep(steps: int, start: float, end: float) -> list[float]:
    """Per step 1.0 inside the InfuseNet window, else 0.0 (the official test, strict at the ends)."""
    return [1.0 - float(i / steps < start or (i + 1) / steps > end) for i in range(steps)]


class InfiniteYouFluxPipeline:
    """A diffusers ``FluxPipeline`` (``base``), InfuseNet (a ``FluxControlNetModel``) and the identity projection."""

    def __init__(self, base: Any, infusenet: Any, projection: Any = None):
        if infusenet.config.joint_attention_dim != base.transformer.config.joint_attention_dim:
            raise InvalidInputError(
                f"InfuseNet takes {infusenet.config.joint_attention_dim}-wide states but the FLUX transformer "
                f"{base.transformer.config.joint_attention_dim}-wide; use the InfuseNetModel made for FLUX.1"
            )
        self.base = base
        self.infusenet = infusenet
        self.projection = projection
        self._offload_hooks: list[Any] = []
        self._offload_device: torch.device | None = None
        from faceanchor.pipelines.loras import LoraSet

        self.loras = LoraSet()

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device = "cuda") -> None:
        """Model CPU offload in the official stages: each model moves to ``device`` when it runs and the
        previous stage goes back to the CPU; InfuseNet and the transformer share the denoising stage."""
        from accelerate import cpu_offload_with_hook

        dev = torch.device(device)
        if gpu_id is not None:
            dev = torch.device(dev.type, gpu_id)
        base = self.base
        for m in (base.text_encoder, base.text_encoder_2, base.vae, base.transformer, self.infusenet):
            m.to("cpu")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        _, clip = cpu_offload_with_hook(base.text_encoder, dev)
        _, t5 = cpu_offload_with_hook(base.text_encoder_2, dev, prev_module_hook=clip)
        _, vae = cpu_offload_with_hook(base.vae, dev, prev_module_hook=t5)
        _, net = cpu_offload_with_hook(self.infusenet, dev, prev_module_hook=vae)
        _, tr = cpu_offload_with_hook(base.transformer, dev, prev_module_hook=vae)
        self._offload_hooks = [clip, t5, vae, net, tr]
        self._offload_device = dev

    def set_loras(self, loras: list[Any]) -> None:
        """Exactly ``loras`` (:class:`~faceanchor.pipelines.loras.LoraFile`) active on the FLUX transformer
        (and CLIP text encoder) for the next generations, as the official ``load_loras`` (diffusers'
        ``load_lora_weights`` + ``set_adapters``); none: every LoRA layer off. With model CPU offload the
        hooks come off while a LoRA loads (diffusers would put its own pipeline offload in their place)
        and go back as they were."""
        if not loras and not self.loras.loaded:
            return
        if not self._offload_hooks or not self.loras.needs_loading(loras):
            self.loras.apply(self.base, loras)
            return
        for hook in self._offload_hooks:
            hook.remove()
        self._offload_hooks = []
        try:
            self.loras.apply(self.base, loras)
        finally:
            self.enable_model_cpu_offload(device=self._offload_device)

    def _offload(self, which: slice = slice(None)) -> None:
        """Send the offloaded models of ``which`` stages back to the CPU (no-op without offload)."""
        for hook in self._offload_hooks[which]:
            hook.offload()

    @property
    def device(self) -> torch.device:
        return self.base._execution_device

    def identity_tokens(self, embedding: Any) -> torch.Tensor:
        from faceanchor.adapters.infiniteyou import identity_tokens

        if self.projection is None:
            raise InvalidInputError("no InfiniteYou projection loaded (image_proj_model.bin)")
        return identity_tokens(self.projection, torch.as_tensor(embedding, dtype=torch.float32))

    def encode_control(self, image: Image.Image | torch.Tensor, width: int, height: int, batch: int,
                       generator: torch.Generator | None) -> torch.Tensor:
        """The control image as packed VAE latents ``(batch, tokens, 4·C)`` (one posterior sample)."""
        base, vae = self.base, self.base.vae
        x = image if isinstance(image, torch.Tensor) else base.image_processor.preprocess(image, height=height, width=width)
        x = x.repeat_interleave(batch if x.shape[0] == 1 else 1, dim=0).to(device=self.device, dtype=vae.dtype)
        z = vae.encode(x).latent_dist.sample(generator)
        z = (z - vae.config.shift_factor) * vae.config.scaling_factor
        c = base.transformer.config.in_channels // 4
        return base._pack_latents(z, batch, c, z.shape[2], z.shape[3])

    @torch.no_grad()
    def generate(
        self,
        id_tokens: torch.Tensor,
        *,
        prompt: str | None = None,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        control: Image.Image | torch.Tensor | None = None,
        width: int = 864,
        height: int = 1152,
        num_images: int = 1,
        num_inference_steps: int = 30,
        guidance_scale: float = 3.5,
        conditioning_scale: float = 1.0,
        guidance_start: float = 0.0,
        guidance_end: float = 1.0,
        infusenet_guidance: float = 1.0,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        control_generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        max_sequence_length: int = 512,
        callback_on_step_end: Callable[..., dict] | None = None,
        output_type: str = "pil",
    ) -> Any:
        """Images (``output_type`` ``pil``/``np``/``pt``) or packed latents (``latent``) for ``num_images``."""
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        base, net, tr = self.base, self.infusenet, self.base.transformer
        mult = base.vae_scale_factor * 2
        if width % mult or height % mult:
            raise InvalidInputError(f"width and height must be multiples of {mult} for this FLUX model, got {width}x{height}")
        if not 0.0 <= guidance_start < guidance_end <= 1.0:
            raise InvalidInputError(f"InfuseNet guidance start/end must satisfy 0 <= start < end <= 1, got {guidance_start}/{guidance_end}")
        device, n = self.device, int(num_images)
        prompt_embeds, pooled, text_ids = base.encode_prompt(
            prompt=prompt if prompt_embeds is None else None, prompt_2=None, prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, device=device, num_images_per_prompt=n, max_sequence_length=max_sequence_length,
        )
        if prompt_embeds.shape[0] != n:  # given embeddings are not repeated by encode_prompt
            prompt_embeds = prompt_embeds.repeat_interleave(n // prompt_embeds.shape[0], dim=0)
            pooled = pooled.repeat_interleave(n // pooled.shape[0], dim=0)
        ids = torch.as_tensor(id_tokens).to(device=device, dtype=prompt_embeds.dtype)
        if ids.ndim == 2:
            ids = ids[None]
        if ids.shape[-1] != net.config.joint_attention_dim:
            raise InvalidInputError(f"identity tokens are {ids.shape[-1]} wide, InfuseNet takes {net.config.joint_attention_dim}")
        if ids.shape[0] != n:
            ids = ids.repeat_interleave(n // ids.shape[0], dim=0) if n % ids.shape[0] == 0 else ids[:1].repeat(n, 1, 1)
        id_ids = torch.zeros(ids.shape[1], 3, device=device, dtype=text_ids.dtype)

        if control is None:
            control = control_image(width, height)
        cond = self.encode_control(control, width, height, n, control_generator)
        repeat_blocks = net.input_hint_block is not None
        c = tr.config.in_channels // 4
        latents, image_ids = base.prepare_latents(n, c, height, width, prompt_embeds.dtype, device, generator, latents)

        steps = int(num_inference_steps)
        sigmas = np.linspace(1.0, 1 / steps, steps)
        sc = base.scheduler.config
        mu = calculate_shift(latents.shape[1], sc.get("base_image_seq_len", 256), sc.get("max_image_seq_len", 4096),
                             sc.get("base_shift", 0.5), sc.get("max_shift", 1.15))
        timesteps, steps = retrieve_timesteps(base.scheduler, steps, device, sigmas=sigmas, mu=mu)
        keep = control_keep(len(timesteps), guidance_start, guidance_end)
        net_guidance = torch.full((n,), float(infusenet_guidance), device=device) if net.config.guidance_embeds else None
        tr_guidance = torch.full((n,), float(guidance_scale), device=device) if tr.config.guidance_embeds else None

        for i, t in enumerate(timesteps):
            timestep = t.expand(n).to(latents.dtype)
            scale = float(conditioning_scale) * keep[i]
            blocks = single = None
            if scale != 0.0:
                blocks, single = net(
                    hidden_states=latents, controlnet_cond=cond, controlnet_mode=None, conditioning_scale=scale,
                    timestep=timestep / 1000, guidance=net_guidance, pooled_projections=pooled, encoder_hidden_states=ids,
                    txt_ids=id_ids, img_ids=image_ids, return_dict=False,
                )
            noise = tr(
                hidden_states=latents, timestep=timestep / 1000, guidance=tr_guidance, pooled_projections=pooled,
                encoder_hidden_states=prompt_embeds, controlnet_block_samples=blocks, controlnet_single_block_samples=single,
                txt_ids=text_ids, img_ids=image_ids, return_dict=False, controlnet_blocks_repeat=repeat_blocks,
            )[0]
            latents = base.scheduler.step(noise, t, latents, return_dict=False)[0]
            if callback_on_step_end is not None:
                out = callback_on_step_end(base, i, t, {"latents": latents}) or {}
                latents = out.pop("latents", latents)
        self._offload(slice(3, None))  # InfuseNet and the transformer off the GPU before the VAE decodes
        if output_type == "latent":
            return latents
        return self.decode(latents, width, height, output_type)

    def decode(self, latents: torch.Tensor, width: int, height: int, output_type: str = "pil") -> Any:
        """Packed latents → images (unpack, ``z / scale + shift``, VAE decode)."""
        base, vae = self.base, self.base.vae
        with torch.no_grad():
            z = base._unpack_latents(latents, height, width, base.vae_scale_factor)
            z = (z / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype)
            image = vae.decode(z, return_dict=False)[0]
        self._offload()  # all models back on the CPU, as diffusers' maybe_free_model_hooks
        return base.image_processor.postprocess(image, output_type=output_type)
