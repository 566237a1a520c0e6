"""``faceanchor character create|list|show|delete|id-photo|generate|edit``.

Characters live in the service database and file store under ``--home`` (the same ones
``faceanchor serve`` uses). Generation runs locally on an engine built from ``--weights``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from faceanchor.cli.generate import parse_box, weights_option, write_results


def _service(settings):  # noqa: ANN001, ANN202
    from faceanchor.service.characters import CharacterService
    from faceanchor.store.db import Database
    from faceanchor.store.files import FileStore

    return CharacterService(settings, Database.from_settings(settings), FileStore(Path(settings.data_dir) / "files"))


def _engine(settings, weights: Optional[str], face_pack: Optional[str]):  # noqa: ANN001, ANN202
    from faceanchor.engine import Engine
    from faceanchor.trust.finalise import Finisher

    Finisher.for_settings(settings)  # watermark package, signing key, safety model: checked before the work
    return Engine(settings, weights=weights, face_pack=face_pack)


def _fields(prompt: str, negative_prompt: str, style: str, steps: Optional[int], guidance: Optional[float], seed: int,
            samples: int, width: Optional[int], height: Optional[int], identity_strength: Optional[float], adapter_strength: float,
            scheduler: str, face_detail: bool, output_format: str) -> dict[str, Any]:
    out: dict[str, Any] = dict(prompt=prompt, negative_prompt=negative_prompt, style=style, seed=seed, samples=samples,
                               adapter_strength=adapter_strength, scheduler=scheduler,
                               face_detail=face_detail, output_format=output_format)
    for k, v in (("num_inference_steps", steps), ("guidance_scale", guidance), ("width", width), ("height", height),
                 ("identity_strength", identity_strength)):  # unset: the method's default (InstantID 0.8, InfiniteYou 1.0)
        if v is not None:
            out[k] = v
    return out


def register(app: typer.Typer) -> None:
    ch = typer.Typer(help="Characters: a stored identity anchor for generation, ID photos and edits.", no_args_is_help=True)

    @ch.command("create")
    def create(
        ctx: typer.Context,
        name: str = typer.Argument(..., help="The character's name."),
        face: List[str] = typer.Option(..., "--face", help="A face photo (repeat for up to 5 of one person)."),
        space: List[str] = typer.Option([], "--space", help="Embedding space to store (repeatable; default the engine's InstantID space)."),
        face_index: Optional[int] = typer.Option(None, "--face-index", help="Which face of the first photo (0 = largest)."),
        allow_different_people: bool = typer.Option(False, "--allow-different-people", help="Store photos of different people as one character on purpose (recorded)."),
        weights: Optional[str] = weights_option("real (default), dummy or tiny: decides the default space."),
        face_pack: Optional[str] = typer.Option(None, "--pack", help="Face pack (default: the method's; dlib for dummy/tiny)."),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Analyse the photo(s) once and store the character."""
        svc = _service(ctx.obj)
        engine = _engine(ctx.obj, weights, face_pack)
        c = svc.create(name, list(face), spaces=list(space) or None, engine=engine, face_index=face_index,
                       allow_different_people=allow_different_people)
        if as_json:
            typer.echo(json.dumps(c.to_dict(), default=str))
            return
        typer.echo(f"{c.id}  {c.name}  spaces={','.join(c.spaces)}  photos={len(c.photos)}")

    @ch.command("list")
    def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")) -> None:
        """List characters."""
        items = _service(ctx.obj).list(limit=500)
        if as_json:
            typer.echo(json.dumps([c.to_dict() for c in items], default=str))
            return
        for c in items:
            typer.echo(f"{c.id}  {c.name}  spaces={','.join(c.spaces)}  generations={c.generations}")

    @ch.command("show")
    def show(ctx: typer.Context, character_id: str = typer.Argument(...), history: bool = typer.Option(False, "--history")) -> None:
        """A character as JSON (with --history its generations)."""
        svc = _service(ctx.obj)
        d = svc.get(character_id).to_dict()
        if history:
            d["history"] = [h.to_dict() for h in svc.history(character_id)]
        typer.echo(json.dumps(d, indent=2, default=str))

    @ch.command("delete")
    def delete(ctx: typer.Context, character_id: str = typer.Argument(...)) -> None:
        """Delete a character, its history and its files."""
        gone = _service(ctx.obj).delete(character_id)
        typer.echo(f"deleted {character_id} ({len(gone)} files)")

    @ch.command("id-photo")
    def id_photo(
        ctx: typer.Context,
        character_id: Optional[str] = typer.Argument(None, help="A character (or give --face)."),
        face: Optional[str] = typer.Option(None, "--face", help="A face photo instead of a character."),
        prompt: str = typer.Option("", "--prompt", "-p", help="Added to the ID-photo prompt."),
        out: Path = typer.Option(Path("out"), "--out", "-o"),
        steps: Optional[int] = typer.Option(None, "--steps"),
        guidance: Optional[float] = typer.Option(None, "--guidance"),
        seed: int = typer.Option(-1, "--seed"),
        width: Optional[int] = typer.Option(None, "--width", help="Each view's width (default 896)."),
        height: Optional[int] = typer.Option(None, "--height", help="Each view's height (default 1152)."),
        scheduler: str = typer.Option("euler", "--scheduler"),
        weights: Optional[str] = weights_option(),
        face_pack: Optional[str] = typer.Option(None, "--pack"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """The 4-in-1 ID photo: front, left 45°, right 45°, smiling on one sheet (+ each view)."""
        svc = _service(ctx.obj)
        engine = _engine(ctx.obj, weights, face_pack)
        fields = _fields(prompt, "", "(No style)", steps, guidance, seed, 1, width, height, 0.8, 0.8, scheduler, False, "png")
        res = svc.id_photo(engine, fields, character_id=character_id, face=face)
        write_results(res, out, "idphoto", "png", as_json, ["sheet", "front", "left", "right", "smiling"], settings=ctx.obj)

    @ch.command("generate")
    def generate(
        ctx: typer.Context,
        character_ids: List[str] = typer.Argument(..., help="A character, or up to 4 in one picture (the first on the left)."),
        layout: Optional[str] = typer.Option(None, "--layout", help="Several characters: left-right (side by side, in order; needs --width/--height)."),
        box: List[str] = typer.Option([], "--box", metavar="X1,Y1,X2,Y2", help="Several characters: where each face goes, output pixels (one per ID)."),
        pose_image: Optional[str] = typer.Option(None, "--pose-image", help="Several characters: placed on this photo's faces, left to right."),
        prompt: str = typer.Option("", "--prompt", "-p"),
        out: Path = typer.Option(Path("out"), "--out", "-o"),
        negative_prompt: str = typer.Option("", "--negative-prompt", "-n"),
        style: str = typer.Option("(No style)", "--style"),
        steps: Optional[int] = typer.Option(None, "--steps"),
        guidance: Optional[float] = typer.Option(None, "--guidance"),
        seed: int = typer.Option(-1, "--seed"),
        samples: int = typer.Option(1, "--samples"),
        width: Optional[int] = typer.Option(None, "--width"),
        height: Optional[int] = typer.Option(None, "--height"),
        identity_strength: Optional[float] = typer.Option(None, "--identity-strength", help="IdentityNet / InfuseNet scale (default 0.8; infiniteyou 1.0)."),
        adapter_strength: float = typer.Option(0.8, "--adapter-strength"),
        scheduler: str = typer.Option("euler", "--scheduler"),
        face_detail: bool = typer.Option(False, "--face-detail", help="Re-render small faces at a higher resolution."),
        references: str = typer.Option("photos", "--references", help="photos, views (its ID-photo views) or all."),
        output_format: str = typer.Option("png", "--format"),
        weights: Optional[str] = weights_option(),
        face_pack: Optional[str] = typer.Option(None, "--pack"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Generate with the character's stored identity (no face analysis); with several IDs, all of
        them in one picture (--layout, --box or --pose-image), one identity score each."""
        from faceanchor.methods.regions import LAYOUTS

        if len(character_ids) > 4:
            raise typer.BadParameter(f"at most 4 characters in one picture, got {len(character_ids)}")
        if layout is not None and layout not in LAYOUTS:
            raise typer.BadParameter(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        boxes = [parse_box(b, "--box") for b in box]
        if boxes and len(boxes) != len(character_ids):
            raise typer.BadParameter(f"give one --box per character ({len(character_ids)} characters, {len(boxes)} boxes)")
        if sum(x is not None and x != [] for x in (layout, boxes, pose_image)) > 1:
            raise typer.BadParameter("place the characters one way: --layout, --box or --pose-image")
        several = len(character_ids) > 1 or boxes or layout or pose_image
        if several and not (layout or boxes or pose_image):
            raise typer.BadParameter("several characters need a place: --layout left-right, one --box each or --pose-image")
        svc = _service(ctx.obj)
        engine = _engine(ctx.obj, weights, face_pack)
        fields = _fields(prompt, negative_prompt, style, steps, guidance, seed, samples, width, height, identity_strength,
                         adapter_strength, scheduler, face_detail, output_format)
        if several:
            if pose_image is not None:
                fields["pose_image"] = pose_image
            people = [dict(character_id=cid, **({"box": boxes[i]} if boxes else {})) for i, cid in enumerate(character_ids)]
            res = svc.generate(engine, fields, people=people, layout=layout, references=references)
        else:
            res = svc.generate(engine, fields, character_id=character_ids[0], references=references)
        write_results(res, out, "character", output_format, as_json, settings=ctx.obj)

    @ch.command("edit")
    def edit(
        ctx: typer.Context,
        character_id: Optional[str] = typer.Argument(None, help="A character (or give --face)."),
        target: str = typer.Option(..., "--target", help="The picture to change."),
        prompt: str = typer.Option("", "--prompt", "-p", help="The change, e.g. 'on a beach at sunset'."),
        mode: str = typer.Option("background", "--mode", help="background (keep the person) or face (re-render the face)."),
        face: Optional[str] = typer.Option(None, "--face", help="A face photo instead of a character."),
        strength: Optional[float] = typer.Option(None, "--strength", help="Share of the schedule re-run (0-1]."),
        mask_source: str = typer.Option("auto", "--mask", help="auto, segmentation or face-box (background mode)."),
        out: Path = typer.Option(Path("out"), "--out", "-o"),
        steps: Optional[int] = typer.Option(None, "--steps"),
        seed: int = typer.Option(-1, "--seed"),
        weights: Optional[str] = weights_option(),
        face_pack: Optional[str] = typer.Option(None, "--pack"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Edit a picture keeping the character's face; pixels outside the edited region are unchanged."""
        svc = _service(ctx.obj)
        engine = _engine(ctx.obj, weights, face_pack)
        fields = _fields(prompt, "", "(No style)", steps, None, seed, 1, None, None, 0.8, 0.8, "euler", False, "png")
        res = svc.edit(engine, fields, target, mode=mode, character_id=character_id, face=face, strength=strength, mask_source=mask_source)
        write_results(res, out, f"edit-{mode}", "png", as_json, settings=ctx.obj)

    app.add_typer(ch, name="character")
