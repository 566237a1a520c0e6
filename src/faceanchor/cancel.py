"""Cancellation that lands within a second at any stage.

A caller (the queue worker, the engine given a ``cancel`` callable) opens a :func:`scope` with
its cancel check; code at every stage calls :func:`checkpoint` between its small units of work
(face detection scales, references, scored images, encoded images) and torch modules check it
before every layer (:func:`faceanchor.pipelines.callbacks.cancellable`), so prompt encoding,
every denoising step and VAE encode/decode stop between two layers. A checkpoint that finds the
check true raises :class:`~faceanchor.errors.Cancelled` (its ``reason`` says why: a cancel, or
a time limit). The scope lives in a context variable: the thread that opened it sees it, others
do not. Scopes nest: the inner check and every outer one are asked.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Callable, Iterator

from faceanchor.errors import Cancelled

CancelCheck = Callable[[], bool]

_checks: contextvars.ContextVar[tuple[CancelCheck, ...]] = contextvars.ContextVar("faceanchor_cancel_checks", default=())


@contextmanager
def scope(check: CancelCheck | None) -> Iterator[None]:
    """Within the block, :func:`checkpoint` raises when ``check()`` (or an outer scope's) is true."""
    if check is None:
        yield
        return
    token = _checks.set(_checks.get() + (check,))
    try:
        yield
    finally:
        _checks.reset(token)


def requested() -> bool:
    """Whether a check of the current scopes says stop."""
    return any(c() for c in _checks.get())


def checkpoint(where: str) -> None:
    """Raise :class:`Cancelled` when the current scope's check is true (a no-op outside scopes)."""
    for c in _checks.get():
        if c():
            raise Cancelled(f"cancelled during {where}")


def current() -> CancelCheck:
    """The current scopes as one check (for code that takes a cancel callable)."""
    checks = _checks.get()
    return lambda: any(c() for c in checks)
