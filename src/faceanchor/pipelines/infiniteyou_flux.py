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

Several people (issue 15): ``region`` is the first identity's mask and each :class:`RegionIdentity`
adds one InfuseNet pass with its own identity tokens, control image (keypoints drawn for that
person alone, or black) and scale. Each pass's residuals are multiplied by its region in the
packed-latent token space (:func:`token_mask`: the mean of the pixel mask over each token's
16 × 16 pixel patch, in the row-major order of ``_pack_latents``) and summed; outside every region
no identity residual reaches the transformer. Regions must not overlap.

Memory: :meth:`InfiniteYouFluxPipeline.enable_model_cpu_offload` keeps one stage at a time on the
GPU, the official ``cpu_offload`` stages (CLIP + T5, the VAE for the control image, InfuseNet with
the transformer while denoising, the VAE to decode), with accelerate's hooks as diffusers' own
model CPU offload; 8-bit weights come from the loaders (:mod:`faceanchor.pipelines.quantization`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
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


def pixel_mask(mask: Any, width: int, height: int) -> torch.Tensor:
    """A region mask as a float ``(height, width)`` tensor in [0, 1]: ``uint8`` (PIL ``L``/``RGB``
    images, arrays, tensors; channel 0) divided by 255, ``bool`` as 0/1, floats as they are."""
    if isinstance(mask, Image.Image):
        mask = np.array(mask)
    t = torch.from_numpy(np.ascontiguousarray(mask)) if isinstance(mask, np.ndarray) else torch.as_tensor(mask)
    if t.ndim == 3:
        t = t[..., 0]
    if tuple(t.shape) != (int(height), int(width)):
        raise InvalidInputError(f"a region mask must be {height}x{width} (the output size), got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.to(torch.float32) / 255.0
    return t.to(torch.float32)


def token_mask(mask: Any, width: int, height: int, patch: int = 16) -> torch.Tensor:
    """A pixel-space region mask in FLUX's packed-latent token space: ``(tokens,)``, one weight per
    image token, the mean of the mask over that token's ``patch`` x ``patch`` pixels (VAE factor 8 ×
    the 2×2 latent packing), tokens in ``_pack_latents`` order (row-major over the
    ``height/patch`` x ``width/patch`` grid). A token no pixel of the mask reaches weighs 0."""
    m = pixel_mask(mask, width, height)
    if width % patch or height % patch:
        raise InvalidInputError(f"width and height must be multiples of {patch}, got {width}x{height}")
    return F.avg_pool2d(m[None, None], kernel_size=patch)[0, 0].reshape(-1)


@dataclass
class RegionIdentity:
    """One more person in the picture: its identity tokens (``(8, D)`` or ``(B, 8, D)``, from
    :meth:`InfiniteYouFluxPipeline.identity_tokens`), its control image (keypoints drawn for it
    alone; ``None``: black), its region ``mask`` at output size (see :func:`pixel_mask`) and its
    InfuseNet scale."""

    tokens: Any
    control: Any
    mask: Any
    scale: float = 1.0


@dataclass
class _InfusePass:
    tokens: torch.Tensor  # (n, T, D) identity tokens
    token_ids: torch.Tensor  # (T, 3) zero text ids of their length
    cond: torch.Tensor | None  # packed control latents (None until encoded)
    control: Any  # the control image
    scale: float
    mask: torch.Tensor | None  # (1, image tokens, 1) region weights; None: everywhere


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
        region: Any = None,
        more_identities: Sequence[RegionIdentity] = (),
    ) -> Any:
        """Images (``output_type`` ``pil``/``np``/``pt``) or packed latents (``latent``) for ``num_images``.

        ``region``: the first identity's mask (output size); its InfuseNet residuals act inside it
        only. ``more_identities``: more people, each in its own region (:class:`RegionIdentity`);
        then ``region`` is required and no two regions may overlap.
        """
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
        passes = self._passes(id_tokens, control, conditioning_scale, region, more_identities, width, height, n, prompt_embeds.dtype, text_ids.dtype)
        first = passes[0]
        first.cond = self.encode_control(first.control, width, height, n, control_generator)
        repeat_blocks = net.input_hint_block is not None
        c = tr.config.in_channels // 4
        latents, image_ids = base.prepare_latents(n, c, height, width, prompt_embeds.dtype, device, generator, latents)
        for p in passes[1:]:  # after the first identity's control and the latents: those stay as with one person
            p.cond = self.encode_control(p.control, width, height, n, control_generator)

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
            blocks = single = None
            for p in passes:
                scale = p.scale * keep[i]
                if scale == 0.0:
                    continue
                b, sb = net(
                    hidden_states=latents, controlnet_cond=p.cond, controlnet_mode=None, conditioning_scale=scale,
                    timestep=timestep / 1000, guidance=net_guidance, pooled_projections=pooled, encoder_hidden_states=p.tokens,
                    txt_ids=p.token_ids, img_ids=image_ids, return_dict=False,
                )
                blocks, single = _add(blocks, b, p.mask), _add(single, sb, p.mask)
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

    def _passes(self, id_tokens: Any, control: Any, scale: float, region: Any, more: Sequence[RegionIdentity],
                width: int, height: int, n: int, dtype: torch.dtype, ids_dtype: torch.dtype) -> list[_InfusePass]:
        """One InfuseNet pass per identity (the call's own first), checked; people at scale 0 are left out."""
        device = self.device
        more = list(more)
        if more and region is None:
            raise InvalidInputError("with several identities each needs its region: give region for the first one too")
        patch = self.base.vae_scale_factor * 2
        pixels: list[torch.Tensor] = []
        out = []
        for j, (tokens, ctrl, mask, s) in enumerate([(id_tokens, control, region, scale)] + [(x.tokens, x.control, x.mask, x.scale) for x in more], start=1):
            if not float(s) >= 0:
                raise InvalidInputError(f"identity {j} InfuseNet scale must be >= 0, got {s}")
            if j > 1 and mask is None:
                raise InvalidInputError(f"identity {j} needs its region mask")
            weights = None
            if mask is not None:
                px = pixel_mask(mask, width, height)
                for i, earlier in enumerate(pixels, start=1):
                    if bool(((earlier > 0) & (px > 0)).any()):
                        raise InvalidInputError(f"the regions of identities {i} and {j} overlap; give each person its own area")
                pixels.append(px)
                weights = token_mask(px, width, height, patch).to(device=device, dtype=dtype)[None, :, None]
            if j > 1 and float(s) == 0.0:
                continue  # adds nothing: no tokens, no control image encoded
            ids = self._tokens(tokens, n, device, dtype, j)
            ctrl = ctrl if ctrl is not None else control_image(width, height)
            out.append(_InfusePass(ids, torch.zeros(ids.shape[1], 3, device=device, dtype=ids_dtype), None, ctrl, float(s), weights))
        return out

    def _tokens(self, tokens: Any, n: int, device: torch.device, dtype: torch.dtype, j: int) -> torch.Tensor:
        ids = torch.as_tensor(tokens).to(device=device, dtype=dtype)
        if ids.ndim == 2:
            ids = ids[None]
        width = self.infusenet.config.joint_attention_dim
        who = "identity tokens" if j == 1 else f"identity {j} tokens"
        if ids.ndim != 3:
            raise InvalidInputError(f"{who} must be (T, D) or (B, T, D), got shape {tuple(ids.shape)}")
        if ids.shape[-1] != width:
            raise InvalidInputError(f"{who} are {ids.shape[-1]} wide, InfuseNet takes {width}")
        if ids.shape[0] != n:
            ids = ids.repeat_interleave(n // ids.shape[0], dim=0) if n % ids.shape[0] == 0 else ids[:1].repeat(n, 1, 1)
        return ids

    def decode(self, latents: torch.Tensor, width: int, height: int, output_type: str = "pil") -> Any:
        """Packed latents → images (unpack, ``z / scale + shift``, VAE decode)."""
        base, vae = self.base, self.base.vae
        with torch.no_grad():
            z = base._unpack_latents(latents, height, width, base.vae_scale_factor)
            z = (z / vae.config.scaling_factor + vae.config.shift_factor).to(vae.dtype)
            image = vae.decode(z, return_dict=False)[0]
        self._offload()  # all models back on the CPU, as diffusers' maybe_free_model_hooks
        return base.image_processor.postprocess(image, output_type=output_type)


def _add(total: Any, residuals: Any, mask: torch.Tensor | None) -> Any:
    """``total`` plus one pass's residuals (each ``(B, image tokens, D)``) weighted by its token mask."""
    if residuals is None:
        return total
    if mask is not None:
        residuals = [r * mask for r in residuals]
    return list(residuals) if total is None else [a + b for a, b in zip(total, residuals)]
