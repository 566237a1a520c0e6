"""ComfyUI's progress bar and interrupt flag, when ComfyUI is there; no-ops otherwise.

* progress: each denoising step of a job updates a ``comfy.utils.ProgressBar`` (the bar on the
  node in ComfyUI's page) with the job's own step and total;
* cancellation: the job's cancel check reads ``comfy.model_management.processing_interrupted()``
  (it does not clear the flag), so the engine's cancel scope (:mod:`faceanchor.cancel`) stops
  the job between two model layers when the user presses Cancel; the :class:`Cancelled` that
  comes out is turned into ComfyUI's own ``InterruptProcessingException`` (through
  ``throw_exception_if_processing_interrupted()``, which also clears the flag), so ComfyUI ends
  the prompt as interrupted rather than failed.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from faceanchor.errors import Cancelled


def _comfy(name: str) -> Any:
    """``comfy.<name>`` when ComfyUI is importable, else None."""
    try:
        return importlib.import_module(f"comfy.{name}")
    except ImportError:
        return None


def interrupted() -> bool:
    """Whether ComfyUI's interrupt flag is set (False outside ComfyUI)."""
    mm = _comfy("model_management")
    check = getattr(mm, "processing_interrupted", None)
    return bool(check()) if check is not None else False


class Progress:
    """One node's progress: ``on_event`` takes the engine's ProgressEvents, ``step`` (i, total) pairs."""

    def __init__(self, total: int = 0):
        utils = _comfy("utils")
        bar = getattr(utils, "ProgressBar", None)
        self.bar = bar(max(1, int(total))) if bar is not None else None
        self.total = max(1, int(total))
        self.current = 0

    def step(self, i: int, total: int | None = None) -> None:
        if self.bar is None:
            return
        if total:
            self.total = int(total)
        self.current = min(int(i), self.total)
        self.bar.update_absolute(self.current, self.total)

    def on_event(self, event: Any) -> None:
        if getattr(event, "stage", None) == "denoise" and getattr(event, "total", 0):
            self.step(event.step, event.total)


@contextmanager
def comfy_job(total: int = 0) -> Iterator[tuple[Progress, Callable[[], bool]]]:
    """``(progress, cancel_check)`` for one job; a Cancelled caused by ComfyUI's interrupt leaves
    the block as ComfyUI's InterruptProcessingException."""
    progress = Progress(total)
    try:
        yield progress, interrupted
    except Cancelled:
        mm = _comfy("model_management")
        throw = getattr(mm, "throw_exception_if_processing_interrupted", None)
        if throw is not None:
            throw()  # raises ComfyUI's InterruptProcessingException when the flag caused it
        raise
    else:
        if progress.bar is not None and progress.current < progress.total:
            progress.step(progress.total, progress.total)  # full when the job is done
