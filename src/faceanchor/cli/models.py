"""``faceanchor models list|verify|pull``: what each method needs, where it is looked for,
whether it is present, checksums, and downloads.

Only huggingface_hub (and hashlib) are imported, inside the commands.
"""

from __future__ import annotations

import json
from typing import List, Optional

import typer

METHOD_HELP = "Only what this method needs (`faceanchor methods` lists the methods)."
BASE_HELP = "Base family for methods with several (FaceID: sd15 default, or sdxl)."


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Model files: list what each method needs, verify checksums, pull from the hub.", no_args_is_help=True)
    models.command("list", help="Every model, what it is for, where it is looked for and whether it is present.")(list_command)
    models.command("verify", help="sha256 of each present file, checked against recorded sums.")(verify_command)
    models.command("pull", help="Download models (into the Hugging Face cache) when online.")(pull_command)
    app.add_typer(models, name="models")


def _settings(ctx: typer.Context):
    from faceanchor.config import load_settings

    root = ctx.find_root()
    return root.obj if root.obj is not None else load_settings()


def _users() -> dict[str, list[str]]:
    """Model name → the methods that use it (on any of their base families), from the method registry."""
    from faceanchor.methods.registry import methods

    out: dict[str, list[str]] = {}
    for m in methods():
        for fam in m.families:
            for n in m.model_names(fam):
                if m.name not in out.setdefault(n, []):
                    out[n].append(m.name)
    return out


def _select(names: list[str] | None, method: str | None, base: str | None, include_optional: bool = True):
    from faceanchor.methods.registry import get, model_registry
    from faceanchor.types import GenerationRequest

    reg = model_registry()
    if names:
        return [reg.get(n) for n in names]
    if method:
        m = get(method)
        family = m.family_for(GenerationRequest.model_construct(base=base)) if base is not None else m.families[0]
        specs = [reg.get(n) for n in m.model_names(family)]
        specs = [s for s in specs if include_optional or not s.optional]
        return sorted(specs, key=lambda s: s.optional)
    return [s for s in reg if include_optional or not s.optional]


def list_command(
    ctx: typer.Context,
    method: Optional[str] = typer.Option(None, "--method", help=METHOD_HELP),
    base: Optional[str] = typer.Option(None, "--base", help=BASE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    from faceanchor.models.resolve import find_model, missing_message, search_locations

    settings = _settings(ctx)
    rows = []
    users = _users()
    for spec in _select(None, method, base):
        found = find_model(spec, settings)
        status = "present" if found else ("optional" if spec.optional else "missing")
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "status": status,
                "present": found is not None,
                "optional": spec.optional,
                "methods": users.get(spec.name, []),
                "family": spec.family,
                "space": spec.space,
                "repo_id": spec.repo_id,
                "revision": spec.revision,
                "files": [{"path": f.path, "required": f.required, "sha256": f.sha256} for f in spec.files],
                "found_at": str(found.root) if found else None,
                "source": found.source if found else None,
                "looked_in": [{"kind": l.kind, "path": str(l.path)} for l in search_locations(spec, settings)],
                "how_to_get": None if found else missing_message(spec, settings),
                "description": spec.description,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        uses = ", ".join(r["methods"]) or "-"
        typer.echo(f"{r['name']:<{width}}  {r['kind']:<15} {r['status']:<8} {r['description']} [{uses}]")
        origin = r["repo_id"] or ("face_recognition_models package" if r["kind"] == "face_pack" and r["name"] == "dlib" else "manual")
        names = [f["path"] + ("" if f["required"] else " (optional)") for f in r["files"]]
        if len(names) > 6:
            names = names[:4] + [f"... {len(names)} files in all (--json lists them)"]
        typer.echo(f"{'':<{width}}  from {origin}: {', '.join(names)}")
        if r["found_at"]:
            typer.echo(f"{'':<{width}}  found ({r['source']}): {r['found_at']}")
        else:
            typer.echo(f"{'':<{width}}  looked in: {'; '.join(l['path'] for l in r['looked_in'])}")
    present = sum(r["present"] for r in rows)
    typer.echo(f"{present}/{len(rows)} present")


def verify_command(
    ctx: typer.Context,
    names: Optional[List[str]] = typer.Argument(None, help="Model names (default: every present model)."),
    method: Optional[str] = typer.Option(None, "--method", help=METHOD_HELP),
    base: Optional[str] = typer.Option(None, "--base", help=BASE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    from faceanchor.errors import CheckpointError, ModelNotFoundError
    from faceanchor.models.resolve import find_model, missing_message, verify_model

    settings = _settings(ctx)
    out = []
    mismatches = []
    for spec in _select(names, method, base):
        found = find_model(spec, settings)
        if found is None:
            if names:
                raise ModelNotFoundError(missing_message(spec, settings))
            continue
        checks = verify_model(found)
        mismatches += [(spec.name, c) for c in checks if c.status == "mismatch"]
        out.append({"name": spec.name, "root": str(found.root), "files": [
            {"file": c.name, "path": str(c.path) if c.path else None, "sha256": c.sha256, "expected": c.expected, "status": c.status}
            for c in checks
        ]})  # fmt: skip
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        if not out:
            typer.echo("no models present; `faceanchor models list` shows where they are looked for")
        for m in out:
            typer.echo(f"{m['name']}: {m['root']}")
            for f in m["files"]:
                typer.echo(f"  {f['status']:<16} {f['sha256'] or '-':<64}  {f['file']}")
    if mismatches:
        name, c = mismatches[0]
        raise CheckpointError(f"{len(mismatches)} file(s) failed verification; first: {name} {c.name} has sha256 {c.sha256}, expected {c.expected}")


def pull_command(
    ctx: typer.Context,
    names: Optional[List[str]] = typer.Argument(None, help="Model names (see `faceanchor models list`)."),
    method: Optional[str] = typer.Option(None, "--method", help="Pull everything this method needs. " + METHOD_HELP),
    base: Optional[str] = typer.Option(None, "--base", help=BASE_HELP),
    with_optional: bool = typer.Option(False, "--with-optional", help="With --method: also LCM-LoRA, extra ControlNets, depth."),
) -> None:
    from faceanchor.errors import InvalidInputError
    from faceanchor.models.resolve import find_model, pull_model

    if not names and not method:
        raise InvalidInputError("name the models to pull, or give --method; `faceanchor models list` shows them")
    settings = _settings(ctx)
    for spec in _select(names, method, base, include_optional=with_optional or bool(names)):
        have = find_model(spec, settings)
        if have is not None and have.source in ("local", "package"):
            typer.echo(f"{spec.name}: already present at {have.root}")
            continue
        got = pull_model(spec, settings)
        typer.echo(f"{spec.name}: {got.root}")
