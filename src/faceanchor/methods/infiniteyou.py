"""InfiniteYou on FLUX.1 (bytedance/InfiniteYou): identity tokens drive InfuseNet, whose residuals
go into the FLUX transformer; the text goes to the transformer alone.

Face: the largest face (SCRFD of antelopev2, retried at 640 → 320 → 160), aligned 112 px on the BGR
photo, embedded by facexlib's ArcFace (unit length): the ``facexlib`` space. Projection: the
Resampler of ``image_proj_model.bin`` (8 tokens × 4096). InfuseNet scale: ``identity_strength``
(default **1.0** for this method, as the official ``infusenet_conditioning_scale``); its window:
``control_guidance_start`` / ``control_guidance_end``. Control image: the keypoints of
``pose_image``'s largest face after the photo is resized and padded to the output size, drawn on
black; black without one. Defaults as the official ``test.py``: guidance 3.5 (FLUX.1-dev's
distilled guidance), 30 steps, 864 × 1152. ``adapter_model``: the model version ``aes_stage2``
(default) or ``sim_stage1``, or a folder / hub id holding it; ``model_name``: the FLUX base
(FLUX.1-dev by default; a FLUX.1-dev fine-tune or FLUX.1-schnell, which the official README says
the weights plug into — schnell: 4 steps).

Several people (up to 4, ``face_box`` + ``more_identities``): one InfuseNet pass per person with
its own identity tokens and control image, its residuals weighted by its region in FLUX's
packed-latent token space and summed (:mod:`faceanchor.pipelines.infiniteyou_flux`); its scale
is its own ``identity_strength`` (default: the request's InfuseNet scale). A person goes where
its ``box`` says (control image black, as InfiniteYou without a pose photo) or, with
``pose_image``, onto the pose photo's faces (resized and padded to the output) taken left to
right (``pose_index`` picks another): that face's keypoints alone are drawn for it and its face
box is its region. Regions are feathered inwards a few pixels when several people act; they
must not overlap.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from faceanchor.errors import InvalidInputError, NoFaceError
from faceanchor.methods.contract import Loaded, Method, RunContext
from faceanchor.types import GenerationRequest

MAX_BATCH = 2
REPO = "ByteDance/InfiniteYou"
FLUX_DEV = "black-forest-labs/FLUX.1-dev"
VARIANTS = ("aes_stage2", "sim_stage1")
DEFAULT_SIZE = (864, 1152)
DEFAULT_GUIDANCE = 3.5
DEFAULT_SCALE = 1.0
GRID = 16  # FLUX: VAE factor 8 × 2×2 packing


def _flux_files() -> tuple[Any, ...]:
    from faceanchor.models.registry import ModelFile

    files = [ModelFile("model_index.json"), ModelFile("scheduler/scheduler_config.json")]
    for folder in ("transformer", "vae"):
        files.append(ModelFile(f"{folder}/config.json"))
    for folder in ("text_encoder", "text_encoder_2"):
        files.append(ModelFile(f"{folder}/config.json"))
    files += [ModelFile("tokenizer/vocab.json"), ModelFile("tokenizer/merges.txt"), ModelFile("tokenizer_2/tokenizer_config.json")]
    return tuple(files)


def _variant_files(variant: str) -> tuple[Any, ...]:
    from faceanchor.models.registry import ModelFile

    d = f"infu_flux_v1.0/{variant}"
    return (ModelFile(f"{d}/InfuseNetModel/config.json"),
            ModelFile(f"{d}/InfuseNetModel/diffusion_pytorch_model.safetensors", alternatives=(f"{d}/InfuseNetModel/diffusion_pytorch_model.safetensors.index.json",)),
            ModelFile(f"{d}/image_proj_model.bin"))


class InfiniteYou(Method):
    name = "infiniteyou"
    app = "infiniteyou"
    label = "InfiniteYou (FLUX)"
    description = "InfuseNet fed identity tokens steers FLUX.1-dev; best published identity with text fidelity (InfiniteYou paper, Table 1)."
    families = ("flux",)
    space = "facexlib"
    normalised = True
    fields = frozenset({"identity_strength", "pose_image", "control_guidance_start", "control_guidance_end", "face_box", "more_identities"})
    max_identities = 4
    max_references = 5
    concat_references = False
    order = 20

    def model_names(self, family: str | None = None) -> tuple[str, ...]:
        return ("facexlib", "antelopev2", "flux1-dev-base", "infiniteyou-aes_stage2", "infiniteyou-sim_stage1")

    def model_specs(self) -> tuple[Any, ...]:
        from faceanchor.models.registry import ModelFile, ModelSpec

        return (
            ModelSpec(name="flux1-dev-base", kind="base", repo_id=FLUX_DEV, files=_flux_files(), family="flux",
                      description="FLUX.1-dev (diffusers layout; gated: accept the licence on the hub and log in)"),
            *(ModelSpec(name=f"infiniteyou-{v}", kind="controlnet", repo_id=REPO, files=_variant_files(v), family="flux", space="facexlib",
                        optional=v != "aes_stage2",
                        description=f"InfiniteYou-FLUX v1.0 {v}: InfuseNetModel + image_proj_model.bin (CC BY-NC 4.0)") for v in VARIANTS),
            ModelSpec(name="facexlib", kind="face_pack", files=(ModelFile("recognition_arcface_ir_se50.pth"),), space="facexlib",
                      description="facexlib's ArcFace IR-SE50 (github.com/xinntao/facexlib release v0.1.0); detects with antelopev2's SCRFD"),
        )

    def check_fields(self, request: GenerationRequest) -> None:
        """Also refuse, before anything loads, what FLUX.1 here cannot take."""
        super().check_fields(request)
        if request.scheduler != "euler":
            raise InvalidInputError("infiniteyou samples with FLUX's flow-matching Euler scheduler; leave scheduler unset")
        if request.negative_prompt:
            raise InvalidInputError("infiniteyou (guidance-distilled FLUX.1) takes no negative_prompt; leave it empty")
        if request.combine == "concat":
            raise InvalidInputError("infiniteyou takes one identity embedding; combine references with average or norm-average")

    def _spec(self, name: str) -> Any:
        return next(s for s in self.model_specs() if s.name == name)

    def variant(self, request: GenerationRequest) -> tuple[str, str | None]:
        """``(model version, where from)``: ``adapter_model`` names a version, or a folder / hub id (aes_stage2 in it)."""
        ref = request.adapter_model
        if ref in VARIANTS:
            return ref, None
        return "aes_stage2", ref

    def cache_key(self, family: str, request: GenerationRequest, id_dim: int, loader: Any) -> tuple[Any, ...]:
        key = super().cache_key(family, request, id_dim, loader)
        return (*key, self.variant(request), request.model_name if "schnell" in str(request.model_name or "").lower() else None)

    def load(self, loader: Any, family: str, request: GenerationRequest, id_dim: int) -> Loaded:
        import diffusers

        from faceanchor.pipelines.infiniteyou_flux import InfiniteYouFluxPipeline

        comps, models = loader.flux_components(self._spec("flux1-dev-base"), request.model_name)
        variant, ref = self.variant(request)
        net, proj, models["infusenet"] = loader.infiniteyou(self._spec(f"infiniteyou-{variant}"), variant, id_dim, ref)
        base = diffusers.FluxPipeline(**{k: comps[k] for k in ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "scheduler")})
        base.set_progress_bar_config(disable=True)
        return Loaded("flux", InfiniteYouFluxPipeline(base, net, proj), models, comps["scheduler"].config)

    # ------------------------------------------------------------------ request facts

    def asked_size(self, request: GenerationRequest, loader: Any) -> tuple[int, int]:
        """The size asked for (before the working-size cap and grid rounding): the request's, the
        other side following the default aspect, else the default (the tiny weights' native size)."""
        native = loader.default_size("flux")
        dw, dh = (native, native) if native else DEFAULT_SIZE
        if request.width is None and request.height is None:
            return dw, dh
        return request.width or int(round(request.height * dw / dh)), request.height or int(round(request.width * dh / dw))

    def size(self, request: GenerationRequest, loader: Any, settings: Any) -> tuple[int, int]:
        from faceanchor.methods.sizing import cap_size

        w, h = self.asked_size(request, loader)
        return cap_size(w, h, self.work_pixels("flux", settings, loader), GRID)

    def _control(self, request: GenerationRequest, tools: Any, width: int, height: int) -> Any:
        from faceanchor.pipelines.infiniteyou_flux import control_image, resize_and_pad

        if request.pose_image is None:
            return control_image(width, height)
        an = tools.analyzer(tools.pack())
        padded = resize_and_pad(an.load(request.pose_image, name="pose_image"), (width, height))
        faces = an.detect(padded)  # largest first
        if not faces:
            raise NoFaceError("no face found in pose_image (resized and padded to the output size; also tried other scales)")
        return control_image(width, height, np.asarray(faces[0].kps))

    def placements(self, request: GenerationRequest, more: list, tools: Any, width: int, height: int,
                   scale: float) -> list[tuple[list[float], Any, Any, float]]:
        """``(box, control image or None for black, region mask, InfuseNet scale)`` per person
        (request order; the request's own face first). Boxes are in the pixels asked for (they
        follow the working-size cap); without one a person takes a face of ``pose_image`` (left to
        right, or ``pose_index``). Regions are feathered inwards when several people act."""
        from faceanchor.methods.regions import box_mask, check_no_overlap, clip_box, fit_box
        from faceanchor.pipelines.infiniteyou_flux import control_image, resize_and_pad

        people = [(request.face_box, None, scale)] + [
            (p.box, p.pose_index, scale if p.identity_strength is None else float(p.identity_strength)) for _, p in more]
        faces = None
        if request.pose_image is not None:
            if all(box is not None for box, _, _ in people):
                raise InvalidInputError("pose_image places the people without a box, and every person here has one; leave pose_image out")
            an = tools.analyzer(tools.pack())
            padded = resize_and_pad(an.load(request.pose_image, name="pose_image"), (width, height))
            faces = sorted(an.detect(padded), key=lambda f: f.bbox[0] + f.bbox[2])  # left to right
        asked = self.asked_size(request, tools.loader)
        placed = []
        for j, (box, pose_index, s) in enumerate(people, start=1):
            if box is not None:
                placed.append((clip_box(fit_box(box, asked, width, height), width, height, j), None, s))
            elif faces is not None:
                k = (j - 1) if pose_index is None else pose_index
                if k >= len(faces):
                    raise NoFaceError(f"pose_image has {len(faces)} face(s) (resized and padded to the output); person {j} needs face {k + 1} (left to right)")
                f = faces[k]
                placed.append((clip_box(np.asarray(f.bbox, np.float64), width, height, j), control_image(width, height, np.asarray(f.kps)), s))
            else:
                raise InvalidInputError(f"with several people each needs a place: give person {j} a box (face_box for the first) or a pose_image")
        check_no_overlap([b for b, _, _ in placed])
        feather = any(s != 0.0 for _, _, s in placed[1:])  # as InstantID: feathered once a second person acts
        return [([float(v) for v in b], c, box_mask(b, width, height, feather), s) for b, c, s in placed]

    def settings_for(self, request: GenerationRequest, schnell: bool = False) -> tuple[int, float, float]:
        """``(steps, guidance, InfuseNet scale)``: the request's, else the official defaults (30 / 3.5 / 1.0;
        FLUX.1-schnell 4 steps)."""
        steps = request.num_inference_steps or (4 if schnell else request.steps)
        guidance = request.guidance_scale if request.guidance_scale is not None else DEFAULT_GUIDANCE
        scale = request.identity_strength if "identity_strength" in request.model_fields_set else DEFAULT_SCALE
        return steps, guidance, scale

    def effective_params(self, request: GenerationRequest) -> dict[str, Any]:
        steps, guidance, scale = self.settings_for(request, "schnell" in str(request.model_name or "").lower())
        return {"num_inference_steps": steps, "guidance_scale": guidance, "identity_strength": scale}

    def run(self, loaded: Loaded, ctx: RunContext) -> list[Any]:
        import torch

        request, ident, tools = ctx.request, ctx.identity, ctx.tools
        pipe = loaded.pipe
        if ident.embedding.ndim == 2:
            raise InvalidInputError("infiniteyou takes one identity embedding; combine references with average or norm-average")
        schnell = "schnell" in str(request.model_name or "").lower() or not pipe.base.transformer.config.guidance_embeds
        steps, guidance, scale = self.settings_for(request, schnell)
        region, more = None, []
        with ctx.stage("controls"):
            width, height = self.size(request, tools.loader, tools.settings)
            tokens = pipe.identity_tokens(ident.embedding)
            if ctx.more or request.face_box is not None:
                from faceanchor.pipelines.infiniteyou_flux import RegionIdentity

                placed = self.placements(request, ctx.more, tools, width, height, scale)
                ctx.regions = [box for box, _, _, _ in placed]
                _, control, region, _ = placed[0]
                for (person, _), (_, c, m, s) in zip(ctx.more, placed[1:]):
                    if person.embedding.ndim == 2:
                        raise InvalidInputError("infiniteyou takes one identity embedding per person; combine references with average or norm-average")
                    if s != 0.0:  # a person at strength 0 adds nothing: left out
                        more.append(RegionIdentity(pipe.identity_tokens(person.embedding), c, m, s))
            else:
                control = self._control(request, tools, width, height)
        seq = 512 if tools.loader.kind != "tiny" else 32
        if schnell:
            seq = min(seq, 256)  # schnell's T5 length
        images: list[Any] = []
        for chunk, start in enumerate(range(0, len(ctx.seeds), MAX_BATCH)):
            part = ctx.seeds[start : start + MAX_BATCH]
            device = pipe.device
            with ctx.stage("denoise"):
                latents = pipe.generate(
                    tokens, prompt=ctx.prompt, control=control, width=width, height=height, num_images=len(part),
                    num_inference_steps=steps, guidance_scale=guidance, conditioning_scale=scale,
                    guidance_start=request.control_guidance_start, guidance_end=request.control_guidance_end,
                    generator=tools.generators(part), control_generator=torch.Generator(device=device.type).manual_seed(int(part[0])),
                    max_sequence_length=seq, callback_on_step_end=ctx.step_callback(chunk), output_type="latent",
                    region=region, more_identities=more,
                )
            with ctx.stage("decode"):
                images.extend(pipe.decode(latents, width, height))
        ctx.timings["steps_per_second"] = round(steps * len(ctx.seeds[::MAX_BATCH]) / max(ctx.timings.get("denoise", 1e-9), 1e-9), 4)
        return images


METHODS = (InfiniteYou(),)
