"""The ``faceanchor`` command line.

Each command group lives in its own module with a ``register(app)`` function. Settings are
built once in the callback and reach commands through ``ctx.obj``. Any
:class:`~faceanchor.errors.FaceAnchorError`, every usage error (unknown command or option, bad or
missing value) and a missing optional extra become one line on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import importlib
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
        quantize: Optional[str] = typer.Option(None, "--quantize", help="FLUX weights: none or 8bit (optimum-quanto qint8 transformer, T5, InfuseNet)."),
    ) -> None:
        from pydantic import ValidationError

        from faceanchor.config import load_settings

        try:
            ctx.obj = load_settings(home=home, device=device, dtype=dtype, flux_quantize=quantize)
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

    from faceanchor.cli import mcp, remote

    mcp.register(app)
    remote.register(app)

    from faceanchor.cli import verify

    verify.register(app)
    return app


def build_command():  # noqa: ANN201
    """The click command of :func:`build_app`, with readable types in ``--help``."""
    import typer.main

    from faceanchor.cli.metavars import readable_metavars

    return readable_metavars(typer.main.get_command(build_app()))


def usage_error_types() -> tuple[type, ...]:
    """The exception bases click raises for usage errors: typer's vendored click (typer >= 0.29)
    and the click package (older typer), whichever are importable."""
    found: list[type] = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        cls = getattr(module, "ClickException", None)
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def command_path(command, args: list[str]) -> str:  # noqa: ANN001
    """``faceanchor character create``: the (sub)commands named in ``args``."""
    names = ["faceanchor"]
    for tok in args:
        sub = getattr(command, "commands", {}).get(tok)
        if sub is not None:
            names.append(tok)
            command = sub
    return " ".join(names)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _interrupt_twice_to_exit():  # noqa: ANN202 - returns the handler to restore
    """Ctrl-C stops the command (KeyboardInterrupt: partial files are removed, ``interrupted``, exit
    130); a second Ctrl-C while it winds down ends the process at once (the default SIGINT action)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def first(signum, frame):  # noqa: ANN001, ANN202
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    if before is not signal.default_int_handler:
        return None
    signal.signal(signal.SIGINT, first)
    return before


def main(argv: list[str] | None = None) -> None:
    """The ``faceanchor`` entry point: errors are one line on stderr and exit code 2."""
    import signal

    before = _interrupt_twice_to_exit()
    try:
        _main(argv)
    finally:
        if before is not None:
            signal.signal(signal.SIGINT, before)


def _main(argv: list[str] | None) -> None:
    from faceanchor.cli.extras import install_hint

    args = list(sys.argv[1:] if argv is None else argv)
    command = build_command()
    usage_errors = usage_error_types()
    try:
        rv = command.main(args=args, prog_name="faceanchor", standalone_mode=False)
    except FaceAnchorError as e:
        typer.echo(f"error: {one_line(e)}", err=True)
        sys.exit(2)
    except typer.Abort as e:  # click turns a Ctrl-C inside a command into Abort
        typer.echo("interrupted" if isinstance(e.__cause__, KeyboardInterrupt) else "aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except ModuleNotFoundError as e:
        hint = install_hint(e, command_path(command, args))
        if hint is None:
            raise
        typer.echo(f"error: {hint}", err=True)
        sys.exit(2)
    except usage_errors as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a group named without its subcommand: its help
            if e.format_message().strip():  # (typer's rich help is printed already, on stdout)
                typer.echo(e.format_message(), err=True)
            sys.exit(2)
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None and getattr(e, "exit_code", 1) == 2 else ""
        typer.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
        sys.exit(2)
    if isinstance(rv, int) and not isinstance(rv, bool):  # click's Exit (--help: 0; Ctrl-C in a command: 130)
        if rv == 130:
            typer.echo("interrupted", err=True)
        sys.exit(rv)
