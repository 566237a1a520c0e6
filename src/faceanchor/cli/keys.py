"""``faceanchor keys create|list|revoke|usage``: API keys (stored hashed; shown once), admin and tenant keys, usage."""

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
        admin: bool = typer.Option(False, "--admin", help="An admin key: sees every tenant's jobs, files and characters and manages keys."),
        tenant: Optional[str] = typer.Option(None, "--tenant", help="Keys of one tenant share their jobs, files and characters."),
        per_day: Optional[int] = typer.Option(None, "--images-per-day", min=0, help="Images per UTC day (default: the server setting; 0: unlimited)."),
        per_month: Optional[int] = typer.Option(None, "--images-per-month", min=0, help="Images per UTC month (default: the server setting; 0: unlimited)."),
    ) -> None:
        """Create a key and print it (it is not shown again)."""
        try:
            key, info = _store(ctx.obj).create(name, rate_limit, admin=admin, tenant=tenant, images_per_day=per_day,
                                               images_per_month=per_month)
        except ValueError as e:
            raise InvalidInputError(str(e)) from None
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
            extra = (" admin" if i.admin else "") + (f" tenant={i.tenant}" if i.tenant else "")
            typer.echo(f"{i.id}  {state:7}  {i.name}{limit}{extra}")

    @keys.command("revoke")
    def revoke(ctx: typer.Context, key_id: str = typer.Argument(..., help="The key's id (or the key itself).")) -> None:
        """Revoke a key; requests with it then get 403."""
        if not _store(ctx.obj).revoke(key_id):
            raise InvalidInputError(f"no key with id {key_id!r}")
        typer.echo(f"revoked {key_id}")

    @keys.command("usage")
    def usage_(ctx: typer.Context, key_id: Optional[str] = typer.Argument(None, help="One key's id (default: every key)."),
               as_json: bool = typer.Option(False, "--json", help="JSON output.")) -> None:
        """Images used this UTC day and month per key, with the limits."""
        from faceanchor.service import quotas
        from faceanchor.store.jobs import JobStore

        store = _store(ctx.obj)
        infos = store.list() if key_id is None else [store.get(key_id)]
        if infos and infos[0] is None:
            raise InvalidInputError(f"no key with id {key_id!r}")
        jobs = JobStore(store.db)
        rows = [quotas.usage(jobs, i, ctx.obj) for i in infos]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return

        def fmt(p: dict) -> str:
            return f"{p['images']}/{p['limit'] if p['limit'] is not None else 'unlimited'}"

        for r in rows:
            typer.echo(f"{r['key_id']}  day {fmt(r['day'])}  month {fmt(r['month'])}  {r['name']}")

    app.add_typer(keys, name="keys")
