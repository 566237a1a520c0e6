"""Prompt encoding (placeholder until the weighted-prompt work lands: plain only)."""

from __future__ import annotations

from typing import Any

from faceanchor.errors import InvalidInputError


def encode_prompts(pipe: Any, prompt: str, negative_prompt: str | None, *, weighting: str = "plain", device: Any,
                   num_images_per_prompt: int = 1, do_classifier_free_guidance: bool = True) -> tuple[Any, ...]:
    if weighting != "plain":
        raise InvalidInputError(f"prompt weighting {weighting!r} is unknown; use plain")
    return pipe.encode_prompt(prompt, device=device, num_images_per_prompt=num_images_per_prompt,
                              do_classifier_free_guidance=do_classifier_free_guidance, negative_prompt=negative_prompt)
