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

from contextlib import contextmanager
from typing import Any, Callable, Iterator

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


#: Modules checked before every call: the layers that carry the compute (and the blocks around them).
_CHECKED_LAYERS = ("Conv2d", "Linear", "LoRACompatibleConv", "LoRACompatibleLinear")


def torch_modules(obj: Any) -> dict[str, Any]:
    """The torch modules of a pipeline (diffusers' ``components``, attributes, a wrapped ``.pipe``), by name."""
    import torch

    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(o: Any, prefix: str, depth: int) -> None:
        if o is None or id(o) in seen or depth > 2:
            return
        seen.add(id(o))
        if isinstance(o, torch.nn.Module):
            found[prefix or type(o).__name__] = o
            return
        items = dict(getattr(o, "components", None) or {})
        items.update({k: v for k, v in vars(o).items() if not k.startswith("__")} if hasattr(o, "__dict__") else {})
        for k, v in items.items():
            if isinstance(v, torch.nn.Module) or k == "pipe" or hasattr(v, "components"):
                visit(v, k.lstrip("_"), depth + 1)

    visit(obj, "", 0)
    return found


@contextmanager
def cancellable(modules: dict[str, Any]) -> Iterator[None]:
    """Within the block, every conv/linear layer of ``modules`` checks :func:`faceanchor.cancel.checkpoint`
    before it runs: prompt encoding, a denoising step, a VAE encode or decode stop between two layers.
    Compiled modules (``torch.compile``, wrapped or in place with ``Module.compile``) and
    everything inside them are left alone: a hook there would break the compiled graph at every
    layer (their step callback still cancels)."""
    from faceanchor.cancel import checkpoint

    handles = []
    for name, module in modules.items():
        if type(module).__name__ == "OptimizedModule":
            continue
        where = f"{name} ({type(module).__name__})"

        def hook(mod: Any, args: Any, _where: str = where) -> None:
            checkpoint(_where)

        compiled = {id(s) for m in module.modules() if getattr(m, "_compiled_call_impl", None) is not None for s in m.modules()}
        for sub in module.modules():
            if type(sub).__name__ in _CHECKED_LAYERS and id(sub) not in compiled:
                handles.append(sub.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
