"""``faceanchor remote generate|health``: drive a faceanchor server elsewhere (a GPU box) with :mod:`faceanchor.client`.

Only the base install is needed (httpx). The server and key come from ``--server`` / ``--key``
or ``FACEANCHOR_SERVER`` / ``FACEANCHOR_API_KEY``. ``generate`` queues the job, shows its
progress on stderr, writes the images whole into ``--out`` and prints their paths; an error answer
of the server is one line and exit code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from faceanchor.errors import FaceAnchorError, InvalidInputError

_SERVER = typer.Option("http://127.0.0.1:8000", "--server", envvar="FACEANCHOR_SERVER", help="The faceanchor server's URL.")
_KEY = typer.Option(None, "--key", envvar="FACEANCHOR_API_KEY", help="An API key of that server (faceanchor keys create).")


class RemoteError(FaceAnchorError):
    """The server refused the call or could not be reached."""


def _client(server: str, key: Optional[str]):  # noqa: ANN202
    from faceanchor.client import Client

    if not server.startswith(("http://", "https://")):
        raise InvalidInputError(f"--server {server!r}: give an http(s) URL, e.g. http://127.0.0.1:8000")
    return Client(server.rstrip("/"), key)


def _refused(e: Exception) -> RemoteError:
    from faceanchor.client import FaceAnchorClientError

    if isinstance(e, FaceAnchorClientError) and e.status_code is not None:
        return RemoteError(f"the server answered {e.status_code} {e.type}: {e.message}")
    return RemoteError(str(e))


def register(app: typer.Typer) -> None:
    remote = typer.Typer(help="Use a faceanchor server elsewhere (e.g. a GPU box) from this machine.", no_args_is_help=True)

    @remote.command("health")
    def health(server: str = _SERVER, key: Optional[str] = _KEY) -> None:
        """The server's health as JSON (exit 1 unless it is ready or busy)."""
        from faceanchor.client import FaceAnchorClientError

        try:
            with _client(server, key) as fa:
                h = fa.health()
        except FaceAnchorClientError as e:
            raise _refused(e) from None
        typer.echo(json.dumps({"status": h.status, "workers": h.workers, "busy_workers": h.busy_workers,
                               "queue_depth": h.queue_depth, "error": h.error}))
        if h.status not in ("ready", "busy"):
            raise typer.Exit(1)

    @remote.command("generate")
    def generate(
        prompt: str = typer.Option(..., "--prompt", help="What to picture."),
        face: Optional[List[Path]] = typer.Option(None, "--face", help="Face photo(s) of one person (sent to the server)."),
        character: Optional[str] = typer.Option(None, "--character", help="A character stored on the server, instead of --face."),
        method: Optional[str] = typer.Option(None, "--method", help="A method the server runs (default instantid)."),
        style: Optional[str] = typer.Option(None, "--style", help="A style preset."),
        negative_prompt: Optional[str] = typer.Option(None, "--negative-prompt", help="What to avoid."),
        samples: int = typer.Option(1, "--samples", min=1, max=4, help="Images, 1-4."),
        seed: int = typer.Option(-1, "--seed", min=-1, help="-1: random."),
        steps: Optional[int] = typer.Option(None, "--steps", min=1, max=100, help="Denoising steps."),
        width: Optional[int] = typer.Option(None, "--width", min=64, max=2048, help="Output width."),
        height: Optional[int] = typer.Option(None, "--height", min=64, max=2048, help="Output height."),
        out: Path = typer.Option(Path("out"), "--out", help="Directory for the images."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress on stderr."),
        server: str = _SERVER,
        key: Optional[str] = _KEY,
    ) -> None:
        """Generate on the server: queue, follow the progress, download the images into --out."""
        from faceanchor.cli.generate import write_whole
        from faceanchor.client import FaceAnchorClientError

        if bool(face) == bool(character):
            raise InvalidInputError("give --face PHOTO or --character ID (one of them)")
        for p in face or []:
            if not p.is_file():
                raise InvalidInputError(f"--face {p}: no such file")
        fields = {k: v for k, v in dict(negative_prompt=negative_prompt, style=style, samples=samples, seed=seed,
                                        num_inference_steps=steps, width=width, height=height, method=method).items()
                  if v is not None}
        last: list[str] = []

        def show(status) -> None:  # noqa: ANN001
            p = status.progress
            line = status.status + (f" {p.stage} {p.step}/{p.total}" if p is not None and p.total else "")
            if not quiet and line not in last:
                last.append(line)
                typer.echo(line, err=True)

        try:
            with _client(server, key) as fa:
                if character:
                    app_name, args = "character/generate", dict(fields, prompt=prompt, character_id=character)
                else:
                    apps = {m.name: m.app for m in fa.methods().methods}
                    if (method or "instantid") not in apps:
                        raise InvalidInputError(f"--method {method!r}: the server runs {', '.join(sorted(apps))}")
                    photos = [p.read_bytes() for p in face or []]
                    app_name = apps[method or "instantid"]
                    args = dict(fields, prompt=prompt, face_image=photos[0], face_images=photos[1:] or None)
                result = fa.subscribe(app_name, args, on_queue_update=show)
                out.mkdir(parents=True, exist_ok=True)
                written = []
                for i, im in enumerate(result.images):
                    ext = {"image/jpeg": "jpg", "image/webp": "webp"}.get(im.content_type, "png")
                    path = out / f"faceanchor_{im.seed}_{i}.{ext}"
                    write_whole(path, fa.file(im))
                    written.append(path)
        except FaceAnchorClientError as e:
            raise _refused(e) from None
        except (FileNotFoundError, TypeError) as e:  # an image the client could not read
            raise InvalidInputError(str(e)) from None
        for path in written:
            typer.echo(str(path))

    app.add_typer(remote, name="remote")
