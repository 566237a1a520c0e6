"""``faceanchor methods``: the identity methods this install offers (the method registry)."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("methods")
    def methods_command(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """The methods: base families, embedding space and normalisation, the fields each takes."""
        from faceanchor.methods.registry import methods

        rows = [m.describe() for m in methods()]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        for r in rows:
            norm = "unit-length" if r["normalised_embedding"] else "raw"
            typer.echo(f"{r['name']:<24} /{r['app']:<10} {'/'.join(r['families']):<10} {r['embedding_space']} ({norm})  {r['label']}")
            if r["method_fields"]:
                typer.echo(f"{'':<24} fields: {', '.join(r['method_fields'])}")
