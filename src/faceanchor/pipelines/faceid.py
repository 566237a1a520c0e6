"""IP-Adapter-FaceID generation on one loaded SD1.5 or SDXL diffusers pipeline.

:class:`FaceIDPipeline` wraps a ``StableDiffusionPipeline`` or ``StableDiffusionXLPipeline``
and manages FaceID adapters on it: :meth:`~FaceIDPipeline.load` installs one method
(unloading the previous one first), :meth:`~FaceIDPipeline.unload` restores the base
pipeline exactly, :meth:`~FaceIDPipeline.generate` runs the reference's steps:

1. CLIP features of the aligned face crop (Plus/PlusV2): ``hidden_states[-2]`` of the image
   encoder on the preprocessed crop, and of ``zeros_like`` that pixel tensor for uncond.
2. Identity tokens: the projection of the embedding(s) and of zeros (uncond).
3. Prompt encoding by the diffusers pipeline (with CFG negatives), or pre-encoded text
   (e.g. :func:`faceanchor.pipelines.prompts.encode_prompts`), then
   ``prompt_embeds = cat(text, id_tokens)`` and ``negative = cat(negative_text, uncond_tokens)``.
4. Denoising by the diffusers pipeline; its ``callback_on_step_end`` is passed through
   (progress and cancellation: :func:`faceanchor.pipelines.callbacks.step_callback`).

diffusers' attention slicing / xformers switches would replace the adapter's processors:
:meth:`FaceIDPipeline.enable_attention_slicing` refuses, and :meth:`FaceIDPipeline.generate`
checks the processors are still installed (also catching a switch flipped on ``.pipe``).

Face detection, alignment (the 224 px ``norm_crop`` for CLIP) and embedding live in
:mod:`faceanchor.face`; this module takes their results as tensors/images.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from faceanchor.adapters.faceid import FACEID_EMBEDDING_SPACE, VARIANTS, FaceIDAdapter, get_variant
from faceanchor.errors import InvalidInputError
from faceanchor.pipelines.callbacks import StepEndCallback
from faceanchor.adapters.attention import identity_groups
from faceanchor.adapters.attention_slicing import sliced_attention
from faceanchor.adapters.kv_cache import cross_attention_cache
from faceanchor.pipelines.processors import refuse_processor_switch, require_processors


def clip_image_processor_for(image_encoder: Any):
    """A ``CLIPImageProcessor`` built locally for the encoder's input size (224 for ViT-H: the defaults)."""
    from transformers import CLIPImageProcessor

    size = int(image_encoder.config.image_size)
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def load_clip_image_encoder(source: str | Path, *, device: str = "cpu", dtype: Any = None, local_files_only: bool = False):
    """``CLIPVisionModelWithProjection`` from a hub id (HF cache honoured) or a local folder.

    The Plus variants use ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (registry model ``clip-vit-h``);
    the real-weights loader finds it and loads it through here.
    """
    from transformers import CLIPVisionModelWithProjection

    from faceanchor.errors import ModelNotFoundError

    try:
        enc = CLIPVisionModelWithProjection.from_pretrained(str(source), local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"the CLIP image encoder '{source}' could not be loaded ({type(exc).__name__}); download it with "
            f"`huggingface-cli download {source}` or pass a local folder with config.json and the weights"
        ) from exc
    return enc.to(device=device, dtype=dtype).eval()


class FaceIDPipeline:
    """One SD1.5/SDXL base serving every FaceID method, one adapter installed at a time."""

    def __init__(self, pipe: Any, image_encoder: Any | None = None, image_processor: Any | None = None):
        from diffusers import StableDiffusionXLPipeline

        self.pipe = pipe
        self.family = "sdxl" if isinstance(pipe, StableDiffusionXLPipeline) else "sd15"
        self.image_encoder = image_encoder
        self.image_processor = image_processor
        if image_encoder is not None and image_processor is None:
            self.image_processor = clip_image_processor_for(image_encoder)
        self.adapter: FaceIDAdapter | None = None
        self._cache: dict[tuple, FaceIDAdapter] = {}
        # Cross-attention keys/values once per generation (faceanchor.adapters.kv_cache); False
        # recomputes them at every step as the reference does. Outputs are identical.
        self.cache_cross_attention = True
        # Attention over query chunks of this many tokens, FaceID processors kept
        # (faceanchor.adapters.attention_slicing; setting speed_attention_slicing); None: unsliced.
        self.attention_slice_size: int | None = None

    # ------------------------------------------------------------------ adapters

    @property
    def method(self) -> str | None:
        return self.adapter.variant.method if self.adapter is not None else None

    def load(
        self,
        method: str,
        checkpoint: str | Path | Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        *,
        id_dim: int = 512,
        lora_rank: int = 128,
        required_space: str | None = FACEID_EMBEDDING_SPACE,
        seed: int | None = None,
    ) -> FaceIDAdapter:
        """Install ``method`` on the base: from an official checkpoint, or random weights when ``checkpoint`` is None.

        Random weights (dummy/tiny runs) take ``id_dim``, ``lora_rank`` and ``seed`` and accept
        any embedding space; checkpoint weights require ``required_space`` (buffalo_l).
        """
        variant = get_variant(method)
        if variant.clip and self.image_encoder is None:
            raise InvalidInputError(f"{method} needs a CLIP image encoder; build FaceIDPipeline with image_encoder=...")
        self.unload()
        unet = self.pipe.unet
        clip_dim = int(self.image_encoder.config.hidden_size) if variant.clip else None
        if checkpoint is None:
            adapter = FaceIDAdapter.build(unet, method, id_dim=id_dim, clip_dim=clip_dim, lora_rank=lora_rank, seed=seed or 0)
        else:
            adapter = FaceIDAdapter.from_checkpoint(unet, method, checkpoint, clip_dim=clip_dim, required_space=required_space)
        adapter.install()
        self.adapter = adapter
        return adapter

    def ensure(
        self,
        method: str,
        checkpoint: str | Path | None = None,
        *,
        id_dim: int = 512,
        lora_rank: int = 128,
        required_space: str | None = FACEID_EMBEDDING_SPACE,
        seed: int | None = None,
    ) -> FaceIDAdapter:
        """Like :meth:`load`, but keeps built adapters so switching back costs only a processor swap."""
        key = (method, str(checkpoint) if checkpoint is not None else None, id_dim, lora_rank, required_space, seed)
        if self.adapter is not None and self._cache.get(key) is self.adapter:
            return self.adapter
        cached = self._cache.get(key)
        if cached is not None:
            self.use(cached)
            return cached
        adapter = self.load(method, checkpoint, id_dim=id_dim, lora_rank=lora_rank, required_space=required_space, seed=seed)
        self._cache[key] = adapter
        return adapter

    def clear_cache(self) -> None:
        """Forget cached adapters (the installed one stays installed)."""
        self._cache.clear()

    def use(self, adapter: FaceIDAdapter) -> None:
        """Install an adapter built elsewhere for this pipeline's UNet (e.g. one kept in a cache)."""
        if adapter.unet is not self.pipe.unet:
            raise InvalidInputError("this FaceID adapter was built for another UNet")
        self.unload()
        adapter.install()
        self.adapter = adapter

    def unload(self) -> None:
        """Remove the installed adapter; the base pipeline is then exactly as before."""
        if self.adapter is not None:
            self.adapter.unload()
            self.adapter = None

    # ------------------------------------------------------------------ memory switches

    def enable_attention_slicing(self, slice_size: Any = "auto") -> None:
        """Refused: diffusers' slicing replaces the FaceID processors (see :mod:`faceanchor.pipelines.processors`)."""
        refuse_processor_switch("enable_attention_slicing()", type(self).__name__)

    def disable_attention_slicing(self) -> None:
        """Nothing to do: slicing is never enabled here (diffusers' version would reset every processor)."""

    def enable_xformers_memory_efficient_attention(self, attention_op: Any = None) -> None:
        """Refused for the same reason as :meth:`enable_attention_slicing`."""
        refuse_processor_switch("enable_xformers_memory_efficient_attention()", type(self).__name__)

    # ------------------------------------------------------------------ steps

    @torch.no_grad()
    def encode_face_crop(self, face_image: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP penultimate hidden states of the crop, and of an all-zeros pixel tensor (uncond).

        ``face_image``: a PIL image / HxWx3 uint8 array (preprocessed here) or an already
        preprocessed ``(B, 3, S, S)`` pixel tensor.
        """
        if self.image_encoder is None:
            raise InvalidInputError("no CLIP image encoder is loaded")
        param = next(self.image_encoder.parameters())
        if isinstance(face_image, torch.Tensor):
            pixels = face_image if face_image.ndim == 4 else face_image[None]
        else:
            pixels = self.image_processor(images=face_image, return_tensors="pt").pixel_values
        pixels = pixels.to(device=param.device, dtype=param.dtype)
        cond = self.image_encoder(pixels, output_hidden_states=True).hidden_states[-2]
        uncond = self.image_encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        return cond, uncond

    def identity_tokens(
        self,
        face_embeds: torch.Tensor,
        face_image: Any | None = None,
        *,
        s_scale: float = 1.0,
        embedding_space: str | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cond, uncond)`` identity tokens ``(1, T, C)`` for the installed method."""
        adapter = self._require_adapter()
        clip_c = clip_u = None
        if adapter.variant.clip:
            if face_image is None:
                raise InvalidInputError(f"{adapter.variant.method} needs the aligned face crop (face_image)")
            clip_c, clip_u = self.encode_face_crop(face_image)
        return adapter.project(face_embeds, clip_c, clip_u, s_scale=s_scale, space=embedding_space)

    def _require_adapter(self) -> FaceIDAdapter:
        if self.adapter is None:
            raise InvalidInputError(f"no FaceID method is loaded; call load() with one of {', '.join(VARIANTS)}")
        return self.adapter

    @torch.no_grad()
    def generate(
        self,
        face_embeds: torch.Tensor,
        *,
        face_image: Any | None = None,
        prompt: str | None = "",
        negative_prompt: str | None = "",
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        num_images: int = 1,
        num_inference_steps: int = 30,
        guidance_scale: float = 7.5,
        width: int | None = None,
        height: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        scale: float = 1.0,
        s_scale: float = 1.0,
        lora_scale: float = 1.0,
        embedding_space: str | None = None,
        callback_on_step_end: StepEndCallback | Any | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        output_type: str = "pil",
        timings: dict[str, float] | None = None,
        region: torch.Tensor | None = None,
        more_identities: Sequence[tuple[torch.Tensor, Any, torch.Tensor, float]] = (),
        per_image: Sequence[tuple[torch.Tensor, Any]] | None = None,
    ) -> list[Any]:
        """Generate ``num_images`` images (PIL by default) conditioned on the face.

        Several people: ``region`` is the first face's ``(H, W)`` mask and ``more_identities``
        holds ``(face_embeds, face_image, mask, scale)`` per further person; each person's
        tokens follow the text in that order and act only inside its mask.

        ``face_embeds``: ``(D,)``/``(1, D)`` for FaceID/Plus/PlusV2, ``(K, D)`` with K ≤ 5 for
        Portrait. ``generator``: one per image (a list) or a single one. ``scale`` weighs the
        identity attention, ``lora_scale`` the LoRA, ``s_scale`` the PlusV2 CLIP shortcut.
        ``prompt_embeds`` / ``negative_prompt_embeds`` (+ ``pooled_prompt_embeds`` /
        ``negative_pooled_prompt_embeds`` on SDXL): pre-encoded text for one prompt (batch 1,
        e.g. :func:`~faceanchor.pipelines.prompts.encode_prompts` with ``num_images_per_prompt=1``),
        used instead of ``prompt`` / ``negative_prompt`` (leave those empty) and repeated per image
        as diffusers' ``encode_prompt`` does. ``callback_on_step_end``: diffusers'
        ``(pipe, step_index, timestep, callback_kwargs) -> dict``, handed to the diffusers pipeline
        with ``callback_on_step_end_tensor_inputs`` (``pipe`` is then the wrapped diffusers pipe).
        ``timings``: when given, the seconds spent encoding the prompt are added to its ``prompt``.

        Separate requests in one call (the batched worker): ``per_image`` gives ``(face_embeds,
        face_image)`` per image (``face_embeds``/``face_image`` are then unused) and the
        pre-encoded text has one row per image (not repeated); each image equals its own call.
        """
        adapter = self._require_adapter()
        require_processors(self.pipe.unet, adapter.processors, f"{adapter.variant.method} adapter")
        if num_images < 1:
            raise InvalidInputError("num_images must be at least 1")
        if isinstance(generator, (list, tuple)) and len(generator) != num_images:
            raise InvalidInputError(f"got {len(generator)} generators for {num_images} images; give one per image")
        sdxl = self.family == "sdxl"
        if prompt is None and prompt_embeds is None:
            prompt = ""
        self._check_prompt_embeds(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                                  pooled_prompt_embeds, negative_pooled_prompt_embeds)

        # 1-2. identity tokens (cond from the face, uncond from zeros); per image: one row each
        if per_image is not None:
            if len(per_image) != num_images or more_identities or region is not None:
                raise InvalidInputError("per_image needs one (embedding, crop) per image, and no regions or more identities")
            rows = [self.identity_tokens(e, crop, s_scale=s_scale, embedding_space=embedding_space) for e, crop in per_image]
            if len({tuple(c.shape) for c, _ in rows}) != 1:
                raise InvalidInputError("per_image identities give different numbers of tokens; batch requests with as many references")
            cond, uncond = torch.cat([c for c, _ in rows]), torch.cat([u for _, u in rows])
        else:
            cond, uncond = self.identity_tokens(face_embeds, face_image, s_scale=s_scale, embedding_space=embedding_space)
        adapter.set_scale(scale)
        adapter.set_lora_scale(lora_scale)
        adapter.set_num_tokens(cond.shape[1])
        groups = None
        extra_c, extra_u = [], []
        if more_identities:
            if region is None:
                raise InvalidInputError("with several people each needs its region: give region for the first one too")
            groups = [(float(scale), region)]
            for j, (emb_j, crop_j, mask_j, scale_j) in enumerate(more_identities, start=2):
                c, u = self.identity_tokens(emb_j, crop_j, s_scale=s_scale, embedding_space=embedding_space)
                if c.shape[1] != cond.shape[1]:
                    raise InvalidInputError(f"person {j} gives {c.shape[1]} identity tokens, person 1 {cond.shape[1]}; give each person as many references")
                extra_c.append(c)
                extra_u.append(u)
                groups.append((float(scale_j), mask_j))
        elif region is not None:
            groups = [(float(scale), region)]

        # 3. text (encoded here or given), then cat(text, identity)
        t_text = time.perf_counter()
        pipe = self.pipe
        device = pipe._execution_device
        repeat = 1 if per_image is not None else num_images
        per_image_text = per_image is not None and prompt_embeds is not None and prompt_embeds.shape[0] == num_images
        cond = torch.cat([cond, *extra_c], dim=1).to(device).repeat(repeat, 1, 1)
        uncond = torch.cat([uncond, *extra_u], dim=1).to(device).repeat(repeat, 1, 1)
        text_kwargs: dict[str, Any] = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_prompt_embeds}
        if sdxl:
            text_kwargs.update(pooled_prompt_embeds=pooled_prompt_embeds, negative_pooled_prompt_embeds=negative_pooled_prompt_embeds)
        encoded = pipe.encode_prompt(
            None if prompt_embeds is not None else prompt, device=device, num_images_per_prompt=1 if per_image_text else num_images,
            do_classifier_free_guidance=True, negative_prompt=None if negative_prompt_embeds is not None else negative_prompt,
            **text_kwargs,
        )
        extra: dict[str, Any] = {}
        if sdxl:
            text, neg_text, pooled, neg_pooled = encoded
            extra = {"pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": neg_pooled}
        else:
            text, neg_text = encoded
        prompt_embeds = torch.cat([text, cond.to(text.dtype)], dim=1)
        negative_embeds = torch.cat([neg_text, uncond.to(neg_text.dtype)], dim=1)
        if timings is not None:
            timings["prompt"] = timings.get("prompt", 0.0) + time.perf_counter() - t_text

        # 4. denoise; the step callback (progress, cancellation, tensor edits) goes to the diffusers pipe
        if callback_on_step_end is not None:
            extra["callback_on_step_end"] = callback_on_step_end
            extra["callback_on_step_end_tensor_inputs"] = list(callback_on_step_end_tensor_inputs)
        if groups is not None:
            groups = [(sc, m.to(device=device, dtype=pipe.unet.dtype)) for sc, m in groups]
        with cross_attention_cache(pipe.unet, enabled=self.cache_cross_attention), identity_groups(adapter.processors.values(), groups), \
                sliced_attention(pipe.unet, query_chunk=self.attention_slice_size):
            out = pipe(
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_embeds,
                guidance_scale=guidance_scale,
                num_inference_steps=num_inference_steps,
                generator=list(generator) if isinstance(generator, (list, tuple)) else generator,
                width=width,
                height=height,
                output_type=output_type,
                **extra,
            )
        return list(out.images)

    def _check_prompt_embeds(
        self, prompt: Any, negative_prompt: Any, prompt_embeds: Any, negative_prompt_embeds: Any,
        pooled_prompt_embeds: Any, negative_pooled_prompt_embeds: Any,
    ) -> None:
        """Pre-encoded text replaces the strings (which must then be empty) and comes whole."""
        if prompt_embeds is not None and prompt:
            raise InvalidInputError("give prompt or prompt_embeds, not both")
        if negative_prompt_embeds is not None and negative_prompt:
            raise InvalidInputError("give negative_prompt or negative_prompt_embeds, not both")
        if negative_prompt_embeds is not None and prompt_embeds is None:
            raise InvalidInputError("negative_prompt_embeds need prompt_embeds too")
        if self.family == "sdxl":
            if prompt_embeds is not None and pooled_prompt_embeds is None:
                raise InvalidInputError("on SDXL, prompt_embeds need pooled_prompt_embeds too; encode_prompts returns both")
            if negative_prompt_embeds is not None and negative_pooled_prompt_embeds is None:
                raise InvalidInputError("on SDXL, negative_prompt_embeds need negative_pooled_prompt_embeds too")
        elif pooled_prompt_embeds is not None or negative_pooled_prompt_embeds is not None:
            raise InvalidInputError("pooled prompt embeddings are SDXL's; an SD1.5 base takes prompt_embeds only")
        if prompt_embeds is not None and negative_prompt_embeds is not None and prompt_embeds.shape != negative_prompt_embeds.shape:
            raise InvalidInputError(
                f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds {tuple(negative_prompt_embeds.shape)} "
                "must have the same shape (pad the shorter one, as encode_prompts does)"
            )
