"""InstantID on SDXL: identity tokens through decoupled cross-attention + IdentityNet.

Numerically the official ``StableDiffusionXLInstantIDPipeline`` (instantX-research/InstantID,
``pipeline_stable_diffusion_xl_instantid.py``) with the region control and extra ControlNets of
``pipeline_stable_diffusion_xl_instantid_full.py``:

* prompt encoding: diffusers' SDXL ``encode_prompt`` (two CLIP encoders, pooled embeds, time
  ids), as the base official pipeline;
* identity: the embedding (``(D,)``, ``(B, D)`` or ``(B, T, D)``) and an all-zeros
  unconditional embedding go through the adapter's Resampler in one batch
  ``[uncond, cond]``; the UNet sees ``cat(text_tokens, id_tokens)``;
* IdentityNet (the pipeline's ``controlnet``) gets ``encoder_hidden_states = id_tokens`` (only
  the identity tokens, CFG-doubled) and the keypoint image; extra ControlNets (pose, canny,
  depth) get the text tokens; residuals are summed as the official full pipeline does
  (``stack(...).sum(0)``);
* ``control_guidance_start/end`` keep-lists and ``conditioning_scale`` per net as diffusers;
* ``face_mask`` (``enhance_face_region``): IdentityNet's residuals are multiplied by the mask
  resized (bilinear) to each residual's grid, and every IP layer's identity attention by the
  mask resized (nearest) to its token grid; extra ControlNets are not masked;
* no CFG when ``guidance_scale <= 1`` (LCM): only the conditional batch is run.

Fixed vs the official code: more than one image (the full pipeline crashed, its prompt
embeddings were not repeated) — identity tokens, control images, time ids and prompt
embeddings are all repeated per image; per-image generators are accepted. Added: optional
noise on the unconditional identity embedding; the identity processors are checked before every
run and diffusers' processor-replacing memory switches are refused (:mod:`.processors`).

Separate requests in one batch (the batched worker): per image, ``face_embedding`` rows,
``kps_image`` / ``face_mask`` / extra control images as lists, pre-encoded ``prompt_embeds``
with one row per image, and ``identity_scale`` / ``adapter_scale`` as sequences (per-sample
scale tensors, each product rounded once as a float scale would be); each image then equals
the one its own call would give with its own generator (up to float tolerance).

Per-step hook: diffusers' ``callback_on_step_end(pipe, step_index, timestep, callback_kwargs)``
with ``callback_on_step_end_tensor_inputs`` (see :data:`InstantIDSDXLPipeline._callback_tensor_inputs`);
the returned dict's entries replace those tensors. Progress and cancellation are such a
callback (:func:`faceanchor.pipelines.callbacks.step_callback`); raising in it stops between steps.

``__call__`` runs numbered steps (check inputs, prompt, control images, timesteps, latents,
identity tokens, per-step conditioning, :meth:`~InstantIDSDXLPipeline.denoise`,
:meth:`~InstantIDSDXLPipeline.decode`); where denoising starts is a :class:`NoiseStart`, which
image-to-image / inpainting (``instantid_img2img.ImageStart``) replaces.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionXLControlNetPipeline
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.stable_diffusion_xl import StableDiffusionXLPipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from faceanchor.adapters.instantid import InstantIDAdapter
from faceanchor.errors import InvalidInputError
from faceanchor.pipelines.callbacks import StepEndCallback
from faceanchor.adapters.attention_slicing import sliced_attention
from faceanchor.adapters.condition_cache import condition_embedding_cache
from faceanchor.adapters.kv_cache import cross_attention_cache
from faceanchor.pipelines.processors import refuse_processor_switch, require_processors

AfterStep = Callable[[int, torch.Tensor], torch.Tensor]  # (step index, latents) -> latents


@dataclass
class ExtraControl:
    """One more ControlNet next to IdentityNet (pose, canny, depth...).

    ``guidance_start``/``guidance_end`` default to the identity ones (the official code uses one
    start/end for every net).
    """

    controlnet: Any  # diffusers ControlNetModel
    image: Any  # PIL image, array or tensor, like any ControlNet condition
    scale: float = 0.4
    guidance_start: float | None = None
    guidance_end: float | None = None


@dataclass
class RegionIdentity:
    """One more person in the picture, held to its own region (InstantID's region control).

    The call's own ``face_embedding``/``kps_image``/``face_mask`` are the first identity; each
    of these adds one IdentityNet pass (its tokens and keypoint image, residuals times its mask,
    summed) and one group of identity tokens in the UNet's cross-attention (attended with its
    mask and ``adapter_scale``). Outside every region no identity acts.
    """

    embedding: Any  # (D,) or (T, D), like face_embedding
    kps_image: Any  # its IdentityNet keypoint image (output size)
    mask: Any  # its region: (H, W[, C]) at output size, > 0 inside
    identity_scale: float = 0.8
    adapter_scale: float = 0.8


@dataclass
class _IdentityPass:
    tokens: torch.Tensor  # its identity tokens (CFG-batched)
    image: torch.Tensor  # its prepared keypoint image
    scale: float  # IdentityNet conditioning scale
    region: torch.Tensor  # (H, W) mask for its residuals


@dataclass
class DenoiseInputs:
    """What every denoising step needs besides the latents (built once per call)."""

    nets: list[Any]  # IdentityNet first, then the extra ControlNets
    images: list[torch.Tensor]  # their prepared, CFG-batched condition images
    scales: list[Any]  # conditioning scale per net (IdentityNet's: a float, or a per-sample (N,) tensor)
    windows: list[tuple[float, float]]  # control_guidance start/end per net
    region: torch.Tensor | None  # face mask for IdentityNet's residuals, (H, W) or per-sample (N, H, W)
    id_tokens: torch.Tensor  # IdentityNet's encoder states
    prompt_embeds: torch.Tensor  # text tokens (the extra ControlNets')
    encoder_hidden_states: torch.Tensor  # text + identity tokens (the UNet's)
    added_cond_kwargs: dict[str, torch.Tensor]  # pooled text embeds and time ids
    timestep_cond: torch.Tensor | None  # guidance embedding (LCM-distilled UNets)
    extra_step_kwargs: dict[str, Any]  # for scheduler.step
    more: list[_IdentityPass] = field(default_factory=list)  # identities after the first (region control)


class NoiseStart:
    """Where denoising starts: text-to-image, pure noise (or ``latents``) over the full schedule.

    :meth:`InstantIDSDXLPipeline.__call__` asks its ``start`` for the timesteps (step 4), then
    for the initial latents and an optional hook ``after_step(i, latents) -> latents`` run after
    every scheduler step (step 5). Subclasses start elsewhere (image-to-image, inpainting).
    """

    def __init__(self, latents: torch.Tensor | None = None):
        self.initial_latents = latents

    def timesteps(self, pipe: InstantIDSDXLPipeline, num_inference_steps: int, device: Any) -> torch.Tensor:
        pipe.scheduler.set_timesteps(num_inference_steps, device=device)
        return pipe.scheduler.timesteps

    def latents(
        self, pipe: InstantIDSDXLPipeline, timesteps: torch.Tensor, num_images: int, height: int, width: int,
        dtype: torch.dtype, device: Any, generator: Any,
    ) -> tuple[torch.Tensor, AfterStep | None]:
        latents = pipe.prepare_latents(
            num_images, pipe.unet.config.in_channels, height, width, dtype, device, generator, self.initial_latents
        )
        return latents, None


def face_box_mask(bbox: Sequence[float], width: int, height: int) -> np.ndarray:
    """The official ``enhance_face_region`` mask: ``(height, width, 3)`` uint8, 255 inside the box.

    As the official demo, box corners are truncated with ``int()``; unlike it, they are clamped
    to the image first (a negative corner made the official slice wrap around and miss the face).
    """
    x1, y1, x2, y2 = (int(v) for v in bbox)
    x1, x2 = max(0, min(x1, width)), max(0, min(x2, width))
    y1, y2 = max(0, min(y1, height)), max(0, min(y2, height))
    mask = np.zeros((height, width, 3), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 255
    return mask


def mask_to_tensor(mask: Any, height: int, width: int, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """A face-region mask as ``(height, width)`` in [0, 1], computed like the official code.

    ``uint8`` images/arrays (PIL ``L``/``RGB``, ``(H, W)`` or ``(H, W, C)``) use channel 0 divided
    by 255 after conversion to ``dtype`` (official ``control_mask``); ``bool`` arrays map to 0/1;
    float arrays/tensors are taken as they are. A mask of another size is resized (nearest).
    """
    if isinstance(mask, PIL.Image.Image):
        if mask.size != (width, height):
            mask = mask.resize((width, height), PIL.Image.NEAREST)
        mask = np.array(mask)
    if isinstance(mask, np.ndarray):
        arr = mask[:, :, 0] if mask.ndim == 3 else mask
        if arr.dtype == np.bool_:
            t = torch.from_numpy(arr.astype(np.float32))
        elif arr.dtype == np.uint8:
            t = torch.from_numpy(np.ascontiguousarray(arr)).to(dtype=dtype) / 255.0
        else:
            t = torch.from_numpy(np.ascontiguousarray(arr.astype(np.float32)))
    elif isinstance(mask, torch.Tensor):
        t = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] in (1, 3, 4) else mask
        t = t.float() if t.dtype == torch.bool else t
        if t.dtype == torch.uint8:
            t = t.to(dtype=dtype) / 255.0
    else:
        raise InvalidInputError(f"face_mask must be a PIL image, numpy array or tensor, got {type(mask).__name__}")
    if t.ndim != 2:
        raise InvalidInputError(f"face_mask must be (H, W) or (H, W, C), got shape {tuple(t.shape)}")
    if tuple(t.shape) != (height, width):
        t = F.interpolate(t.float()[None, None], size=(height, width), mode="nearest")[0, 0]
    return t.to(device=device, dtype=dtype)


class InstantIDSDXLPipeline(StableDiffusionXLControlNetPipeline):
    """SDXL + InstantID. ``controlnet`` is IdentityNet; load an adapter before calling.

    Build from components (as ``StableDiffusionXLControlNetPipeline``)::

        pipe = InstantIDSDXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                                     tokenizer_2=tok2, unet=unet, controlnet=identitynet,
                                     scheduler=EulerDiscreteScheduler.from_config(...))
        pipe.load_instantid_adapter("ip-adapter.bin", scale=0.8)
        out = pipe("a photo of a person", face_embedding=emb, kps_image=kps).images
    """

    #: Tensors a ``callback_on_step_end`` may read and replace (diffusers' names where they exist):
    #: ``latents``; ``prompt_embeds``, ``add_text_embeds``, ``add_time_ids`` (CFG-batched, as the
    #: UNet sees them); ``image`` (IdentityNet's condition image); ``id_tokens`` (identity tokens).
    _callback_tensor_inputs = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids", "image", "id_tokens"]
    # Cross-attention keys/values once per generation (faceanchor.adapters.kv_cache); False runs
    # the official per-step recomputation (the benchmarks' baseline). Outputs are identical.
    cache_cross_attention: bool = True
    # ControlNet condition-image embeddings once per generation (faceanchor.adapters.condition_cache);
    # False runs them at every step, as the official pipeline does. Outputs are identical.
    cache_control_condition: bool = True
    # Attention over query chunks of this many tokens, identity processors kept
    # (faceanchor.adapters.attention_slicing; setting speed_attention_slicing); None: unsliced.
    attention_slice_size: int | None = None

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        text_encoder_2: Any,
        tokenizer: Any,
        tokenizer_2: Any,
        unet: Any,
        controlnet: Any,
        scheduler: Any,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = False,
        feature_extractor: Any = None,
        image_encoder: Any = None,
    ):
        super().__init__(
            vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
            unet=unet, controlnet=controlnet, scheduler=scheduler, force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
            add_watermarker=add_watermarker, feature_extractor=feature_extractor, image_encoder=image_encoder,
        )
        self.identity_adapter: InstantIDAdapter | None = None

    # ------------------------------------------------------------------ adapter lifecycle
    def load_instantid_adapter(self, adapter: InstantIDAdapter | Any, *, scale: float = 0.8, dim_head: int = 64) -> InstantIDAdapter:
        """Install an :class:`InstantIDAdapter` or one read from a checkpoint path / state dict."""
        if self.identity_adapter is not None:
            self.unload_instantid_adapter()
        if not isinstance(adapter, InstantIDAdapter):
            adapter = InstantIDAdapter.from_checkpoint(adapter, self.unet, scale=scale, dim_head=dim_head)
        else:
            adapter.set_scale(scale)
        self.identity_adapter = adapter.load(self.unet)
        return adapter

    def set_ip_adapter_scale(self, scale: float) -> None:  # same name as diffusers / official
        self._require_adapter().set_scale(scale)

    def unload_instantid_adapter(self) -> None:
        """Restore the UNet's original attention processors."""
        if self.identity_adapter is not None:
            self.identity_adapter.unload()
            self.identity_adapter = None

    def _require_adapter(self) -> InstantIDAdapter:
        if self.identity_adapter is None:
            raise InvalidInputError("no InstantID adapter is loaded: call load_instantid_adapter(...) first")
        return self.identity_adapter

    # ------------------------------------------------------------------ memory switches
    def enable_attention_slicing(self, slice_size: Any = "auto") -> None:
        """Refused: diffusers' slicing replaces the identity processors (see :mod:`faceanchor.pipelines.processors`)."""
        refuse_processor_switch("enable_attention_slicing()", type(self).__name__)

    def disable_attention_slicing(self) -> None:
        """Nothing to do: slicing is never enabled here (diffusers' version would reset every processor)."""

    def enable_xformers_memory_efficient_attention(self, attention_op: Any = None) -> None:
        """Refused for the same reason as :meth:`enable_attention_slicing`."""
        refuse_processor_switch("enable_xformers_memory_efficient_attention()", type(self).__name__)

    # ------------------------------------------------------------------ inputs
    def check_instantid_inputs(
        self,
        prompt: Any,
        face_embedding: Any,
        kps_image: Any,
        num_images: int,
        num_inference_steps: int,
        guidance_scale: float,
        generator: Any,
        identity_scale: float,
        adapter_scale: float | None,
        control_guidance_start: float,
        control_guidance_end: float,
        negative_embedding_noise: float,
        extra_controls: Sequence[ExtraControl],
        height: int | None,
        width: int | None,
        prompt_embeds: Any,
    ) -> torch.Tensor:
        """Validate everything up front; return the embedding as ``(B, T, D)``."""
        adapter = self._require_adapter()
        require_processors(self.unet, adapter.processors, "InstantID identity")
        if prompt is None and prompt_embeds is None:
            raise InvalidInputError("give a prompt (it may be empty) or prompt_embeds")
        if prompt is not None and not isinstance(prompt, str):
            raise InvalidInputError("prompt must be one string; use num_images for several images")
        if kps_image is None:
            raise InvalidInputError("kps_image (the IdentityNet keypoint image) is required")
        if not isinstance(num_images, int) or num_images < 1:
            raise InvalidInputError(f"num_images must be a positive integer, got {num_images!r}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InvalidInputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        if not guidance_scale >= 0:
            raise InvalidInputError(f"guidance_scale must be >= 0, got {guidance_scale}")
        for name, value in (("identity_scale", identity_scale), ("negative_embedding_noise", negative_embedding_noise)):
            for v in (value if name == "identity_scale" and _is_sequence(value) else [value]):
                if not v >= 0:
                    raise InvalidInputError(f"{name} must be >= 0, got {v}")
        for name, value in (("identity_scale", identity_scale), ("adapter_scale", adapter_scale)):
            if _is_sequence(value) and len(value) != num_images:
                raise InvalidInputError(f"{name} has {len(value)} values for {num_images} images; give one, or one per image")
        for v in (adapter_scale if _is_sequence(adapter_scale) else [adapter_scale]):
            if v is not None and not v >= 0:
                raise InvalidInputError(f"adapter_scale must be >= 0, got {v}")
        _check_window(control_guidance_start, control_guidance_end, "control_guidance")
        for k, extra in enumerate(extra_controls):
            if extra.image is None or extra.controlnet is None:
                raise InvalidInputError(f"extra control {k} needs a controlnet and an image")
            if not extra.scale >= 0:
                raise InvalidInputError(f"extra control {k} scale must be >= 0, got {extra.scale}")
            s = control_guidance_start if extra.guidance_start is None else extra.guidance_start
            e = control_guidance_end if extra.guidance_end is None else extra.guidance_end
            _check_window(s, e, f"extra control {k} guidance")
        if isinstance(generator, list) and len(generator) != num_images:
            raise InvalidInputError(f"got {len(generator)} generators for {num_images} images; give one per image or one in all")
        for name, value in (("height", height), ("width", width)):
            if value is not None and (value <= 0 or value % self.vae_scale_factor):
                raise InvalidInputError(f"{name} must be a positive multiple of {self.vae_scale_factor}, got {value}")
        emb = adapter.check_embedding(face_embedding if isinstance(face_embedding, torch.Tensor) else torch.as_tensor(np.asarray(face_embedding, dtype=np.float32)))
        if emb.shape[0] not in (1, num_images):
            raise InvalidInputError(f"face_embedding has {emb.shape[0]} rows; give 1 (shared) or one per image ({num_images})")
        return emb

    def check_prompt_embeds(
        self,
        prompt: Any,
        negative_prompt: Any,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        negative_pooled_prompt_embeds: torch.Tensor | None,
        callback_on_step_end_tensor_inputs: Sequence[str],
    ) -> None:
        """Pre-encoded text must come whole (SDXL needs the pooled embeds) and not next to its text."""
        if prompt is not None and prompt_embeds is not None:
            raise InvalidInputError("give prompt or prompt_embeds, not both")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise InvalidInputError("give negative_prompt or negative_prompt_embeds, not both")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise InvalidInputError("prompt_embeds need pooled_prompt_embeds too (SDXL); encode_prompts returns both")
        if negative_prompt_embeds is not None and negative_pooled_prompt_embeds is None:
            raise InvalidInputError("negative_prompt_embeds need negative_pooled_prompt_embeds too (SDXL)")
        if prompt_embeds is not None and negative_prompt_embeds is not None and prompt_embeds.shape != negative_prompt_embeds.shape:
            raise InvalidInputError(
                f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} "
                "must have the same shape (pad the shorter one, as encode_prompts does)"
            )
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise InvalidInputError(
                f"callback_on_step_end_tensor_inputs {unknown} are not available; choose from {self._callback_tensor_inputs}"
            )

    # ------------------------------------------------------------------ identity tokens
    def encode_identity(
        self,
        embeds: torch.Tensor,
        num_images: int,
        do_cfg: bool,
        negative_noise: float,
        generator: Any,
        device: Any,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Identity tokens for the UNet batch: ``[uncond x n, cond x n]`` with CFG, ``[cond x n]`` without.

        The unconditional embedding is all zeros, as the official code; with
        ``negative_noise > 0`` it is ``negative_noise * N(0, 1)`` drawn from ``generator`` (one
        draw per image; drawn after the initial latents, so latents do not change). All
        distinct rows go through the Resampler in one batch ``[uncond..., cond...]`` (for one
        image and no noise exactly the official ``[zeros, embedding]``) and are then repeated.
        """
        adapter = self._require_adapter()
        p = adapter.image_proj.latents
        cond = embeds.to(device=p.device, dtype=p.dtype)
        rows = [cond]
        n_uncond = 0
        if do_cfg:
            if negative_noise > 0:
                noise = randn_tensor((num_images, *cond.shape[1:]), generator=generator, device=p.device, dtype=p.dtype)
                uncond = torch.zeros_like(noise) + negative_noise * noise
            else:
                uncond = torch.zeros_like(cond[:1])
            rows = [uncond, cond]
            n_uncond = uncond.shape[0]
        tokens = adapter.project(torch.cat(rows, dim=0))
        cond_tokens = _expand(tokens[n_uncond:], num_images)
        if do_cfg:
            tokens = torch.cat([_expand(tokens[:n_uncond], num_images), cond_tokens], dim=0)
        else:
            tokens = cond_tokens
        return tokens.to(device=device, dtype=dtype)

    def _more_identities(
        self, more: list[RegionIdentity], face_mask: Any, num_images: int, do_cfg: bool, negative_noise: float,
        generator: Any, device: Any, height: int, width: int, dtype: torch.dtype,
    ) -> list[_IdentityPass]:
        """Tokens, keypoint images and regions of the identities after the first (checked)."""
        if not more:
            return []
        adapter = self._require_adapter()
        if face_mask is None:
            raise InvalidInputError("with several identities each needs its region: give face_mask for the first one too")
        regions = [mask_to_tensor(face_mask, height, width, device, dtype)]
        passes = []
        for j, x in enumerate(more, start=2):
            if x.mask is None or x.kps_image is None:
                raise InvalidInputError(f"identity {j} needs a region mask and a keypoint image")
            for name, value in (("identity_scale", x.identity_scale), ("adapter_scale", x.adapter_scale)):
                if not value >= 0:
                    raise InvalidInputError(f"identity {j} {name} must be >= 0, got {value}")
            region = mask_to_tensor(x.mask, height, width, device, dtype)
            for i, earlier in enumerate(regions, start=1):
                if bool(((earlier > 0.5) & (region > 0.5)).any()):
                    raise InvalidInputError(f"the regions of identities {i} and {j} overlap; give each person its own area")
            regions.append(region)
            emb = x.embedding if isinstance(x.embedding, torch.Tensor) else torch.as_tensor(np.asarray(x.embedding, dtype=np.float32))
            emb = adapter.check_embedding(emb)
            if emb.shape[0] not in (1, num_images):
                raise InvalidInputError(f"identity {j} embedding has {emb.shape[0]} rows; give 1 (shared) or one per image")
            tokens = self.encode_identity(emb, num_images, do_cfg, negative_noise, generator, device, self.unet.dtype)
            if tokens.shape[1] != adapter.num_tokens:
                raise InvalidInputError(f"identity {j} gives {tokens.shape[1]} tokens; several identities take one embedding each")
            image = self.prepare_image(
                image=x.kps_image, width=width, height=height, batch_size=num_images, num_images_per_prompt=num_images,
                device=device, dtype=self.controlnet.dtype, do_classifier_free_guidance=do_cfg, guess_mode=False,
            )
            passes.append(_IdentityPass(tokens, image, float(x.identity_scale), region))
        return passes

    # ------------------------------------------------------------------ call steps
    def prepare_control_images(
        self, nets: list[Any], conditions: list[Any], height: int | None, width: int | None, num_images: int, device: Any, do_cfg: bool
    ) -> list[torch.Tensor]:
        """Each net's condition image, CFG-batched; the first (IdentityNet's) sets the size of the rest."""
        images = []
        for net, img in zip(nets, conditions):
            per_image = isinstance(img, list) and len(img) == num_images and num_images > 1  # one image per sample
            images.append(
                self.prepare_image(
                    image=img, width=width, height=height, batch_size=num_images, num_images_per_prompt=1 if per_image else num_images,
                    device=device, dtype=net.dtype, do_classifier_free_guidance=do_cfg, guess_mode=False,
                )
            )
            height, width = images[0].shape[-2:]
        return images

    def control_residuals(
        self, latent_model_input: torch.Tensor, t: Any, inputs: DenoiseInputs, keep: list[float]
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """All ControlNets' residuals at one step (IdentityNet's times the face region), summed."""
        downs_list, mids = [], []
        for k, net in enumerate(inputs.nets):
            scale = inputs.scales[k] * keep[k]
            per_sample = isinstance(scale, torch.Tensor)
            down, mid = net(
                latent_model_input, t,
                encoder_hidden_states=inputs.id_tokens if k == 0 else inputs.prompt_embeds,
                controlnet_cond=inputs.images[k], conditioning_scale=1.0 if per_sample else scale, guess_mode=False,
                added_cond_kwargs=inputs.added_cond_kwargs, return_dict=False,
            )
            if per_sample:  # as ControlNetModel's own `sample * conditioning_scale`, one value per row
                down = [_scale_rows(d, scale) for d in down]
                mid = _scale_rows(mid, scale)
            if k == 0 and inputs.region is not None:
                down = [d * _resize_mask(inputs.region, d) for d in down]
                mid = mid * _resize_mask(inputs.region, mid)
            if k == 0:
                for other in inputs.more:  # one more IdentityNet pass per identity, in its region
                    if other.scale * keep[0] == 0.0:
                        continue
                    d2, m2 = net(
                        latent_model_input, t, encoder_hidden_states=other.tokens, controlnet_cond=other.image,
                        conditioning_scale=other.scale * keep[0], guess_mode=False,
                        added_cond_kwargs=inputs.added_cond_kwargs, return_dict=False,
                    )
                    down = [d + x * _resize_mask(other.region, x) for d, x in zip(down, d2)]
                    mid = mid + m2 * _resize_mask(other.region, m2)
            downs_list.append(down)
            mids.append(mid)
        if len(inputs.nets) == 1:
            return downs_list[0], mids[0]
        return [torch.stack(ds).sum(dim=0) for ds in zip(*downs_list)], torch.stack(mids).sum(dim=0)

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        inputs: DenoiseInputs,
        *,
        after_step: AfterStep | None = None,
        callback_on_step_end: StepEndCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> torch.Tensor:
        """Run the sampler over ``timesteps``.

        After each scheduler step, ``after_step(i, latents)`` may replace the latents (inpaint
        blending), then ``callback_on_step_end(self, i, t, {name: tensor})`` is called with the
        tensors named in ``callback_on_step_end_tensor_inputs``; the entries of the dict it
        returns replace those tensors. An exception raised by the callback ends the loop before
        the next UNet call. ``self._interrupt = True`` skips the remaining steps (diffusers).
        """
        with cross_attention_cache(self.unet, *inputs.nets, enabled=self.cache_cross_attention), \
                condition_embedding_cache(*inputs.nets, enabled=self.cache_control_condition), \
                sliced_attention(self.unet, *inputs.nets, query_chunk=self.attention_slice_size):
            return self._denoise_loop(latents, timesteps, inputs, after_step, callback_on_step_end, callback_on_step_end_tensor_inputs)

    def _denoise_loop(
        self, latents: torch.Tensor, timesteps: torch.Tensor, inputs: DenoiseInputs, after_step: AfterStep | None,
        callback_on_step_end: StepEndCallback | None, callback_on_step_end_tensor_inputs: Sequence[str],
    ) -> torch.Tensor:
        total = len(timesteps)
        for i, t in enumerate(timesteps):
            if getattr(self, "_interrupt", False):
                continue
            latent_model_input = torch.cat([latents] * 2) if self.do_classifier_free_guidance else latents
            latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)
            keep = [1.0 - float(i / total < s or (i + 1) / total > e) for s, e in inputs.windows]
            down_res, mid_res = self.control_residuals(latent_model_input, t, inputs, keep)
            noise_pred = self.unet(
                latent_model_input, t, encoder_hidden_states=inputs.encoder_hidden_states, timestep_cond=inputs.timestep_cond,
                down_block_additional_residuals=down_res, mid_block_additional_residual=mid_res,
                added_cond_kwargs=inputs.added_cond_kwargs, return_dict=False,
            )[0]
            if self.do_classifier_free_guidance:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + self.guidance_scale * (text - uncond)
            latents = self.scheduler.step(noise_pred, t, latents, **inputs.extra_step_kwargs, return_dict=False)[0]
            if after_step is not None:
                latents = after_step(i, latents)
            if callback_on_step_end is not None:
                tensors = _step_tensors(latents, inputs)
                outputs = callback_on_step_end(self, i, t, {k: tensors[k] for k in callback_on_step_end_tensor_inputs})
                latents, inputs = _apply_step_outputs(outputs, latents, inputs)
        return latents

    def decode(self, latents: torch.Tensor, output_type: str) -> StableDiffusionXLPipelineOutput:
        """VAE-decode (SDXL latents mean/std and fp16 upcast honoured) and post-process."""
        if output_type == "latent":
            return StableDiffusionXLPipelineOutput(images=latents)
        from faceanchor.pipelines.decode import decode_latents

        image = decode_latents(self, latents, output_type)
        self.maybe_free_model_hooks()
        return StableDiffusionXLPipelineOutput(images=image)

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(  # type: ignore[override]
        self,
        prompt: str | None = None,
        face_embedding: Any = None,
        kps_image: Any = None,
        *,
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
        more_identities: Sequence[RegionIdentity] = (),
        latents: torch.Tensor | None = None,
        start: NoiseStart | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        callback_on_step_end: StepEndCallback | PipelineCallback | MultiPipelineCallbacks | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        output_type: str = "pil",
    ) -> StableDiffusionXLPipelineOutput:
        """Generate ``num_images`` images of the identity in ``face_embedding``.

        Args:
            prompt / negative_prompt: text; ``negative_prompt=None`` gives zero negative text
                embeddings (diffusers' ``force_zeros_for_empty_prompt``), a string is encoded.
            face_embedding: ``(D,)``, ``(B, D)`` or ``(B, T, D)`` tensor/array, B = 1 or
                ``num_images``; T > 1 feeds several tokens to the Resampler (as the official
                ``reshape([1, -1, D])``). InstantID: the raw 512-D antelopev2 embedding.
            kps_image: IdentityNet condition (``draw_kps`` output).
            face_mask: face-region mask (``enhance_face_region``), see :func:`mask_to_tensor`.
            height / width: output size (multiples of the VAE factor); default the kps image's.
            num_inference_steps / guidance_scale: sampler steps and CFG (<= 1: no CFG).
            num_images: images in the batch; ``generator``: one, or a list with one per image.
            identity_scale: IdentityNet conditioning scale. ``adapter_scale``: IP scale (None
                keeps the adapter's current scale).
            control_guidance_start / end: fraction of steps where IdentityNet is applied.
            negative_embedding_noise: std of Gaussian noise on the zero uncond embedding.
            extra_controls: more ControlNets (text-conditioned), see :class:`ExtraControl`.
            more_identities: more people, each in its own region (:class:`RegionIdentity`); then
                ``face_mask`` is required (the first identity's region) and regions must not overlap.
            latents: initial noise latents (text-to-image).
            start: where denoising starts, see :class:`NoiseStart` (default: pure noise over the
                full schedule); image-to-image passes its own. Exclusive with ``latents``.
            prompt_embeds ...: pre-encoded text (e.g. :func:`faceanchor.pipelines.prompts.encode_prompts`
                with ``num_images_per_prompt=1``), batch 1; ``pooled_prompt_embeds`` is required
                with them (and the negative pooled with negative embeddings).
            callback_on_step_end: diffusers' ``(pipe, step_index, timestep, callback_kwargs) -> dict``
                after every step (see :meth:`denoise`); progress and cancellation:
                :func:`faceanchor.pipelines.callbacks.step_callback`.
            callback_on_step_end_tensor_inputs: the tensors passed to it, from
                :attr:`_callback_tensor_inputs` (a ``PipelineCallback`` brings its own).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
        """
        # 0. Check inputs
        extra_controls = list(extra_controls)
        embeds = self.check_instantid_inputs(
            prompt, face_embedding, kps_image, num_images, num_inference_steps, guidance_scale, generator,
            identity_scale, adapter_scale, control_guidance_start, control_guidance_end, negative_embedding_noise,
            extra_controls, height, width, prompt_embeds,
        )
        if start is not None and latents is not None:
            raise InvalidInputError("give initial latents or a start, not both")
        start = NoiseStart(latents) if start is None else start
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = list(callback_on_step_end_tensor_inputs)
        self.check_prompt_embeds(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,
                                 negative_pooled_prompt_embeds, callback_on_step_end_tensor_inputs)
        adapter = self._require_adapter()
        identity_scale, adapter_scale = _one_or_many(identity_scale), _one_or_many(adapter_scale)
        per_sample = [n for n, v in (("identity_scale", identity_scale), ("adapter_scale", adapter_scale),
                                     ("face_mask", face_mask if _is_sequence(face_mask) else None)) if isinstance(v, list)]
        if per_sample and more_identities:
            raise InvalidInputError(f"several identities take one {' and '.join(per_sample)} for the whole batch")
        if adapter_scale is not None and not isinstance(adapter_scale, list):
            adapter.set_scale(adapter_scale)

        # 1. Call parameters
        self._guidance_scale = guidance_scale
        self._clip_skip = None
        self._cross_attention_kwargs = None
        self._denoising_end = None
        self._interrupt = False
        do_cfg = self.do_classifier_free_guidance
        device = self._execution_device
        nets = [self.controlnet] + [x.controlnet for x in extra_controls]

        # 2. Encode prompt (pre-encoded text with one row per image: separate requests, not repeated)
        per_image_text = prompt_embeds is not None and num_images > 1 and prompt_embeds.shape[0] == num_images
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = self.encode_prompt(
            prompt, None, device, 1 if per_image_text else num_images, do_cfg, negative_prompt, None,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
        )

        # 3. Control images (IdentityNet first; its image sets the output size)
        images = self.prepare_control_images(nets, [kps_image] + [x.image for x in extra_controls], height, width, num_images, device, do_cfg)
        height, width = images[0].shape[-2:]

        # 4. Timesteps
        timesteps = start.timesteps(self, num_inference_steps, device)
        self._num_timesteps = len(timesteps)

        # 5. Initial latents (and the per-step hook of image-to-image / inpainting)
        latents, after_step = start.latents(self, timesteps, num_images, height, width, prompt_embeds.dtype, device, generator)

        # 6. Identity tokens (after the latents: optional uncond noise must not shift them)
        id_tokens = self.encode_identity(embeds, num_images, do_cfg, negative_embedding_noise, generator, device, self.unet.dtype)
        more_identities = list(more_identities)
        more = self._more_identities(more_identities, face_mask, num_images, do_cfg, negative_embedding_noise,
                                     generator, device, height, width, prompt_embeds.dtype)

        # 7. Per-step conditioning: CFG batch, time ids, guidance embedding, face region
        timestep_cond = None
        if self.unet.config.time_cond_proj_dim is not None:
            gs = torch.tensor(self.guidance_scale - 1).repeat(num_images)
            timestep_cond = self.get_guidance_scale_embedding(gs, embedding_dim=self.unet.config.time_cond_proj_dim).to(
                device=device, dtype=latents.dtype
            )
        region = ip_region = None
        if _is_sequence(face_mask):  # one mask per image (separate requests): (N, H, W), N the UNet batch
            if len(face_mask) != num_images:
                raise InvalidInputError(f"got {len(face_mask)} face masks for {num_images} images; give one, or one per image")
            rows = 2 if do_cfg else 1
            region = torch.stack([mask_to_tensor(m, height, width, device, prompt_embeds.dtype) for m in face_mask] * rows)
            ip_region = torch.stack([mask_to_tensor(m, height, width, self.unet.device, self.unet.dtype) for m in face_mask] * rows)
        elif face_mask is not None:
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
        inputs = DenoiseInputs(
            nets=nets,
            images=images,
            scales=[_sample_tensor(identity_scale, do_cfg, device) if isinstance(identity_scale, list) else float(identity_scale)]
            + [float(x.scale) for x in extra_controls],
            windows=[(control_guidance_start, control_guidance_end)] + [
                (control_guidance_start if x.guidance_start is None else x.guidance_start,
                 control_guidance_end if x.guidance_end is None else x.guidance_end)
                for x in extra_controls
            ],
            region=region,
            id_tokens=id_tokens,
            prompt_embeds=prompt_embeds,
            encoder_hidden_states=torch.cat([prompt_embeds, id_tokens, *[m.tokens for m in more]], dim=1),
            added_cond_kwargs={"text_embeds": add_text_embeds.to(device), "time_ids": add_time_ids.to(device).repeat(num_images, 1)},
            timestep_cond=timestep_cond,
            extra_step_kwargs=self.prepare_extra_step_kwargs(generator, 0.0),
            more=more,
        )
        groups = None
        if more:
            groups = [(adapter.scale, ip_region)] + [
                (float(x.adapter_scale), m.region.to(device=self.unet.device, dtype=self.unet.dtype))
                for x, m in zip(more_identities, more)
            ]

        # 8. Denoising loop
        scales = _sample_tensor(adapter_scale, do_cfg, self.unet.device) if isinstance(adapter_scale, list) else None
        with adapter.region(ip_region), adapter.identities(groups), adapter.sample_scales(scales):
            latents = self.denoise(
                latents, timesteps, inputs, after_step=after_step, callback_on_step_end=callback_on_step_end,
                callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            )

        # 9. Decode
        return self.decode(latents, output_type)


def _check_window(start: float, end: float, what: str) -> None:
    if not (0.0 <= start < end <= 1.0):
        raise InvalidInputError(f"{what} start/end must satisfy 0 <= start < end <= 1, got {start} and {end}")


def _expand(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """``(1, L, C)`` -> ``(n, L, C)`` by repetition; ``(n, L, C)`` unchanged."""
    if tokens.shape[0] == n:
        return tokens
    return tokens.repeat(n, 1, 1)


def _resize_mask(region: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The official residual mask: bilinear resize of the full-size mask to the residual's grid
    (a per-sample ``(N, H, W)`` mask: one per residual row)."""
    grid = region[None, None] if region.ndim == 2 else region[:, None]
    return F.interpolate(grid, size=tuple(residual.shape[-2:]), mode="bilinear")


def _is_sequence(value: Any) -> bool:
    return isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim == 1)


def _one_or_many(value: Any) -> Any:
    """A per-image sequence of scales as a list of floats, or one float when they are all equal
    (so a batch of equal scales runs the very arithmetic of a single call)."""
    if not _is_sequence(value):
        return value
    vals = [float(v) for v in value]
    return vals[0] if len(set(vals)) == 1 else vals


def _sample_tensor(values: list[float], do_cfg: bool, device: Any) -> torch.Tensor:
    """Per-image values as one float32 value per UNet batch row (``[uncond..., cond...]`` with CFG)."""
    return torch.tensor(values * (2 if do_cfg else 1), dtype=torch.float32, device=device)


def _scale_rows(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` times one scale per row, computed in float32 and rounded once (a float scale's arithmetic)."""
    return (x.float() * scale.to(x.device).view(-1, *([1] * (x.ndim - 1)))).to(x.dtype)


def _step_tensors(latents: torch.Tensor, inputs: DenoiseInputs) -> dict[str, torch.Tensor]:
    """The tensors a step callback may read, by their names in ``_callback_tensor_inputs``."""
    return {
        "latents": latents,
        "prompt_embeds": inputs.prompt_embeds,
        "add_text_embeds": inputs.added_cond_kwargs["text_embeds"],
        "add_time_ids": inputs.added_cond_kwargs["time_ids"],
        "image": inputs.images[0],
        "id_tokens": inputs.id_tokens,
    }


def _apply_step_outputs(outputs: Any, latents: torch.Tensor, inputs: DenoiseInputs) -> tuple[torch.Tensor, DenoiseInputs]:
    """Replace what a step callback returned (diffusers' ``callback_outputs.pop(name, current)``)."""
    outputs = dict(outputs or {})
    latents = outputs.pop("latents", latents)
    if not outputs:
        return latents, inputs
    unknown = sorted(set(outputs) - set(InstantIDSDXLPipeline._callback_tensor_inputs))
    if unknown:
        raise InvalidInputError(f"callback_on_step_end returned {unknown}, which are not tensors of this pipeline")
    prompt_embeds = outputs.pop("prompt_embeds", inputs.prompt_embeds)
    id_tokens = outputs.pop("id_tokens", inputs.id_tokens)
    added = {
        "text_embeds": outputs.pop("add_text_embeds", inputs.added_cond_kwargs["text_embeds"]),
        "time_ids": outputs.pop("add_time_ids", inputs.added_cond_kwargs["time_ids"]),
    }
    images = [outputs.pop("image", inputs.images[0])] + inputs.images[1:]
    inputs = replace(
        inputs, prompt_embeds=prompt_embeds, id_tokens=id_tokens, added_cond_kwargs=added, images=images,
        encoder_hidden_states=torch.cat([prompt_embeds, id_tokens, *[m.tokens for m in inputs.more]], dim=1),
    )
    return latents, inputs
