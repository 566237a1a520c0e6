"""``faceanchor generate``: one face photo + a prompt → images of the same person."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def method_option(default: str | None = None) -> typer.models.OptionInfo:
    """``--method`` with the registry's methods as its choices (read when the CLI is built)."""
    from faceanchor.methods.registry import names

    choices = names()

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            from faceanchor.methods.registry import get

            get(value)  # the registry's error: unknown method, close match, the list
        return value

    return typer.Option(default or choices[0], "--method", help=f"One of: {', '.join(choices)}.", callback=check)


def weights_choices() -> tuple[str, ...]:
    """The weights kinds the settings accept (``real``, ``dummy``, ``tiny``)."""
    import typing

    from faceanchor.config import Settings

    return tuple(typing.get_args(Settings.model_fields["weights"].annotation))


def weights_option(help: str = "real (default), dummy (full-size random) or tiny (tiny random, seconds on a CPU).") -> typer.models.OptionInfo:
    """``--weights`` with the settings' weights kinds as its choices (an unknown one: one line, exit 2)."""
    choices = weights_choices()

    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return typer.Option(None, "--weights", metavar="[" + "|".join(choices) + "]", help=help, callback=check)


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        ctx: typer.Context,
        face: List[str] = typer.Option([], "--face", help="Reference face photo (repeat for up to 5 of one person)."),
        prompt: str = typer.Option("", "--prompt", "-p", help="What to make."),
        out: Path = typer.Option(Path("out"), "--out", "-o", help="Directory for the images."),
        method: str = method_option(),
        negative_prompt: str = typer.Option("", "--negative-prompt", "-n"),
        style: str = typer.Option("(No style)", "--style", help="Style preset; `faceanchor styles` lists them."),
        steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps 1-100 (default 30; LCM 5)."),
        guidance: Optional[float] = typer.Option(None, "--guidance", help="CFG scale (default 5; LCM 1.5)."),
        seed: int = typer.Option(-1, "--seed", help="-1 = random; the used seed is printed."),
        samples: int = typer.Option(1, "--samples", help="Images to make, 1-4."),
        best_of: int = typer.Option(1, "--best-of", help="Make this many per sample, keep the best identity score."),
        width: Optional[int] = typer.Option(None, "--width"),
        height: Optional[int] = typer.Option(None, "--height"),
        identity_strength: Optional[float] = typer.Option(None, "--identity-strength", help="IdentityNet / InfuseNet scale (default 0.8; infiniteyou 1.0)."),
        adapter_strength: float = typer.Option(0.8, "--adapter-strength", help="IP-Adapter scale."),
        enhance_face_region: bool = typer.Option(True, "--enhance-face-region/--no-enhance-face-region"),
        controlnet: List[str] = typer.Option([], "--controlnet", help="Extra ControlNet: pose, canny or depth (repeatable)."),
        controlnet_scale: float = typer.Option(0.4, "--controlnet-scale"),
        pose_image: Optional[str] = typer.Option(None, "--pose-image", help="Take keypoints and pose from this photo."),
        control_start: float = typer.Option(0.0, "--control-start"),
        control_end: float = typer.Option(1.0, "--control-end"),
        negative_noise: float = typer.Option(0.0, "--negative-noise", help="Noise std on the negative identity embedding."),
        scheduler: str = typer.Option("euler", "--scheduler", help="euler, euler_a, dpmpp_2m, ddim, unipc; few-step with its LoRA: lcm, lightning (SDXL), hyper, tcd."),
        s_scale: float = typer.Option(1.0, "--s-scale", help="FaceID-PlusV2 face structure weight."),
        lora_scale: float = typer.Option(1.0, "--lora-scale", help="FaceID LoRA scale."),
        combine: str = typer.Option("average", "--combine", help="average, norm-average or concat for several faces."),
        face_index: Optional[int] = typer.Option(None, "--face-index", help="Which face (0 = largest)."),
        allow_different_people: bool = typer.Option(False, "--allow-different-people", help="Blend references of different people on purpose (recorded)."),
        base: Optional[str] = typer.Option(None, "--base", help="sd15 or sdxl (FaceID)."),
        model_name: Optional[str] = typer.Option(None, "--model", help="Base model: hub id, diffusers folder or .safetensors."),
        output_format: str = typer.Option("png", "--format", help="png, jpeg or webp."),
        prompt_weighting: str = typer.Option("plain", "--prompt-weighting", help="plain, or compel: (word:1.3) weights and prompts past 77 tokens."),
        adapter_model: Optional[str] = typer.Option(None, "--adapter-model", help="Identity adapter checkpoint: local file/folder or hub id."),
        identitynet_model: Optional[str] = typer.Option(None, "--identitynet-model", help="InstantID IdentityNet: local ControlNet folder or hub id."),
        weights: Optional[str] = weights_option(),
        face_pack: Optional[str] = typer.Option(None, "--pack", help="Face pack (default: the method's; dlib for dummy/tiny)."),
        as_json: bool = typer.Option(False, "--json", help="Print the result metadata as JSON."),
        face_box: List[str] = typer.Option([], "--face-box", metavar="X1,Y1,X2,Y2",
                                           help="Several people: where each --face goes in output pixels (one per --face; InstantID, FaceID, InfiniteYou)."),
        people: bool = typer.Option(False, "--people", help="Each --face is another person, placed on --pose-image's faces left to right."),
    ) -> None:
        """Generate images of the person in --face (or of several people: --face-box / --people)."""
        from pydantic import ValidationError
        from tqdm import tqdm

        from faceanchor.engine import Engine
        from faceanchor.errors import InvalidInputError
        from faceanchor.types import GenerationRequest

        settings = ctx.obj
        if not face:
            raise InvalidInputError("give a reference photo with --face PHOTO")
        boxes = [parse_box(b) for b in face_box]
        persons: list = []
        if boxes or people:
            from faceanchor.types import PlacedIdentity

            if boxes and len(boxes) != len(face):
                raise typer.BadParameter(f"give one --face-box per --face ({len(face)} faces, {len(boxes)} boxes)")
            if people and pose_image is None and not boxes:
                raise typer.BadParameter("--people places the faces on --pose-image's faces; give --pose-image (or --face-box)")
            persons = [PlacedIdentity(face_image=f, box=boxes[i + 1] if boxes else None) for i, f in enumerate(face[1:])]
        try:
            request = GenerationRequest(
                method=method, face_image=face[0], face_images=[] if persons or boxes or people else face[1:],
                face_box=boxes[0] if boxes else None, more_identities=persons, prompt=prompt, negative_prompt=negative_prompt,
                style=style, num_inference_steps=steps, guidance_scale=guidance, seed=seed, samples=samples, best_of=best_of,
                width=width, height=height, adapter_strength=adapter_strength,
                **({} if identity_strength is None else {"identity_strength": identity_strength}),
                enhance_face_region=enhance_face_region, controlnet_selection=controlnet,
                controlnet_conditioning_scale=controlnet_scale, pose_image=pose_image, control_guidance_start=control_start,
                control_guidance_end=control_end, negative_embedding_noise=negative_noise, scheduler=scheduler,
                s_scale=s_scale, lora_scale=lora_scale, combine=combine, face_index=face_index, allow_different_people=allow_different_people, base=base,
                model_name=model_name, output_format=output_format, prompt_weighting=prompt_weighting,
                adapter_model=adapter_model, identitynet_model=identitynet_model,
            )
        except ValidationError as e:
            raise InvalidInputError(validation_message(e)) from None
        from faceanchor.trust.finalise import Finisher

        Finisher.for_settings(settings)  # watermark package, signing key, safety model: checked before the work
        engine = Engine(settings, weights=weights, face_pack=face_pack)
        total = request.steps * -(-request.samples * request.best_of // 4)
        bars: list = []  # opened at the first denoising step, so early errors stay one line

        def progress(ev) -> None:
            if ev.stage != "denoise" or not ev.total or as_json:
                return
            if not bars:
                bars.append(tqdm(total=total, desc="generating", unit="step"))
            bars[0].update(1)

        try:
            result = engine.generate(request, on_progress=progress)
        finally:
            for b in bars:
                b.close()
        write_results(result, out, "faceanchor", request.output_format, as_json, settings=settings)
        if as_json:
            return
        t = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items() if k not in ("steps_per_second", "peak_gpu_mb"))
        typer.echo(f"timings: {t}")
        for w in result.warnings:
            typer.echo(f"warning: {w}", err=True)


def write_results(result, out: Path, stem: str, fmt: str, as_json: bool, names: list[str] | None = None, settings=None) -> list[str]:  # noqa: ANN001
    """Write every image of ``result`` with its metadata into ``out``; print paths, or JSON."""
    from faceanchor.imageio import encode_image
    from faceanchor.trust.finalise import Finisher, job_scope, new_job_id

    out.mkdir(parents=True, exist_ok=True)
    finisher = Finisher.for_settings(settings)
    meta = result.metadata()
    ext = "jpg" if fmt == "jpeg" else fmt
    paths = []
    run_id = new_job_id()
    for i, im in enumerate(result.images):
        path = out / f"{stem}_{im.seed}_{names[i] if names else i}.{ext}"
        with job_scope(run_id):  # one id for this run's outputs (the CLI has no job)
            image, trust = finisher.prepare(im.image)
        item = dict(meta, seed=im.seed, identity_score=im.identity_score, identity_reason=im.identity_reason, index=i, trust=trust)
        write_whole(path, finisher.seal(encode_image(image, fmt, item), fmt, trust, item))
        paths.append(str(path))
    if as_json:
        typer.echo(json.dumps(dict(meta, files=paths), default=str))
        return paths
    for p, im in zip(paths, result.images):
        score = f"{im.identity_score:.3f}" if im.identity_score is not None else f"n/a ({im.identity_reason})"
        people = "" if im.identity_scores is None else "  per_person=" + ",".join("n/a" if v is None else f"{v:.3f}" for v in im.identity_scores)
        typer.echo(f"{p}  seed={im.seed}  identity={score}{people}")
    return paths


def write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` all or nothing: a temporary file renamed into place, removed again
    when interrupted (Ctrl-C), so a file that exists is complete."""
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def parse_box(text: str, option: str = "--face-box") -> list[float]:
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise typer.BadParameter(f"{option} {text!r}: give x1,y1,x2,y2 with x1 < x2 and y1 < y2 (output pixels)")
    return box


def validation_message(e) -> str:
    """One line from a pydantic ValidationError: the first field and what is wrong with it."""
    first = e.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or "request"
    return f"{loc}: {first.get('msg', 'invalid value')}"
