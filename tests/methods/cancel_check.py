"""Shared by the method tests: cancellation lands between denoising steps."""

from __future__ import annotations

import pytest


def assert_cancels_between_steps(engine, request, unet) -> None:
    """Cancel after step 2 of 5: ``Cancelled`` names the step, two progress events, two UNet calls (CFG in one batch)."""
    from faceanchor.errors import Cancelled

    calls = {"n": 0}
    real = unet.forward

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    steps: list[int] = []
    unet.forward = counting
    try:
        with pytest.raises(Cancelled, match="after step 2 of 5"):
            engine.generate(request.model_copy(update={"num_inference_steps": 5}),
                            on_progress=lambda e: steps.append(e.step) if e.stage == "denoise" and e.total else None,
                            cancel=lambda: len(steps) >= 2)
    finally:
        del unet.forward
    assert steps == [1, 2] and calls["n"] == 2
