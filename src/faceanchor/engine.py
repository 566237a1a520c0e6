"""The generation engine: face → embedding → adapter → pipeline → scored images.

``Engine(settings, weights=...)`` keeps the loaded models between calls (one base per family,
adapters switched on it) and runs :meth:`Engine.generate` for any
:class:`~faceanchor.types.GenerationRequest`. Steps, each timed into ``result.timings``:

1. ``load``: models for the request's method/base (cached after the first call).
2. ``face``: decode the references, pick a face (largest or ``face_index``), embed, combine
   several references; or take a precomputed embedding + keypoints (characters).
3. ``controls``: output size, the InstantID keypoint image (from ``pose_image`` when given),
   the face-region mask, extra pose/canny/depth control images.
4. ``prompt``: style preset, text encoding.
5. ``denoise``: the pipeline, with per-step progress and cancellation between steps.
6. ``decode``: VAE decode.
7. ``score``: the face encoder on every output, cosine to the reference (``best_of`` keeps
   the best candidates).
"""

from __future__ import annotations

import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from faceanchor.errors import Cancelled, EmbeddingMismatchError, FaceAnchorError, InvalidInputError, NoFaceError
from faceanchor.types import (
    CancelCheck,
    Face,
    GeneratedImage,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
    ProgressEvent,
)

#: Official InstantID demo sizing: from the face photo, min side 1024, max side 1280, multiple of 64.
SDXL_SIZING = (1024, 1280, 64)
SD15_SIZING = (512, 768, 8)
MAX_BATCH = 4


@dataclass
class Identity:
    """What generation needs of the reference face(s)."""

    embedding: np.ndarray  # (D,) or (K, D) for concat / portrait
    space: str
    kps: np.ndarray | None  # (5, 2) in the coordinates of ``image_size``
    bbox: np.ndarray | None
    image_size: tuple[int, int] | None  # (width, height) of the photo kps refer to
    reference: np.ndarray  # (D,) embedding outputs are scored against
    image: Any = None  # PIL image of the main reference (CLIP crop, canny/pose/depth source)
    faces: tuple[Face, ...] = ()


def output_size(photo_size: tuple[int, int] | None, width: int | None, height: int | None, family: str) -> tuple[int, int]:
    """Output (width, height): explicit values rounded down to the grid; else from the photo's aspect."""
    lo, hi, step = SDXL_SIZING if family == "sdxl" else SD15_SIZING
    if width is not None or height is not None:
        if width is None or height is None:
            pw, ph = photo_size or (1, 1)
            if width is None:
                width = int(round(height * pw / ph))
            else:
                height = int(round(width * ph / pw))
        w, h = (int(width) // step) * step, (int(height) // step) * step
        if w < step or h < step:
            raise InvalidInputError(f"width and height must be at least {step} pixels")
        return w, h
    if photo_size is None:
        return lo, lo
    pw, ph = photo_size
    r = lo / min(pw, ph)
    w, h = pw * r, ph * r
    if max(w, h) > hi:
        r = hi / max(w, h)
        w, h = w * r, h * r
    return max(step, round(w) // step * step), max(step, round(h) // step * step)


def cover_transform(src: tuple[int, int], dst: tuple[int, int]) -> tuple[float, float, float]:
    """Scale and offset that fill ``dst`` with ``src`` (centre crop): ``p' = p * s - (dx, dy)``."""
    sw, sh = src
    dw, dh = dst
    s = max(dw / sw, dh / sh)
    return s, (sw * s - dw) / 2.0, (sh * s - dh) / 2.0


def _map_points(pts: np.ndarray, src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    s, dx, dy = cover_transform(src, dst)
    out = np.asarray(pts, dtype=np.float64).reshape(-1, 2) * s - np.array([dx, dy])
    return out


def _cover_image(img: Any, dst: tuple[int, int]) -> Any:
    from PIL import Image

    s, dx, dy = cover_transform(img.size, dst)
    resized = img.resize((max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s))), Image.BILINEAR)
    left, top = int(round(dx)), int(round(dy))
    return resized.crop((left, top, left + dst[0], top + dst[1]))


def _label(src: Any, fallback: str) -> str:
    """A readable name for an image input: its path when it is one, else ``fallback``."""
    from pathlib import Path

    if isinstance(src, str) and len(src) < 260 and not src.startswith("data:"):
        try:
            if Path(src).expanduser().exists():
                return src
        except OSError:
            pass
    return fallback


def face_region_mask(bbox: np.ndarray, size: tuple[int, int]) -> Any:
    """The official ``control_mask``: 255 inside the face box, 0 elsewhere (RGB, output size)."""
    from PIL import Image

    w, h = size
    mask = np.zeros((h, w, 3), dtype=np.uint8)
    x1, y1, x2, y2 = [int(v) for v in np.round(bbox)]
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(w, x2), min(h, y2)
    if x2 > x1 and y2 > y1:
        mask[y1:y2, x1:x2] = 255
    return Image.fromarray(mask)


class Engine:
    """Loads models once and serves :meth:`generate` calls (thread-safe: one at a time).

    ``weights``: ``real`` (official checkpoints; real InstantID needs the antelopev2 face pack,
    real FaceID buffalo_l), ``dummy`` (full-size random) or ``tiny`` (tiny random). ``face_pack``
    overrides the pack: dummy/tiny adapters take the encoder's dimension, so the offline
    ``dlib`` pack runs the whole path.
    """

    def __init__(
        self,
        settings: Any,
        *,
        weights: str | None = None,
        face_pack: str | None = None,
        device: str | None = None,
        dtype: Any = None,
        seed: int = 0,
        analyzer: Any = None,
    ):
        from faceanchor.config import resolve_device, resolve_dtype

        self.settings = settings
        self.weights = weights or getattr(settings, "weights", "real")
        if self.weights not in ("real", "dummy", "tiny"):
            raise InvalidInputError(f"weights {self.weights!r} is unknown; use real, dummy or tiny")
        self.device = device or resolve_device(settings.device)
        self.dtype = dtype or resolve_dtype(settings.dtype, self.device)
        self.seed = seed
        self.face_pack = face_pack
        self._analyzers: dict[str, Any] = {}
        if analyzer is not None:
            self._analyzers[analyzer.pack] = analyzer
        self._bases: dict[tuple[str, str, str | None], Any] = {}
        self._faceid_adapters: dict[tuple[Any, ...], Any] = {}
        self._controlnets: dict[str, tuple[Any, str]] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ faces

    def pack_for(self, method: str) -> str:
        if self.face_pack:
            return self.face_pack
        if self.weights == "real":
            from faceanchor.models.registry import face_pack_for

            return face_pack_for(method)
        return getattr(self.settings, "face_pack", "dlib") or "dlib"

    def analyzer(self, pack: str | None = None) -> Any:
        """The (prepared) face analyzer of ``pack``, created once."""
        from faceanchor.face.analyzer import FaceAnalyzer

        pack = pack or getattr(self.settings, "face_pack", "dlib")
        if pack not in self._analyzers:
            self._analyzers[pack] = FaceAnalyzer(self.settings, pack)
        return self._analyzers[pack].prepare()

    def _required_space(self, method: str) -> str | None:
        if self.weights != "real":
            return None
        from faceanchor.models.registry import face_pack_for

        return face_pack_for(method)

    def identity(self, request: GenerationRequest) -> Identity:
        """The reference identity: from a precomputed embedding, or from the photos."""
        required = self._required_space(request.method)
        if request.face_embedding is not None:
            emb = np.asarray(request.face_embedding, dtype=np.float32)
            space = request.face_embedding_space or self.pack_for(request.method)
            if required and space != required:
                raise EmbeddingMismatchError(
                    f"real {request.method} weights need embeddings of the {required} space, got {space}; "
                    f"analyse the photo with the {required} face pack"
                )
            kps = np.asarray(request.face_kps, dtype=np.float32) if request.face_kps is not None else None
            size = tuple(request.face_image_size) if request.face_image_size else None
            bbox = np.asarray(request.face_bbox, dtype=np.float32) if request.face_bbox is not None else None
            if bbox is None and kps is not None:  # no stored box: pad the keypoints' extent
                lo, hi = kps.min(0), kps.max(0)
                pad = (hi - lo) * 0.6
                bbox = np.concatenate([lo - pad, hi + pad])
            ref = emb.reshape(-1, emb.shape[-1])[0] if emb.ndim == 2 else emb
            return Identity(emb, space, kps, bbox, size, ref)
        refs = request.references
        if not refs:
            raise InvalidInputError("give a face image (face_image) or a precomputed face_embedding")
        pack = self.pack_for(request.method)
        if required and pack != required:
            raise EmbeddingMismatchError(
                f"real {request.method} weights need the {required} embedding space; the {pack} face pack gives {pack} embeddings"
            )
        an = self.analyzer(pack)
        faces: list[Face] = []
        images = []
        for i, src in enumerate(refs):
            name = _label(src, f"face image {i + 1}")
            img = an.load(src, name=name)
            faces.append(an.get_face(img, index=request.face_index if i == 0 else None, name=name))
            images.append(img)
        from faceanchor.face.combine import combine_embeddings

        embs = [f.embedding for f in faces]
        if request.method == "faceid-portrait" or (len(embs) > 1 and request.combine == "concat"):
            emb = np.stack(embs)  # one token group per reference
        elif len(embs) == 1:
            emb = embs[0]
        else:
            emb = combine_embeddings(embs, request.combine)
        ref_emb = combine_embeddings(embs, "average") if len(embs) > 1 else embs[0]
        main = faces[0]
        return Identity(np.asarray(emb, np.float32), an.space, main.kps, main.bbox, images[0].size, np.asarray(ref_emb, np.float32), images[0], tuple(faces))

    def score(self, images: list[Any], identity: Identity) -> list[tuple[float | None, str | None]]:
        """Identity score of each image: cosine of its largest face to the reference."""
        from faceanchor.face.similarity import identity_score

        try:
            an = self.analyzer(identity.space)
        except FaceAnchorError as e:
            return [(None, f"no face encoder for space {identity.space}: {e}")] * len(images)
        out: list[tuple[float | None, str | None]] = []
        for img in images:
            faces = an.detect(img)
            if not faces:
                out.append((None, "no face found in the output"))
                continue
            f = an.embed(img, faces[0], with_quality=False)
            if f.embedding.shape != identity.reference.shape:
                out.append((None, f"output embedding has {f.embedding.shape[0]} dims, reference {identity.reference.shape[0]}"))
                continue
            out.append((round(float(identity_score(f.embedding, identity.reference)), 4), None))
        return out

    # ------------------------------------------------------------------ models

    def family_for(self, request: GenerationRequest) -> str:
        if request.method == "instantid":
            if request.base not in (None, "sdxl"):
                raise InvalidInputError("InstantID runs on SDXL only; leave base unset or use sdxl")
            return "sdxl"
        if request.method == "faceid-plus" and request.base == "sdxl":
            raise InvalidInputError("faceid-plus has SD1.5 weights only; use faceid-plusv2 for SDXL")
        return request.base or "sd15"

    def _base(self, request: GenerationRequest, embedding_dim: int) -> Any:
        from faceanchor.pipelines import loading

        family = self.family_for(request)
        kind = "instantid" if request.method == "instantid" else "faceid"
        key = (kind, family, request.model_name, embedding_dim if self.weights != "real" else None)
        if key not in self._bases:
            # one base per family and kind: drop others of the same family first (memory)
            for k in [k for k in self._bases if k[1] == family]:
                old = self._bases.pop(k)
                for a in [a for a in self._faceid_adapters if a[0] == id(old)]:
                    del self._faceid_adapters[a]
            if kind == "instantid":
                self._bases[key] = loading.load_instantid(self.weights, self.settings, request.model_name, self.device, self.dtype, self.seed, embedding_dim)
            else:
                self._bases[key] = loading.load_faceid_base(family, self.weights, self.settings, request.model_name, self.device, self.dtype, self.seed, clip=True)
        return self._bases[key]

    def _controlnet(self, name: str) -> tuple[Any, str]:
        from faceanchor.pipelines import loading

        if name not in self._controlnets:
            self._controlnets[name] = loading.load_extra_controlnet(name, self.weights, self.settings, self.device, self.dtype, self.seed)
        return self._controlnets[name]

    def _set_scheduler(self, loaded: Any, request: GenerationRequest, pipe: Any) -> None:
        from faceanchor.pipelines import loading

        pipe.scheduler = loading.make_scheduler(request.scheduler, loaded.base_scheduler_config)
        if self.weights == "real":
            if request.scheduler == "lcm" and not loaded.lcm_lora:
                loaded.models["lcm_lora"] = loading.load_lcm_lora(loaded, self.settings)
            if loaded.lcm_lora:
                pipe.set_adapters(["lcm"], adapter_weights=[1.0 if request.scheduler == "lcm" else 0.0])

    def warmup(self, methods: tuple[str, ...] = ("instantid",)) -> "Engine":
        """Load the face pack and the models of ``methods`` now (servers call this at start-up)."""
        with self._lock:
            for method in methods:
                an = self.analyzer(self.pack_for(method))
                self._base(GenerationRequest(method=method), an.dim)
        return self

    # ------------------------------------------------------------------ generate

    def generate(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback | None = None,
        cancel: CancelCheck | None = None,
    ) -> GenerationResult:
        """Run one request; raises FaceAnchorError subclasses for anything the caller can fix."""
        with self._lock:
            return self._generate(request, on_progress, cancel)

    def _generate(self, request: GenerationRequest, on_progress: ProgressCallback | None, cancel: CancelCheck | None) -> GenerationResult:
        import torch

        timings: dict[str, float] = {}
        notify = on_progress or (lambda e: None)
        check = cancel or (lambda: False)

        @contextmanager
        def stage(name: str) -> Iterator[None]:
            if check():
                raise Cancelled(f"cancelled before {name}")
            notify(ProgressEvent(stage=name, message=f"{name} started"))
            t0 = time.perf_counter()
            yield
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0

        family = self.family_for(request)
        with stage("face"):
            ident = self.identity(request)
        if request.method == "faceid-portrait" and ident.embedding.ndim == 2 and ident.embedding.shape[0] > 5:
            raise InvalidInputError("faceid-portrait takes at most 5 references")
        with stage("load"):
            loaded = self._base(request, int(ident.embedding.shape[-1]))
        seed = request.seed if request.seed >= 0 else secrets.randbelow(2**32)
        total = request.samples * request.best_of
        seeds = [seed + i for i in range(total)]
        from faceanchor.styles import apply_style

        prompt, negative = apply_style(request.style, request.prompt, request.negative_prompt)
        warnings = [w for f in ident.faces for w in (f.quality.warnings if f.quality else ())]

        if request.method == "instantid":
            images = self._run_instantid(request, loaded, ident, prompt, negative, seeds, stage, notify, check, timings)
        else:
            images = self._run_faceid(request, loaded, ident, prompt, negative, seeds, family, stage, notify, check, timings)

        with stage("score"):
            scores = self.score(images, ident)
        outs = [GeneratedImage(im, s, sc, why) for im, s, (sc, why) in zip(images, seeds, scores)]
        if request.best_of > 1:
            outs = sorted(outs, key=lambda o: -1e9 if o.identity_score is None else o.identity_score, reverse=True)[: request.samples]
        face_detail = None
        if request.face_detail:  # small faces re-rendered at a higher resolution (faceanchor.character.edit)
            from faceanchor.character.edit import face_detail_pass

            with stage("face_detail"):
                outs, face_detail = face_detail_pass(self, request, ident, outs, cancel=check)
        params = request.public_params()
        params.update(seed=seed, prompt_used=prompt, negative_prompt_used=negative, face_space=ident.space)
        if face_detail is not None:
            params["face_detail"] = face_detail
        if torch.cuda.is_available() and str(self.device).startswith("cuda"):
            timings["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return GenerationResult(images=outs, seed=seed, params=params, models=models_used(loaded.models, request), timings=timings, warnings=warnings)

    def _generators(self, seeds: list[int]) -> list[Any]:
        import torch

        return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def _step_reporter(self, notify: ProgressCallback, chunk: int):
        def on_step(step: int, total: int) -> None:
            notify(ProgressEvent(stage="denoise", step=step, total=total, sample=chunk, message=f"step {step}/{total}"))

        return on_step

    def _run_instantid(self, request, loaded, ident: Identity, prompt, negative, seeds, stage, notify, check, timings) -> list[Any]:
        import torch

        from faceanchor.pipelines.instantid_sdxl import ExtraControl

        pipe = loaded.pipe
        with stage("controls"):
            width, height, kps_image, mask, control_src = self.instantid_controls(request, ident)
            extras = []
            for name in request.controlnet_selection:
                cn, model_id = self._controlnet(name)
                loaded.models[f"controlnet_{name}"] = model_id
                image = self._control_image(name, _cover_image(control_src, (width, height)))
                extras.append(ExtraControl(controlnet=cn, image=image, scale=request.controlnet_conditioning_scale))
        self._set_scheduler(loaded, request, pipe)
        emb = torch.as_tensor(ident.embedding, dtype=torch.float32)
        if emb.ndim == 2:  # concat: each reference one more input token of the Resampler
            emb = emb.reshape(1, -1, emb.shape[-1])
        device = pipe._execution_device
        with stage("prompt"):
            do_cfg = request.guidance > 1.0
            pe, npe, ppe, nppe = pipe.encode_prompt(
                prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
                negative_prompt=negative or None,
            )
        images: list[Any] = []
        for chunk, start in enumerate(range(0, len(seeds), MAX_BATCH)):
            part = seeds[start : start + MAX_BATCH]
            with stage("denoise"):
                latents = pipe(
                    prompt=None, face_embedding=emb, kps_image=kps_image, face_mask=mask,
                    height=height, width=width, num_inference_steps=request.steps, guidance_scale=request.guidance,
                    num_images=len(part), generator=self._generators(part),
                    identity_scale=request.identity_strength, adapter_scale=request.adapter_strength,
                    control_guidance_start=request.control_guidance_start, control_guidance_end=request.control_guidance_end,
                    negative_embedding_noise=request.negative_embedding_noise, extra_controls=extras,
                    prompt_embeds=pe, negative_prompt_embeds=npe if do_cfg else None,
                    pooled_prompt_embeds=ppe, negative_pooled_prompt_embeds=nppe if do_cfg else None,
                    on_step=self._step_reporter(notify, chunk), cancel=check, output_type="latent",
                ).images
            with stage("decode"):
                images.extend(decode_latents(pipe, latents))
        timings["steps_per_second"] = round(request.steps * len(range(0, len(seeds), MAX_BATCH)) / max(timings.get("denoise", 1e-9), 1e-9), 4)
        return images

    def instantid_controls(self, request: GenerationRequest, ident: Identity) -> tuple[int, int, Any, Any, Any]:
        """Output size, keypoint image, face-region mask and the photo extra controls come from.

        Keypoints come from ``pose_image``'s largest face when given, else from the reference;
        they are mapped onto the output by a centre-crop fit of their photo.
        """
        from faceanchor.face.kps import draw_kps

        kps, bbox, src_size, control_src = ident.kps, ident.bbox, ident.image_size, ident.image
        if request.pose_image is not None:
            an = self.analyzer(self.pack_for(request.method))
            pose_img = an.load(request.pose_image, name="pose_image")
            pose_faces = an.detect(pose_img)
            if not pose_faces:
                raise NoFaceError("no face found in pose_image (also tried other scales)")
            kps, bbox, src_size, control_src = pose_faces[0].kps, pose_faces[0].bbox, pose_img.size, pose_img
        if kps is None:
            raise InvalidInputError("InstantID needs face keypoints: give a face photo, face_kps or a pose_image")
        width, height = output_size(src_size, request.width, request.height, "sdxl")
        src_size = src_size or (width, height)
        kps_image = draw_kps((width, height), _map_points(kps, src_size, (width, height)))
        mask = None
        if request.enhance_face_region and bbox is not None:
            box = _map_points(np.asarray(bbox).reshape(2, 2), src_size, (width, height)).reshape(4)
            mask = face_region_mask(box, (width, height))
        if request.controlnet_selection and control_src is None:
            raise InvalidInputError("extra ControlNets need a photo (face_image or pose_image) to make their control images")
        return width, height, kps_image, mask, control_src

    def _control_image(self, name: str, image: Any) -> Any:
        from faceanchor import controls

        if name == "canny":
            return controls.canny_image(image)
        if name == "pose":
            return controls.pose_image(image)
        return controls.depth_image(image, self.settings)

    def _faceid_adapter(self, loaded: Any, request: GenerationRequest, family: str, id_dim: int) -> Any:
        from faceanchor.pipelines import loading

        fp = loaded.pipe
        key = (id(loaded), request.method, id_dim)
        if key in self._faceid_adapters:
            if fp.adapter is not self._faceid_adapters[key]:
                fp.use(self._faceid_adapters[key])
            return fp.adapter
        if self.weights == "real":
            path, name = loading.faceid_checkpoint(request.method, family, self.settings)
            adapter = fp.load(request.method, path)
            loaded.models[f"adapter_{request.method}"] = name
        else:
            adapter = fp.load(request.method, None, id_dim=id_dim, required_space=None, seed=self.seed + 5)
            loaded.models[f"adapter_{request.method}"] = f"{self.weights}:{request.method}({id_dim}-D)"
        self._faceid_adapters[key] = adapter
        return adapter

    def _run_faceid(self, request, loaded, ident: Identity, prompt, negative, seeds, family, stage, notify, check, timings) -> list[Any]:
        import torch

        fp = loaded.pipe
        if ident.embedding.ndim == 2 and request.method != "faceid-portrait":
            raise InvalidInputError(
                f"combine=concat keeps references as separate tokens, which {request.method} cannot take; "
                "use average or norm-average, or method instantid / faceid-portrait"
            )
        with stage("controls"):
            width, height = output_size(ident.image_size, request.width, request.height, family)
            self._faceid_adapter(loaded, request, family, int(ident.embedding.shape[-1]))
            crop = None
            if request.method in ("faceid-plus", "faceid-plusv2"):
                if ident.image is None or ident.kps is None:
                    raise InvalidInputError(f"{request.method} needs a face photo for its CLIP face crop")
                from faceanchor.face.align import clip_face_crop

                crop = clip_face_crop(ident.image, ident.kps)
        self._set_scheduler(loaded, request, fp.pipe)
        emb = torch.as_tensor(ident.embedding, dtype=torch.float32)
        images: list[Any] = []
        for chunk, start in enumerate(range(0, len(seeds), MAX_BATCH)):
            part = seeds[start : start + MAX_BATCH]
            inner: dict[str, float] = {}
            with stage("denoise"):
                latents = fp.generate(
                    emb, face_image=crop, prompt=prompt, negative_prompt=negative, num_images=len(part),
                    num_inference_steps=request.steps, guidance_scale=request.guidance, width=width, height=height,
                    generator=self._generators(part), scale=request.adapter_strength, s_scale=request.s_scale,
                    lora_scale=request.lora_scale, embedding_space=ident.space if self.weights == "real" else None,
                    on_step=self._step_reporter(notify, chunk), cancel=check, output_type="latent", timings=inner,
                )
            # the FaceID pipeline encodes its prompt inside: move that time to its own stage
            timings["denoise"] -= inner.get("prompt", 0.0)
            timings["prompt"] = timings.get("prompt", 0.0) + inner.get("prompt", 0.0)
            with stage("decode"):
                images.extend(decode_latents(fp.pipe, latents))
        return images


def models_used(models: dict[str, str], request: GenerationRequest) -> dict[str, str]:
    """The models of ``models`` (all loaded on a base so far) that ``request`` used."""
    out = {}
    for k, v in models.items():
        if k.startswith("controlnet_") and k[len("controlnet_"):] not in request.controlnet_selection:
            continue
        if k == "lcm_lora" and request.scheduler != "lcm":
            continue
        if k.startswith("adapter_") and k != f"adapter_{request.method}":
            continue
        out[k] = v
    return out


def decode_latents(pipe: Any, latents: Any) -> list[Any]:
    """VAE-decode latents to PIL images as the diffusers SD/SDXL pipelines do."""
    import torch

    if isinstance(latents, (list, tuple)):
        latents = torch.stack(list(latents))
    vae = pipe.vae
    with torch.no_grad():
        # as diffusers: the SDXL pipelines (which have ``upcast_vae``) decode an fp16 VAE in fp32
        # when its config says force_upcast; SD1.5 pipelines have no upcast and decode in fp16
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
    return pipe.image_processor.postprocess(image, output_type="pil")
