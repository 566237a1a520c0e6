"""``faceanchor styles``: list the style presets."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("styles", help="List the style presets usable with --style.")(styles_command)


def styles_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON (name, prompt template, negative)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show each template and negative prompt."),
) -> None:
    from faceanchor.styles import load_styles

    styles = list(load_styles().values())
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in styles], indent=2, ensure_ascii=False))
        return
    for s in styles:
        typer.echo(s.name)
        if verbose:
            typer.echo(f"  prompt:   {s.prompt}")
            typer.echo(f"  negative: {s.negative or '-'}")
    typer.echo(f"{len(styles)} styles")
