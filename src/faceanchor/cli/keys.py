"""``faceanchor keys create|list|revoke``: API keys (stored hashed; shown once)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from faceanchor.errors import InvalidInputError


def _store(settings):  # noqa: ANN001, ANN202
    from faceanchor.store.db import Database
    from faceanchor.store.keys import KeyStore

    return KeyStore(Database.from_settings(settings))


def register(app: typer.Typer) -> None:
    keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

    @keys.command("create")
    def create(
        ctx: typer.Context,
        name: str = typer.Option("", "--name", help="A label for the key."),
        rate_limit: Optional[int] = typer.Option(None, "--rate-limit", min=0, help="Requests per minute (default: the server setting; 0: unlimited)."),
    ) -> None:
        """Create a key and print it (it is not shown again)."""
        key, info = _store(ctx.obj).create(name, rate_limit)
        typer.echo(key)
        typer.echo(f"id {info.id}: keep the key above; only its hash is stored", err=True)

    @keys.command("list")
    def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="JSON output.")) -> None:
        """List keys (ids and names, never the keys)."""
        infos = _store(ctx.obj).list()
        if as_json:
            typer.echo(json.dumps([i.to_dict() for i in infos], indent=2))
            return
        for i in infos:
            state = "revoked" if i.revoked else "active"
            limit = "" if i.rate_limit_per_minute is None else f" {i.rate_limit_per_minute}/min"
            typer.echo(f"{i.id}  {state:7}  {i.name}{limit}")

    @keys.command("revoke")
    def revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="The key's id (or the key itself).")) -> None:
        """Revoke a key; requests with it then get 403."""
        if not _store(ctx.obj).revoke(key_id):
            raise InvalidInputError(f"no key with id {key_id!r}")
        typer.echo(f"revoked {key_id}")

    app.add_typer(keys, name="keys")
