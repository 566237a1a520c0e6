"""Prompt encoding for every pipeline: plain (diffusers) or weighted / long (``compel``).

:func:`encode_prompts` returns what diffusers' ``encode_prompt`` returns for the pipeline's
family, so its output goes to any pipeline's ``prompt_embeds`` arguments:

* SDXL (two CLIP encoders): ``(prompt_embeds, negative_prompt_embeds, pooled, negative_pooled)``;
* SD1.5: ``(prompt_embeds, negative_prompt_embeds)``.

Weightings:

* ``"plain"``: exactly ``pipe.encode_prompt`` (77 tokens, longer prompts truncated).
* ``"compel"``: the `compel <https://pypi.org/project/compel/>`_ package (``CompelForSDXL`` /
  ``CompelForSD``): weights per word and prompts past 77 tokens (encoded in 77-token chunks
  and concatenated, so every word is kept; the negative is padded to the positive's length
  with empty-prompt chunks, or the other way round). SDXL: penultimate hidden states of both
  encoders, concatenated, as diffusers encodes them; the pooled embedding (not weighted, first
  77 tokens) is diffusers' own of the prompt's words with the weighting syntax removed — compel's
  pooled would encode the syntax (``(``, ``)1.3``) as text. Syntax:
  compel's (``(word)1.3``, ``word+``, ``word--``, ``("a", "b").blend(0.7, 0.3)``) and the
  ``(word:1.3)`` form of the official demo / AUTOMATIC1111, which is rewritten to compel's
  ``(word)1.3`` first (compel alone would read it as the literal text ``word:1.3``). Prompts
  without any weight other than 1 give the plain embeddings exactly (compel's "no weights"
  bypass), as long as they fit in 77 tokens.

As diffusers does, ``negative_prompt=None`` on an SDXL pipeline with
``force_zeros_for_empty_prompt`` gives all-zero negative embeddings (both weightings), and
without classifier-free guidance the negatives are ``None``.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from faceanchor.errors import InvalidInputError

WEIGHTINGS = ("plain", "compel")

_WEIGHT_SUFFIX = re.compile(r"^(?P<text>.*?):\s*(?P<weight>[+-]?(?:\d+\.?\d*|\.\d+))\s*$", re.DOTALL)


def a1111_to_compel(prompt: str) -> str:
    """Rewrite every ``(text:weight)`` group (nested too) as compel's ``(text)weight``; keep the rest.

    Escaped parentheses (``\\(``, ``\\)``) are left alone, as are groups without a numeric
    ``:weight`` suffix (compel syntax such as ``(word)1.2`` or ``("a", "b").blend(...)``).
    """
    stack: list[list[str]] = [[]]
    i = 0
    while i < len(prompt):
        ch = prompt[i]
        if ch == "\\" and i + 1 < len(prompt):
            stack[-1].append(prompt[i : i + 2])
            i += 2
            continue
        if ch == "(":
            stack.append([])
        elif ch == ")" and len(stack) > 1:
            inner = "".join(stack.pop())
            m = _WEIGHT_SUFFIX.match(inner)
            stack[-1].append(f"({m['text']}){m['weight']}" if m else f"({inner})")
        else:
            stack[-1].append(ch)
        i += 1
    while len(stack) > 1:  # unbalanced "(": keep it as typed
        inner = "".join(stack.pop())
        stack[-1].append("(" + inner)
    return "".join(stack[0])


def _words(prompt: str) -> str:
    """The text compel encodes for a prompt without ``.and()`` / ``.blend()``: its fragments joined by spaces."""
    from compel import Compel

    try:
        conjunction = Compel.parse_prompt_string(prompt)
    except Exception:  # compel raises its parser's errors later, with its own message
        return prompt
    if len(conjunction.prompts) != 1:
        return prompt
    texts = [getattr(child, "text", None) for child in getattr(conjunction.prompts[0], "children", [None])]
    if not texts or any(not isinstance(t, str) for t in texts):
        return prompt
    return " ".join(t for t in texts if t)


def encode_prompts(
    pipe: Any,
    prompt: str,
    negative_prompt: str | None = None,
    *,
    weighting: str = "plain",
    device: Any,
    num_images_per_prompt: int = 1,
    do_classifier_free_guidance: bool = True,
) -> tuple[torch.Tensor | None, ...]:
    """Encode one prompt (and its negative) for ``pipe``'s family; see the module docstring.

    ``pipe``: a diffusers SD1.5 or SDXL pipeline (or one of ours built on them): SDXL when it
    has a ``text_encoder_2``. Raises :class:`InvalidInputError` for an unknown ``weighting``.
    """
    if weighting not in WEIGHTINGS:
        raise InvalidInputError(f"unknown prompt weighting {weighting!r}; use one of {', '.join(WEIGHTINGS)}")
    if not isinstance(prompt, str) or (negative_prompt is not None and not isinstance(negative_prompt, str)):
        raise InvalidInputError("prompt and negative_prompt must be strings (negative_prompt may be None)")
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise InvalidInputError(f"num_images_per_prompt must be a positive integer, got {num_images_per_prompt!r}")
    sdxl = getattr(pipe, "text_encoder_2", None) is not None
    if weighting == "plain":
        return tuple(
            pipe.encode_prompt(
                prompt, device=device, num_images_per_prompt=num_images_per_prompt,
                do_classifier_free_guidance=do_classifier_free_guidance, negative_prompt=negative_prompt,
            )
        )
    return _encode_compel(pipe, prompt, negative_prompt, sdxl, device, num_images_per_prompt, do_classifier_free_guidance)


def _encode_compel(
    pipe: Any, prompt: str, negative_prompt: str | None, sdxl: bool, device: Any, n: int, do_cfg: bool
) -> tuple[torch.Tensor | None, ...]:
    try:
        from compel import CompelForSD, CompelForSDXL
    except ImportError as exc:  # the `gen` extra brings it
        raise InvalidInputError(
            "weighting='compel' needs the compel package: pip install 'faceanchor[gen]' (or pip install compel)"
        ) from exc

    zero_negative = negative_prompt is None and sdxl and bool(getattr(pipe.config, "force_zeros_for_empty_prompt", False))
    positive = a1111_to_compel(prompt)
    negative = None if not do_cfg or zero_negative else a1111_to_compel(negative_prompt or "")
    encoder = (CompelForSDXL if sdxl else CompelForSD)(pipe)
    out = encoder(positive, negative_prompt=negative) if negative is not None else encoder(positive)

    embeds, neg = out.embeds, out.negative_embeds
    pooled = neg_pooled = None
    if sdxl:  # diffusers' pooled output of the words (zeros for a None negative, as there)
        _, _, pooled, neg_pooled = pipe.encode_prompt(
            _words(positive), device=device, num_images_per_prompt=1, do_classifier_free_guidance=do_cfg,
            negative_prompt=None if negative is None else _words(negative),
        )
    if do_cfg and zero_negative:
        neg = torch.zeros_like(embeds)
    if not do_cfg:
        neg = neg_pooled = None

    # dtype / device and per-image repetition as diffusers' encode_prompt
    if sdxl:
        dtype = pipe.text_encoder_2.dtype
    else:
        dtype = pipe.text_encoder.dtype if pipe.text_encoder is not None else pipe.unet.dtype

    def seq(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.to(dtype=dtype, device=device)
        b, length, c = t.shape
        return t.repeat(1, n, 1).view(b * n, length, c)

    def vec(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = t.to(dtype=dtype, device=device)
        return t.repeat(1, n).view(t.shape[0] * n, -1)

    if sdxl:
        return seq(embeds), seq(neg), vec(pooled), vec(neg_pooled)
    return seq(embeds), seq(neg)
