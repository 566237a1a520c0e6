"""Readable types in ``--help``: TEXT, INTEGER, FLOAT, PATH, [a|b|c] instead of typer's ``<str>``,
``<int range>``, ``<list[str]>``; flags show no type.

:func:`readable_metavars` walks the built click command tree once, so every option of every
command (new ones included) gets a metavar from its annotation unless it names its own.
"""

from __future__ import annotations

import typing
from enum import Enum
from pathlib import Path
from typing import Any

#: Python type → the word ``--help`` shows.
TYPE_WORDS: dict[type, str] = {str: "TEXT", int: "INTEGER", float: "FLOAT", Path: "PATH", bool: "BOOLEAN"}


def type_word(param: Any) -> str | None:
    """The readable type of a typer parameter (None when typer gives no descriptor)."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None:
        return None
    if getattr(desc, "is_choice", False) and desc.choices:
        return "[" + "|".join(str(c.value if isinstance(c, Enum) else c) for c in desc.choices) + "]"
    ann = desc.annotation
    while typing.get_origin(ann) in (list, tuple, typing.Union):
        args = [a for a in typing.get_args(ann) if a is not type(None) and a is not Ellipsis]
        if not args:
            break
        ann = args[0]
    if isinstance(ann, type):
        for t, word in TYPE_WORDS.items():
            if issubclass(ann, t):
                return word
        return ann.__name__.upper()
    return None


def _readable(param: Any) -> None:
    if getattr(param, "metavar", None) is not None:
        return
    if getattr(param, "param_type_name", "") == "argument":
        word = type_word(param)
        param.metavar = param.name.upper()
        if word is not None:  # typer shows an argument's type apart from its name
            param.display_type_rich = lambda ctx, _w=word: _w  # noqa: ARG005
        return
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""  # a flag takes no value: no type to show
        return
    word = type_word(param)
    if word is not None:
        param.metavar = word


def readable_metavars(command: Any) -> Any:
    """Give every parameter of ``command`` and its subcommands a readable metavar; returns ``command``."""
    for param in getattr(command, "params", []):
        _readable(param)
    help_option = getattr(command, "get_help_option", None)
    if help_option is not None:
        ctx = command.context_class(command, info_name=command.name)
        opt = help_option(ctx)
        if opt is not None:
            _readable(opt)
    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)
    return command
