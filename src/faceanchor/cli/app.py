"""The ``faceanchor`` command line.

Each command group lives in its own module with a ``register(app)`` function. Settings are
built once in the callback and reach commands through ``ctx.obj``. Any
:class:`~faceanchor.errors.FaceAnchorError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from faceanchor.errors import FaceAnchorError


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="faceanchor",
        help="Identity-preserving image generation from one face photo.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def _root(
        ctx: typer.Context,
        home: Optional[str] = typer.Option(None, "--home", envvar="FACEANCHOR_HOME", help="Models, cache and data directory."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cuda, mps or cpu."),
        dtype: Optional[str] = typer.Option(None, "--dtype", help="auto, fp16, bf16 or fp32 (fp32 on CPU)."),
    ) -> None:
        from pydantic import ValidationError

        from faceanchor.config import load_settings

        try:
            ctx.obj = load_settings(home=home, device=device, dtype=dtype)
        except ValidationError as e:
            first = e.errors()[0]
            raise FaceAnchorError(f"bad setting {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    from faceanchor.cli import faces

    faces.register(app)

    from faceanchor.cli import generate

    generate.register(app)

    from faceanchor.cli import keys, serve

    keys.register(app)
    serve.register(app)

    from faceanchor.cli import methods, models, styles

    methods.register(app)
    models.register(app)
    styles.register(app)

    from faceanchor.cli import character

    character.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    app = build_app()
    try:
        app(args=argv, standalone_mode=False)
    except FaceAnchorError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.exceptions.ClickException):
            typer.echo(f"error: {e.format_message()}", err=True)
            sys.exit(2)
        if isinstance(e, click.exceptions.Exit):
            sys.exit(e.exit_code)
        raise
