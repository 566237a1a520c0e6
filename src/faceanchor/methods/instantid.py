"""InstantID on SDXL: IdentityNet (a ControlNet on the keypoint image, fed the identity tokens)
plus the decoupled face adapter (Resampler tokens through ``to_k_ip``/``to_v_ip``).

Embedding: antelopev2's glintr100, the **raw** 512-D embedding (the official demo feeds
``face_info['embedding']``). Control image: ``draw_kps`` of the reference (or of ``pose_image``'s
largest face) mapped onto the output by a centre-crop fit; ``enhance_face_region`` masks
IdentityNet's residuals and the identity attention with the face box (corners truncated with
``int()``, as the official demo). Extra pose/canny/depth ControlNets combine with IdentityNet.
It renders (image-to-image / inpainting), which characters' edits and the face-detail pass use.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceanchor.errors import InvalidInputError, NoFaceError
from faceanchor.methods.contract import Batch, Loaded, Method, RunContext
from faceanchor.types import GenerationRequest, Identity

MAX_BATCH = 4


def cover_transform(src: tuple[int, int], dst: tuple[int, int]) -> tuple[float, float, float]:
    """Scale and offset that fill ``dst`` with ``src`` (centre crop): ``p' = p * s - (dx, dy)``."""
    sw, sh = src
    dw, dh = dst
    s = max(dw / sw, dh / sh)
    return s, (sw * s - dw) / 2.0, (sh * s - dh) / 2.0


def map_points(pts: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """Points of a ``src``-sized photo in the ``dst`` output it is cover-fitted to."""
    s, dx, dy = cover_transform(src, dst)
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2) * s - np.array([dx, dy])


def cover_image(img: Any, dst: tuple[int, int]) -> Any:
    """``img`` resized and centre-cropped to fill ``dst``."""
    from PIL import Image

    s, dx, dy = cover_transform(img.size, dst)
    resized = img.resize((max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s))), Image.BILINEAR)
    left, top = int(round(dx)), int(round(dy))
    return resized.crop((left, top, left + dst[0], top + dst[1]))


def control_image(name: str, image: Any, settings: Any) -> Any:
    """The control image of extra ControlNet ``name`` (pose / canny / depth) from a photo."""
    from faceanchor import controls

    if name == "canny":
        return controls.canny_image(image)
    if name == "pose":
        return controls.pose_image(image)
    return controls.depth_image(image, settings)


class InstantID(Method):
    name = "instantid"
    app = "instantid"
    label = "InstantID (SDXL)"
    description = "IdentityNet keypoint control + face adapter on SDXL; the strongest hold on face shape and pose."
    families = ("sdxl",)
    space = "antelopev2"
    normalised = False
    fields = frozenset({
        "identity_strength", "enhance_face_region", "controlnet_selection", "controlnet_conditioning_scale", "controlnet_scales",
        "pose_image", "control_guidance_start", "control_guidance_end", "negative_embedding_noise",
        "face_detail", "identitynet_model", "face_box", "more_identities",
    })
    max_identities = 4
    max_references = 5
    pipeline_key = "instantid"
    order = 0

    def model_names(self, family: str | None = None) -> tuple[str, ...]:
        return ("antelopev2", "instantid-identitynet", "instantid-adapter", "sdxl-base", "lcm-lora-sdxl", "sdxl-lightning-4step-lora", "hyper-sdxl-8step-cfg-lora", "tcd-sdxl-lora",
                "controlnet-pose-sdxl", "controlnet-canny-sdxl", "controlnet-depth-sdxl", "depth-estimator")

    def cache_key(self, family: str, request: GenerationRequest, id_dim: int, loader: Any) -> tuple[Any, ...]:
        named = loader.honours_model_name
        return (*super().cache_key(family, request, id_dim, loader), request.identitynet_model if named else None,
                request.adapter_model if named else None)

    # ------------------------------------------------------------------ load

    def load(self, loader: Any, family: str, request: GenerationRequest, id_dim: int) -> Loaded:
        from faceanchor.pipelines.instantid_sdxl import InstantIDSDXLPipeline

        comps, models = loader.base_components("sdxl", request.model_name)
        identitynet, models["identitynet"] = loader.identitynet(request.identitynet_model)
        pipe = InstantIDSDXLPipeline(
            vae=comps["vae"], text_encoder=comps["text_encoder"], text_encoder_2=comps["text_encoder_2"],
            tokenizer=comps["tokenizer"], tokenizer_2=comps["tokenizer_2"], unet=comps["unet"],
            controlnet=identitynet, scheduler=comps["scheduler"],
        )
        pipe.set_progress_bar_config(disable=True)
        adapter, models["adapter"] = loader.instantid_adapter(comps["unet"], id_dim, request.adapter_model)
        pipe.load_instantid_adapter(adapter, scale=0.8)
        return Loaded("sdxl", pipe, models, comps["scheduler"].config)

    # ------------------------------------------------------------------ controls

    def controls(self, request: GenerationRequest, ident: Identity, tools: Any) -> tuple[int, int, Any, Any, Any]:
        """Output size, keypoint image, face-region mask and the photo extra controls come from.

        Keypoints come from ``pose_image``'s largest face when given, else from the reference;
        they are mapped onto the output by a centre-crop fit of their photo.
        """
        from PIL import Image

        from faceanchor.face.kps import draw_kps
        from faceanchor.methods.sizing import output_size
        from faceanchor.pipelines.instantid_sdxl import face_box_mask

        kps, bbox, src_size, control_src = ident.kps, ident.bbox, ident.image_size, ident.image
        if request.pose_image is not None:
            an = tools.analyzer(tools.pack())
            pose_img = an.load(request.pose_image, name="pose_image")
            pose_faces = an.detect(pose_img)
            if not pose_faces:
                raise NoFaceError("no face found in pose_image (also tried other scales)")
            kps, bbox, src_size, control_src = pose_faces[0].kps, pose_faces[0].bbox, pose_img.size, pose_img
        if kps is None:
            raise InvalidInputError("InstantID needs face keypoints: give a face photo, face_kps or a pose_image")
        width, height = output_size(src_size, request.width, request.height, "sdxl", tools.loader.default_size("sdxl"),
                                    self.work_pixels("sdxl", tools.settings, tools.loader))
        src_size = src_size or (width, height)
        kps_image = draw_kps((width, height), map_points(kps, src_size, (width, height)))
        mask = None
        if request.enhance_face_region and bbox is not None:
            box = map_points(np.asarray(bbox).reshape(2, 2), src_size, (width, height)).reshape(4)
            mask = Image.fromarray(face_box_mask(box, width, height))
        if request.controlnet_selection and control_src is None:
            raise InvalidInputError("extra ControlNets need a photo (face_image or pose_image) to make their control images")
        return width, height, kps_image, mask, control_src

    # ------------------------------------------------------------------ several people

    def placements(self, request: GenerationRequest, ident: Identity, more: list, tools: Any, feather: bool) -> tuple[int, int, list, Any]:
        """Output size, ``(kps image, region mask, box)`` per person (request order), control photo.

        A person goes where its ``box`` says (its reference keypoints scaled into the box) or,
        with ``pose_image``, onto the pose photo's faces taken left to right (``pose_index``
        picks another). Regions are the boxes, feathered inwards a few pixels when ``feather``
        (several people act); they must not overlap.
        """
        from faceanchor.face.kps import draw_kps
        from faceanchor.methods.regions import box_mask, check_no_overlap, clip_box, fit_box, fit_into_box, requested_size
        from faceanchor.methods.sizing import output_size

        people = [(ident, request.face_box, None, request)] + [(i, p.box, p.pose_index, p) for i, p in more]
        pose_faces, pose_size, control_src = None, None, ident.image
        if request.pose_image is not None:
            an = tools.analyzer(tools.pack())
            pose_img = an.load(request.pose_image, name="pose_image")
            pose_faces = sorted(an.detect(pose_img), key=lambda f: f.bbox[0] + f.bbox[2])  # left to right
            pose_size, control_src = pose_img.size, pose_img
        src_size = pose_size or ident.image_size
        width, height = output_size(src_size, request.width, request.height, "sdxl", tools.loader.default_size("sdxl"),
                                    self.work_pixels("sdxl", tools.settings, tools.loader))
        asked = requested_size(request, src_size, "sdxl", tools.loader.default_size("sdxl"))
        out = []
        for j, (person, box, pose_index, _) in enumerate(people, start=1):
            if box is not None:
                if person.kps is None:
                    raise InvalidInputError(f"person {j} needs face keypoints (a photo or face_kps) to be placed in its box")
                box = clip_box(fit_box(box, asked, width, height), width, height, j)
                kps = fit_into_box(np.asarray(person.kps, np.float64), np.asarray(person.bbox, np.float64), box)
            elif pose_faces is not None:
                k = (j - 1) if pose_index is None else pose_index
                if k >= len(pose_faces):
                    raise NoFaceError(f"pose_image has {len(pose_faces)} face(s); person {j} needs face {k + 1} (left to right)")
                f = pose_faces[k]
                kps = map_points(f.kps, pose_size, (width, height))
                box = map_points(np.asarray(f.bbox).reshape(2, 2), pose_size, (width, height)).reshape(4)
            else:
                raise InvalidInputError(f"with several people each needs a place: give person {j} a box (face_box for the first) or a pose_image")
            out.append((draw_kps((width, height), kps), box))
        check_no_overlap([b for _, b in out])
        placed = [(kps_image, box_mask(box, width, height, feather), [float(v) for v in box]) for kps_image, box in out]
        return width, height, placed, control_src

    # ------------------------------------------------------------------ run

    @staticmethod
    def _embedding(ident: Identity) -> Any:
        import torch

        emb = torch.as_tensor(np.asarray(ident.embedding, np.float32), dtype=torch.float32)
        if emb.ndim == 2:  # concat: each reference one more input token of the Resampler
            emb = emb.reshape(1, -1, emb.shape[-1])
        return emb

    def run(self, loaded: Loaded, ctx: RunContext) -> list[Any]:
        from faceanchor.pipelines.decode import decode_latents
        from faceanchor.pipelines.instantid_sdxl import ExtraControl
        from faceanchor.pipelines.prompts import encode_prompts

        request, ident, tools = ctx.request, ctx.identity, ctx.tools
        pipe = loaded.pipe
        more_people: list[Any] = []
        with ctx.stage("controls"):
            if ctx.more or request.face_box is not None:
                from faceanchor.pipelines.instantid_sdxl import RegionIdentity

                from faceanchor.methods.regions import strengths as person_strengths

                strengths = [person_strengths(request, p) for _, p in ctx.more]
                active = [s != (0.0, 0.0) for s in strengths]  # a person at strengths 0 adds nothing: left out
                width, height, placed, control_src = self.placements(request, ident, ctx.more, tools, feather=sum(active) >= 1)
                (kps_image, mask, _), others = placed[0], placed[1:]
                ctx.regions = [box for _, _, box in placed]
                if not ctx.more and not request.enhance_face_region:
                    mask = None  # one person placed by face_box: its region mask only if asked for
                for (person, _), (kimg, m, _), (ids, ads), on in zip(ctx.more, others, strengths, active):
                    if on:
                        more_people.append(RegionIdentity(self._embedding(person), kimg, m, identity_scale=ids, adapter_scale=ads))
            else:
                width, height, kps_image, mask, control_src = self.controls(request, ident, tools)
            extras = []
            for name in request.controlnet_selection:
                cn, model_id = tools.controlnet(name)
                loaded.models[f"controlnet_{name}"] = model_id
                image = control_image(name, cover_image(control_src, (width, height)), tools.settings)
                extras.append(ExtraControl(controlnet=cn, image=image, scale=request.controlnet_scales.get(name, request.controlnet_conditioning_scale)))
        tools.set_scheduler(loaded, request, pipe)
        emb = self._embedding(ident)
        with ctx.stage("prompt"):
            do_cfg = request.guidance > 1.0
            pe, npe, ppe, nppe = encode_prompts(
                pipe, ctx.prompt, ctx.negative or None, weighting=request.prompt_weighting,
                device=pipe._execution_device, do_classifier_free_guidance=do_cfg,
            )
        images: list[Any] = []
        chunks = range(0, len(ctx.seeds), MAX_BATCH)
        for chunk, start in enumerate(chunks):
            part = ctx.seeds[start : start + MAX_BATCH]
            with ctx.stage("denoise"):
                latents = pipe(
                    prompt=None, face_embedding=emb, kps_image=kps_image, face_mask=mask,
                    height=height, width=width, num_inference_steps=request.steps, guidance_scale=request.guidance,
                    num_images=len(part), generator=tools.generators(part),
                    identity_scale=request.identity_strength, adapter_scale=request.adapter_strength,
                    control_guidance_start=request.control_guidance_start, control_guidance_end=request.control_guidance_end,
                    negative_embedding_noise=request.negative_embedding_noise, extra_controls=extras, more_identities=more_people,
                    prompt_embeds=pe, negative_prompt_embeds=npe if do_cfg else None,
                    pooled_prompt_embeds=ppe, negative_pooled_prompt_embeds=nppe if do_cfg else None,
                    callback_on_step_end=ctx.step_callback(chunk), output_type="latent",
                ).images
            with ctx.stage("decode"):
                images.extend(decode_latents(pipe, latents))
        ctx.timings["steps_per_second"] = round(request.steps * len(chunks) / max(ctx.timings.get("denoise", 1e-9), 1e-9), 4)
        return images

    # ------------------------------------------------------------------ separate requests, one call

    def batch_key(self, request: GenerationRequest) -> Any:
        """Per sample: seeds, prompts, identities (embedding, keypoint image, face region),
        IdentityNet and adapter strengths, pose photos. Shared, so in the key: the IdentityNet
        and adapter models, whether a face region is used, the control window, the extra
        ControlNets and their scales, the negative-embedding noise. Several people in one picture
        (``more_identities``, ``face_box``: region control) run alone."""
        if request.more_identities or request.face_box is not None:
            return None
        scales = tuple(request.controlnet_scales.get(n, request.controlnet_conditioning_scale) for n in request.controlnet_selection)
        return (request.identitynet_model, request.adapter_model, request.enhance_face_region, request.control_guidance_start,
                request.control_guidance_end, tuple(request.controlnet_selection), scales, request.negative_embedding_noise)

    def run_many(self, loaded: Loaded, batch: Batch) -> list[list[Any]]:
        """The requests' samples in calls of up to ``MAX_BATCH`` images; requests whose output
        size or token shapes differ (sizes from the photo, concatenated references, long prompts)
        go in different calls. Each image equals its request's own run, up to float tolerance."""
        import torch

        from faceanchor.pipelines.decode import decode_latents
        from faceanchor.pipelines.instantid_sdxl import ExtraControl
        from faceanchor.pipelines.prompts import encode_prompts

        ctxs = batch.contexts
        first = ctxs[0].request
        tools = ctxs[0].tools
        pipe = loaded.pipe
        do_cfg = first.guidance > 1.0
        per: list[dict[str, Any]] = []
        with batch.stage("controls"):
            nets = []
            for name in first.controlnet_selection:
                cn, model_id = tools.controlnet(name)
                loaded.models[f"controlnet_{name}"] = model_id
                nets.append((name, cn, first.controlnet_scales.get(name, first.controlnet_conditioning_scale)))
            for ctx in ctxs:
                width, height, kps_image, mask, control_src = self.controls(ctx.request, ctx.identity, ctx.tools)
                extra = [control_image(name, cover_image(control_src, (width, height)), tools.settings) for name, _, _ in nets]
                emb = self._embedding(ctx.identity)
                per.append(dict(size=(width, height), kps=kps_image, mask=mask, extra=extra,
                                emb=emb.reshape(1, -1, emb.shape[-1])))
        tools.set_scheduler(loaded, first, pipe)
        with batch.stage("prompt"):
            for ctx, p in zip(ctxs, per):
                p["text"] = encode_prompts(
                    pipe, ctx.prompt, ctx.negative or None, weighting=ctx.request.prompt_weighting,
                    device=pipe._execution_device, do_classifier_free_guidance=do_cfg,
                )
        groups: dict[Any, list[tuple[int, int]]] = {}  # call shape -> (request index, seed) per sample
        for i, (ctx, p) in enumerate(zip(ctxs, per)):
            shape = (p["size"], tuple(p["text"][0].shape), tuple(p["emb"].shape), p["mask"] is None)
            groups.setdefault(shape, []).extend((i, seed) for seed in ctx.seeds)
        out: list[list[Any]] = [[] for _ in ctxs]
        chunk = 0
        calls = 0
        for (size, *_), rows in groups.items():
            for start in range(0, len(rows), MAX_BATCH):
                part = rows[start : start + MAX_BATCH]
                ps = [per[i] for i, _ in part]
                texts = [torch.cat([p["text"][k] for p in ps]) if ps[0]["text"][k] is not None else None for k in range(4)]
                reqs = [ctxs[i].request for i, _ in part]
                extras = [ExtraControl(controlnet=cn, image=[p["extra"][k] for p in ps], scale=sc) for k, (_, cn, sc) in enumerate(nets)]
                one = len(part) == 1
                with batch.stage("denoise"):
                    latents = pipe(
                        prompt=None, face_embedding=torch.cat([p["emb"] for p in ps]),
                        kps_image=ps[0]["kps"] if one else [p["kps"] for p in ps],
                        face_mask=None if ps[0]["mask"] is None else (ps[0]["mask"] if one else [p["mask"] for p in ps]),
                        height=size[1], width=size[0], num_inference_steps=first.steps, guidance_scale=first.guidance,
                        num_images=len(part), generator=tools.generators([seed for _, seed in part]),
                        identity_scale=[r.identity_strength for r in reqs], adapter_scale=[r.adapter_strength for r in reqs],
                        control_guidance_start=first.control_guidance_start, control_guidance_end=first.control_guidance_end,
                        negative_embedding_noise=first.negative_embedding_noise, extra_controls=extras,
                        prompt_embeds=texts[0], negative_prompt_embeds=texts[1] if do_cfg else None,
                        pooled_prompt_embeds=texts[2], negative_pooled_prompt_embeds=texts[3] if do_cfg else None,
                        callback_on_step_end=batch.step_callback(chunk), output_type="latent",
                    ).images
                with batch.stage("decode"):
                    for (i, _), image in zip(part, decode_latents(pipe, latents)):
                        out[i].append(image)
                chunk += 1
                calls += 1
        for ctx in ctxs:
            ctx.timings["steps_per_second"] = round(first.steps * calls / max(ctx.timings.get("denoise", 1e-9), 1e-9), 4)
        return out

    # ------------------------------------------------------------------ render

    def render(self, loaded: Loaded, ctx: RunContext, image: Any, kps: np.ndarray, *, strength: float,
               seed: int, mask: np.ndarray | None = None, face_box: np.ndarray | None = None,
               callback: Any = None) -> Any:
        """Image-to-image of ``image`` (size on the model grid) with ``kps`` in its coordinates."""
        from PIL import Image

        from faceanchor.face.kps import draw_kps
        from faceanchor.pipelines.instantid_img2img import InstantIDImg2ImgPipeline
        from faceanchor.pipelines.instantid_sdxl import face_box_mask

        request = ctx.request
        pipe = InstantIDImg2ImgPipeline.from_instantid(loaded.pipe)
        ctx.tools.set_scheduler(loaded, request, pipe)
        w, h = image.size
        kps_image = draw_kps((w, h), kps)
        region = None
        if request.enhance_face_region and face_box is not None:
            region = Image.fromarray(face_box_mask(face_box, w, h))
        mask_image = Image.fromarray(mask.astype(np.uint8) * 255) if mask is not None else None
        steps = request.steps
        if int(steps * strength) < 1:  # a low strength keeps at least one denoising step
            steps = int(np.ceil(1.0 / strength))
        out = pipe(
            ctx.prompt, self._embedding(ctx.identity), kps_image, image, strength=strength, mask_image=mask_image,
            negative_prompt=ctx.negative or None, face_mask=region, height=h, width=w, num_inference_steps=steps,
            guidance_scale=request.guidance, generator=ctx.tools.generators([seed]), identity_scale=request.identity_strength,
            adapter_scale=request.adapter_strength, control_guidance_start=request.control_guidance_start,
            control_guidance_end=request.control_guidance_end, negative_embedding_noise=request.negative_embedding_noise,
            callback_on_step_end=callback, output_type="pil",
        ).images
        return out[0]


METHODS = (InstantID(),)
