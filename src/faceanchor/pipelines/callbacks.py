"""The one per-step callback every pipeline takes: diffusers' ``callback_on_step_end``.

Every pipeline (InstantID text-to-image, image-to-image / inpainting, the FaceID family on
its diffusers pipe) calls ``callback_on_step_end(pipe, step_index, timestep, callback_kwargs)``
after each scheduler step, with the tensors named in ``callback_on_step_end_tensor_inputs``
(at least ``"latents"``); the returned dict's entries replace those tensors for the next
steps, as in diffusers' ``StableDiffusionXLControlNetPipeline.__call__``.

Progress and cancellation are such a callback: :func:`step_callback` reports
``on_step(step, total)`` and raises :class:`~faceanchor.errors.Cancelled` when ``cancel()``
says so. Raising inside the callback stops the run *between* denoising steps: the step that
just finished is the last one with a UNet call.
"""

from __future__ import annotations

from typing import Any, Callable

from faceanchor.errors import Cancelled

#: ``(pipe, step_index, timestep, callback_kwargs) -> dict`` (diffusers' shape).
StepEndCallback = Callable[[Any, int, Any, dict], dict]
StepCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


def step_callback(
    on_step: StepCallback | None = None, cancel: CancelCheck | None = None, total: int | None = None
) -> StepEndCallback:
    """A ``callback_on_step_end`` reporting progress and cancelling between steps.

    After step ``i`` (0-based) it calls ``on_step(i + 1, total)``, then, if ``cancel()`` is true,
    raises ``Cancelled("... after step i+1 of total")``. ``total`` defaults to the pipeline's
    ``num_timesteps`` (the steps that actually run, e.g. the last ``strength`` share of them in
    image-to-image). It returns ``{}``: no tensor is replaced.
    """

    def callback(pipe: Any, step_index: int, timestep: Any, callback_kwargs: dict) -> dict:
        n = total if total is not None else getattr(pipe, "num_timesteps", None)
        step = step_index + 1
        if on_step is not None:
            on_step(step, n)
        if cancel is not None and cancel():
            raise Cancelled(f"generation was cancelled after step {step} of {n}")
        return {}

    return callback
