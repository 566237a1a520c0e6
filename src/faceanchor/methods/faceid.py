"""The IP-Adapter-FaceID family on SD1.5 / SDXL: FaceID, FaceID-Plus, FaceID-PlusV2, FaceID-Portrait
(and Portrait-unnorm on SDXL).

Embedding: InsightFace buffalo_l's w600k_r50, **unit length** (the official README feeds
``faces[0].normed_embedding``) — except Portrait-unnorm, trained on the raw embedding. Plus and
PlusV2 add CLIP ViT-H features of the face crop aligned to 224 px (from the photo, or ``face_crop``
with a precomputed embedding); the CLIP encoder is loaded only for them. One loaded base serves
every method of the family, one adapter installed at a time (base weights never touched).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from faceanchor.errors import InvalidInputError
from faceanchor.methods.contract import Batch, Loaded, Method, RunContext
from faceanchor.types import GenerationRequest, Identity

MAX_BATCH = 4
FACEID_REPO = "h94/IP-Adapter-FaceID"


class FaceIDFamily(Method):
    """One method of the family; subclasses set the variant facts."""

    max_identities = 4  # several people, each held to its box

    app = "faceid"
    space = "buffalo_l"
    normalised = True
    families: ClassVar[tuple[str, ...]] = ("sd15", "sdxl")
    pipeline_key = "faceid"
    order = 10
    max_references = 5
    concat_references = False
    #: The adapter variant (:data:`faceanchor.adapters.faceid.VARIANTS`) this method installs.
    variant: ClassVar[str]
    #: Official checkpoint per base family: registry model name.
    checkpoints: ClassVar[dict[str, str]]
    clip: ClassVar[bool] = False

    def model_names(self, family: str | None = None) -> tuple[str, ...]:
        fams = [family] if family else list(self.families[:1])
        out = ["buffalo_l"]
        for f in fams:
            out += [f"{f}-base", self.checkpoints[f]]
        if self.clip:
            out.append("clip-vit-h")
        from faceanchor.models.few_step import PRESETS

        out += [p.loras[fams[0]] for p in PRESETS.values() if fams[0] in p.loras]
        return tuple(out)

    def models_used(self, models: dict[str, str], request: GenerationRequest) -> dict[str, str]:
        out = super().models_used(models, request)
        if not self.clip:
            out.pop("image_encoder", None)
        return out

    def load(self, loader: Any, family: str, request: GenerationRequest, id_dim: int) -> Loaded:
        import diffusers

        from faceanchor.pipelines.faceid import FaceIDPipeline

        comps, models = loader.base_components(family, request.model_name)
        cls = diffusers.StableDiffusionXLPipeline if family == "sdxl" else diffusers.StableDiffusionPipeline
        keep = {"vae", "text_encoder", "tokenizer", "unet", "scheduler"} | ({"text_encoder_2", "tokenizer_2"} if family == "sdxl" else set())
        kwargs = {k: comps[k] for k in keep}
        if family == "sd15":
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe = cls(**kwargs)
        pipe.set_progress_bar_config(disable=True)
        return Loaded(family, FaceIDPipeline(pipe), models, comps["scheduler"].config, state={"adapters": {}})

    def _checkpoint_spec(self, family: str) -> Any:
        return self.checkpoints[family]

    def adapter(self, loaded: Loaded, loader: Any, request: GenerationRequest, id_dim: int) -> Any:
        """Install this method's adapter on the loaded base (built once, then swapped in)."""
        from faceanchor.pipelines.faceid import clip_image_processor_for

        fp = loaded.pipe
        if self.clip and fp.image_encoder is None:
            enc, proc, loaded.models["image_encoder"] = loader.clip_image_encoder()
            fp.image_encoder, fp.image_processor = enc, proc or clip_image_processor_for(enc)
        key = (self.name, id_dim, request.adapter_model if loader.honours_model_name else None)
        cache = loaded.state["adapters"]
        if key in cache:
            if fp.adapter is not cache[key]:
                fp.use(cache[key])
            loaded.models[f"adapter_{self.name}"] = loaded.state.setdefault("names", {})[key]
            return fp.adapter
        path, name = loader.faceid_checkpoint(self.name, self._checkpoint_spec(loaded.family), request.adapter_model)
        if path is not None:
            adapter = fp.load(self.variant, path, required_space=self.space)
        else:
            adapter = fp.load(self.variant, None, id_dim=id_dim, required_space=None, seed=loader.faceid_seed())
            name = f"{name}({id_dim}-D)"
        cache[key] = adapter
        loaded.state.setdefault("names", {})[key] = name
        loaded.models[f"adapter_{self.name}"] = name
        return adapter

    def face_crop(self, ctx: RunContext, ident: Identity | None = None) -> Any:
        if not self.clip:
            return None
        ident = ident or ctx.identity
        if ident.face_crop is not None:
            return ident.face_crop
        if ident.image is None or ident.kps is None:
            raise InvalidInputError(f"{self.name} needs the face photo, or face_crop (the aligned face) with a precomputed embedding, for its CLIP features")
        from faceanchor.face.align import clip_face_crop

        return clip_face_crop(ident.image, ident.kps)

    def _people(self, ctx: RunContext, width: int, height: int) -> tuple[Any, list]:
        """Several people: the first one's region and ``(embedding, crop, mask, scale)`` per
        further person, each placed by its box (FaceID has no keypoints to follow)."""
        import torch

        from faceanchor.methods.regions import box_mask, check_no_overlap, clip_box, fit_box, requested_size, strengths

        request = ctx.request
        if not ctx.more and request.face_box is None:
            return None, []
        boxes = [request.face_box] + [p.box for _, p in ctx.more]
        missing = [j for j, b in enumerate(boxes, start=1) if b is None]
        if missing:
            raise InvalidInputError(f"{self.name} places each person by a box: give person {missing[0]} one (face_box for the first)")
        asked = requested_size(request, ctx.identity.image_size, ctx.family, ctx.tools.loader.default_size(ctx.family))
        boxes = [clip_box(fit_box(b, asked, width, height), width, height, j) for j, b in enumerate(boxes, start=1)]
        check_no_overlap(boxes)
        ctx.regions = [[float(v) for v in b] for b in boxes]
        active = [strengths(request, p)[1] != 0.0 for _, p in ctx.more]

        def mask(box: Any) -> Any:
            arr = np.asarray(box_mask(box, width, height, feather=any(active)), dtype=np.float32)
            return torch.from_numpy(np.ascontiguousarray(arr[..., 0] if arr.ndim == 3 else arr) / 255.0)

        more = [(torch.as_tensor(person.embedding, dtype=torch.float32), self.face_crop(ctx, person), mask(box), strengths(request, p)[1])
                for (person, p), box, on in zip(ctx.more, boxes[1:], active) if on]
        return mask(boxes[0]), more

    def run(self, loaded: Loaded, ctx: RunContext) -> list[Any]:
        import torch

        from faceanchor.methods.sizing import output_size
        from faceanchor.pipelines.decode import decode_latents
        from faceanchor.pipelines.prompts import encode_prompts

        request, ident, tools = ctx.request, ctx.identity, ctx.tools
        fp = loaded.pipe
        if ident.embedding.ndim == 2 and not self.separate_references:
            raise InvalidInputError(
                f"combine=concat keeps references as separate tokens, which {self.name} cannot take; "
                "use average or norm-average, or method instantid / faceid-portrait"
            )
        with ctx.stage("controls"):
            width, height = output_size(ident.image_size, request.width, request.height, loaded.family,
                                        tools.loader.default_size(loaded.family),
                                        self.work_pixels(loaded.family, tools.settings, tools.loader))
            self.adapter(loaded, tools.loader, request, int(ident.embedding.shape[-1]))
            crop = self.face_crop(ctx)
            region, more = self._people(ctx, width, height)
        tools.set_scheduler(loaded, request, fp.pipe)
        emb = torch.as_tensor(ident.embedding, dtype=torch.float32)
        with ctx.stage("prompt"):
            embeds = encode_prompts(fp.pipe, ctx.prompt, ctx.negative, weighting=request.prompt_weighting,
                                    device=fp.pipe._execution_device, do_classifier_free_guidance=True)
        text = dict(zip(("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"), embeds))
        required = tools.loader.required_space(self)
        images: list[Any] = []
        for chunk, start in enumerate(range(0, len(ctx.seeds), MAX_BATCH)):
            part = ctx.seeds[start : start + MAX_BATCH]
            with ctx.stage("denoise"):
                latents = fp.generate(
                    emb, face_image=crop, prompt=None, negative_prompt=None, **text, num_images=len(part),
                    num_inference_steps=request.steps, guidance_scale=request.guidance, width=width, height=height,
                    generator=tools.generators(part), scale=request.adapter_strength, s_scale=request.s_scale,
                    lora_scale=request.lora_scale, embedding_space=ident.space if required else None,
                    callback_on_step_end=ctx.step_callback(chunk), output_type="latent",
                    region=region, more_identities=more,
                )
            with ctx.stage("decode"):
                images.extend(decode_latents(fp.pipe, latents))
        return images


    # ------------------------------------------------------------------ separate requests, one call

    def batch_key(self, request: GenerationRequest) -> Any:
        """Per sample: seeds, prompts, identities (embedding, face crop). Shared, so in the key:
        the adapter model and its scales (``adapter_strength``, ``lora_scale``, ``s_scale``: one
        value per call in the FaceID processors). Several people (``face_box``,
        ``more_identities``) run alone."""
        if request.more_identities or request.face_box is not None:
            return None
        return (request.adapter_model, request.adapter_strength, request.lora_scale, request.s_scale)

    def run_many(self, loaded: Loaded, batch: Batch) -> list[list[Any]]:
        """The requests' samples in calls of up to ``MAX_BATCH`` images; requests whose output
        size or token counts differ go in different calls."""
        import torch

        from faceanchor.methods.sizing import output_size
        from faceanchor.pipelines.decode import decode_latents
        from faceanchor.pipelines.prompts import encode_prompts

        ctxs = batch.contexts
        first = ctxs[0].request
        tools = ctxs[0].tools
        fp = loaded.pipe
        per: list[dict[str, Any]] = []
        with batch.stage("controls"):
            for ctx in ctxs:
                ident = ctx.identity
                if ident.embedding.ndim == 2 and not self.separate_references:
                    raise InvalidInputError(
                        f"combine=concat keeps references as separate tokens, which {self.name} cannot take; "
                        "use average or norm-average, or method instantid / faceid-portrait"
                    )
                size = output_size(ident.image_size, ctx.request.width, ctx.request.height, loaded.family,
                                   tools.loader.default_size(loaded.family), self.work_pixels(loaded.family, tools.settings, tools.loader))
                self.adapter(loaded, tools.loader, ctx.request, int(ident.embedding.shape[-1]))
                per.append(dict(size=size, emb=torch.as_tensor(ident.embedding, dtype=torch.float32), crop=self.face_crop(ctx)))
        tools.set_scheduler(loaded, first, fp.pipe)
        with batch.stage("prompt"):
            for ctx, p in zip(ctxs, per):
                p["text"] = encode_prompts(fp.pipe, ctx.prompt, ctx.negative, weighting=ctx.request.prompt_weighting,
                                           device=fp.pipe._execution_device, do_classifier_free_guidance=True)
        groups: dict[Any, list[tuple[int, int]]] = {}  # call shape -> (request index, seed) per sample
        for i, (ctx, p) in enumerate(zip(ctxs, per)):
            shape = (p["size"], tuple(p["text"][0].shape), tuple(p["emb"].shape))
            groups.setdefault(shape, []).extend((i, seed) for seed in ctx.seeds)
        required = tools.loader.required_space(self)
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        out: list[list[Any]] = [[] for _ in ctxs]
        chunk = 0
        for ((width, height), *_), rows in groups.items():
            for start in range(0, len(rows), MAX_BATCH):
                part = rows[start : start + MAX_BATCH]
                ps = [per[i] for i, _ in part]
                text = {n: torch.cat([p["text"][k] for p in ps]) for k, n in enumerate(names) if k < len(ps[0]["text"])}
                with batch.stage("denoise"):
                    latents = fp.generate(
                        None, prompt=None, negative_prompt=None, **text, num_images=len(part), per_image=[(p["emb"], p["crop"]) for p in ps],
                        num_inference_steps=first.steps, guidance_scale=first.guidance, width=width, height=height,
                        generator=tools.generators([seed for _, seed in part]), scale=first.adapter_strength, s_scale=first.s_scale,
                        lora_scale=first.lora_scale, embedding_space=ctxs[0].identity.space if required else None,
                        callback_on_step_end=batch.step_callback(chunk), output_type="latent",
                    )
                with batch.stage("decode"):
                    for (i, _), image in zip(part, decode_latents(fp.pipe, latents)):
                        out[i].append(image)
                chunk += 1
        return out


class FaceID(FaceIDFamily):
    name = variant = "faceid"
    label = "IP-Adapter FaceID"
    description = "Face ID embedding through an MLP to 4 tokens, with the LoRA shipped in the checkpoint."
    fields = frozenset({"lora_scale", "face_box", "more_identities"})
    checkpoints = {"sd15": "faceid-sd15", "sdxl": "faceid-sdxl"}


class FaceIDPlus(FaceIDFamily):
    name = variant = "faceid-plus"
    label = "IP-Adapter FaceID Plus"
    description = "Face ID embedding plus CLIP ViT-H features of the aligned face for its structure (SD1.5)."
    families = ("sd15",)
    fields = frozenset({"lora_scale", "face_crop", "face_box", "more_identities"})
    checkpoints = {"sd15": "faceid-plus-sd15"}
    clip = True

    def family_for(self, request: GenerationRequest) -> str:
        if request.base == "sdxl":
            raise InvalidInputError("faceid-plus has SD1.5 weights only; use faceid-plusv2 for SDXL")
        return super().family_for(request)


class FaceIDPlusV2(FaceIDFamily):
    name = variant = "faceid-plusv2"
    label = "IP-Adapter FaceID PlusV2"
    description = "FaceID-Plus with a controllable shortcut: s_scale weighs the CLIP face structure."
    fields = frozenset({"lora_scale", "face_crop", "s_scale", "face_box", "more_identities"})
    checkpoints = {"sd15": "faceid-plusv2-sd15", "sdxl": "faceid-plusv2-sdxl"}
    clip = True


class FaceIDPortrait(FaceIDFamily):
    name = variant = "faceid-portrait"
    label = "IP-Adapter FaceID Portrait"
    description = "Up to 5 references, 16 tokens each, no LoRA: portraits that hold several photos of one face."
    separate_references = True
    fields = frozenset({"face_box", "more_identities"})
    checkpoints = {"sd15": "faceid-portrait-sd15", "sdxl": "faceid-portrait-sdxl"}


class FaceIDPortraitUnnorm(FaceIDPortrait):
    """The SDXL Portrait checkpoint trained on raw (not normalised) buffalo_l embeddings."""

    name = "faceid-portrait-unnorm"
    variant = "faceid-portrait"
    label = "IP-Adapter FaceID Portrait (SDXL, unnormalised)"
    description = "FaceID-Portrait SDXL trained on raw buffalo_l embeddings (ip-adapter-faceid-portrait_sdxl_unnorm.bin)."
    families = ("sdxl",)
    normalised = False
    checkpoints = {"sdxl": "faceid-portrait-sdxl-unnorm"}

    def model_specs(self) -> tuple[Any, ...]:
        from faceanchor.models.registry import ModelFile, ModelSpec

        return (ModelSpec(
            name="faceid-portrait-sdxl-unnorm", kind="adapter", repo_id=FACEID_REPO,
            description="IP-Adapter-FaceID-Portrait for SDXL on unnormalised embeddings (up to 5 references, no LoRA)",
            files=(ModelFile("ip-adapter-faceid-portrait_sdxl_unnorm.bin"),), family="sdxl", space="buffalo_l",
        ),)

    def _checkpoint_spec(self, family: str) -> Any:
        return self.model_specs()[0]


METHODS = (FaceID(), FaceIDPlus(), FaceIDPlusV2(), FaceIDPortrait(), FaceIDPortraitUnnorm())
