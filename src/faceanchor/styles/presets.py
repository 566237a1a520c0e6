"""Style presets: data in ``styles.json`` next to this file, loaded on first use, and the pure
:func:`apply_style`.

Each preset has a ``prompt`` template with one ``{prompt}`` placeholder and a ``negative``
prompt. The names include every style the hosted InstantID APIs list ((No style), Headshot,
Spring Festival, Watercolor, Film Noir, Neon, Jungle, Mars, Vibrant Color, Snow, Line art,
Art Nouveau); the prompts are this project's own.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

from faceanchor.errors import InvalidInputError

NO_STYLE = "(No style)"
#: What ``{prompt}`` becomes when a style is applied to an empty prompt (as the official demo
#: does for a missing prompt).
EMPTY_PROMPT_SUBJECT = "a person"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str  # template with one {prompt}
    negative: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "prompt": self.prompt, "negative": self.negative}


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Style, ...]:
    raw = json.loads(resources.files("faceanchor.styles").joinpath("styles.json").read_text(encoding="utf-8"))
    out = tuple(Style(d["name"], d["prompt"], d.get("negative", "")) for d in raw)
    for s in out:
        if s.prompt.count("{prompt}") != 1:
            raise ValueError(f"style {s.name!r} must contain {{prompt}} exactly once")
    return out


def load_styles() -> dict[str, Style]:
    """Every preset by name, in file order (read once, then cached)."""
    return {s.name: s for s in _load()}


def style_names() -> list[str]:
    return [s.name for s in _load()]


def get_style(name: str) -> Style:
    """The preset called ``name`` (exact, else case- and space-insensitive); clear error if none."""
    styles = load_styles()
    if name in styles:
        return styles[name]
    key = _norm(name)
    for s in styles.values():
        if _norm(s.name) == key:
            return s
    import difflib

    lowered = {s.lower(): s for s in styles}
    close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; run `faceanchor styles` to list them"
    raise InvalidInputError(f"unknown style {name!r}{hint}")


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def apply_style(name: str | None, prompt: str, negative: str = "") -> tuple[str, str]:
    """``(prompt, negative)`` with style ``name`` applied.

    The style's template gets ``prompt`` in place of ``{prompt}`` (an empty prompt becomes
    ``"a person"`` unless the style is ``(No style)``); the style's negative comes first, then
    the user's, joined by ``", "``. ``None`` means no style. Pure: no state, no I/O after the
    first load.
    """
    prompt = (prompt or "").strip()
    negative = (negative or "").strip()
    if name is None or name == NO_STYLE:
        return prompt, negative
    style = get_style(name)
    if style.name == NO_STYLE:
        return prompt, negative
    subject = prompt or EMPTY_PROMPT_SUBJECT
    styled = style.prompt.replace("{prompt}", subject)
    merged = ", ".join(p for p in (style.negative.strip(), negative) if p)
    return styled, merged
