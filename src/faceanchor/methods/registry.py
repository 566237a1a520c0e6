"""The one list of methods: built-in method files, installed plug-ins, and ones registered at run time.

Every module of :mod:`faceanchor.methods` that defines ``METHODS`` (a tuple of
:class:`~faceanchor.methods.contract.Method` objects) is a built-in; packages may add methods
through the ``faceanchor.methods`` entry-point group (each entry point loads a Method object or
a tuple of them); :func:`register` adds one at run time (tests, notebooks). Discovery happens at
the first lookup, never at import time. ``types``, the API's apps, the worker, the CLI's choices
and help, ``faceanchor models list`` and the web page (``GET /v1/methods``) all read this list.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Iterable

from faceanchor.errors import InvalidInputError
from faceanchor.methods.contract import Method

_NOT_METHODS = {"contract", "registry"}
_lock = threading.RLock()
_methods: dict[str, Method] | None = None
_extra: dict[str, Method] = {}


def _discover() -> dict[str, Method]:
    import faceanchor.methods as pkg

    found: dict[str, Method] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name in _NOT_METHODS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        for m in getattr(module, "METHODS", ()):
            found[m.name] = m
    from importlib.metadata import entry_points

    for ep in entry_points(group="faceanchor.methods"):
        obj = ep.load()
        for m in obj if isinstance(obj, (tuple, list)) else (obj,):
            found[m.name] = m
    return found


def _all() -> dict[str, Method]:
    global _methods
    with _lock:
        if _methods is None:
            _methods = _discover()
        merged = {**_methods, **_extra}
        ranked = sorted(enumerate(merged.values()), key=lambda im: (getattr(im[1], "order", 100), im[0]))
        return {m.name: m for _, m in ranked}


def register(method: Method) -> Method:
    """Add (or replace) a method at run time; returns it (usable as a decorator on an instance)."""
    if not getattr(method, "name", None) or not getattr(method, "app", None):
        raise InvalidInputError("a method needs a name and an app")
    with _lock:
        _extra[method.name] = method
    return method


def unregister(name: str) -> None:
    with _lock:
        _extra.pop(name, None)


def get(name: str) -> Method:
    """The method called ``name``; a clear error naming the known ones (and a close match)."""
    methods = _all()
    try:
        return methods[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(str(name), list(methods), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise InvalidInputError(f"unknown method {name!r}{hint}; use one of: {', '.join(methods)}") from None


def names() -> list[str]:
    return list(_all())


def methods() -> list[Method]:
    return list(_all().values())


def apps() -> dict[str, tuple[str, ...]]:
    """HTTP app name → the methods it serves (the first is the app's default)."""
    out: dict[str, list[str]] = {}
    for m in _all().values():
        out.setdefault(m.app, []).append(m.name)
    return {k: tuple(v) for k, v in out.items()}


def model_registry(extra: Iterable[object] = ()):
    """The model registry with every method's own ModelSpecs merged in."""
    from faceanchor.models.registry import default_registry

    specs = [s for m in _all().values() for s in m.model_specs()]
    return default_registry().with_extra([*specs, *extra])
