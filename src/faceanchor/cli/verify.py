"""``faceanchor verify IMAGE``: read an output's invisible watermark and C2PA manifest back."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("verify", help="Read IMAGE's watermark (job id) and content credentials (C2PA).")(verify_command)


def verify_command(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help="A PNG, JPEG or WEBP image.", show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of lines."),
) -> None:
    from faceanchor.errors import InvalidInputError
    from faceanchor.imageio import ImageLimits
    from faceanchor.trust.verify import verify_image

    if not image.is_file():
        raise InvalidInputError(f"{image}: no such file")
    limits = ImageLimits.from_settings(ctx.obj) if ctx.obj is not None else ImageLimits()
    out = verify_image(image.read_bytes(), limits, name=str(image), settings=ctx.obj)
    if as_json:
        typer.echo(json.dumps(dict(image=str(image), **out), indent=2, default=str))
        return
    mark = out["watermark"]
    if mark["found"]:
        how = "" if mark["scale"] == 1.0 else f" (read at {mark['scale']:g}x: the image was shrunk)"
        typer.echo(f"watermark: job {mark['job_id_prefix']}…{how}")
    else:
        typer.echo("watermark: none found")
    cred = out["credentials"]
    if cred.get("found"):
        state = "INVALID" if not cred.get("valid") else "valid" if cred.get("trusted") else "valid (signer not on a trust list)"
        sig = cred.get("signature") or {}
        typer.echo(f"credentials: C2PA manifest, {state}, by {cred.get('claim_generator')}, "
                   f"signed by {sig.get('common_name')} ({sig.get('issuer')}, {sig.get('alg')})")
        for label, data in (cred.get("assertions") or {}).items():
            if label and label.startswith("faceanchor."):
                typer.echo(f"  {label}: {json.dumps(data, sort_keys=True)}")
    else:
        typer.echo("credentials: none" + (f" ({cred['reason']})" if cred.get("reason") else ""))
