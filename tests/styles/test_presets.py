from __future__ import annotations

import pytest

from faceanchor.errors import InvalidInputError
from faceanchor.styles import NO_STYLE, apply_style, get_style, load_styles, style_names

HOSTED = ["(No style)", "Headshot", "Spring Festival", "Watercolor", "Film Noir", "Neon", "Jungle", "Mars",
          "Vibrant Color", "Snow", "Line art", "Art Nouveau"]  # fmt: skip


def test_at_least_29_with_every_hosted_name():
    names = style_names()
    assert len(names) >= 29 and len(set(names)) == len(names)
    assert set(HOSTED) <= set(names)
    assert names[0] == NO_STYLE


@pytest.mark.parametrize("name", style_names())
def test_every_style_applies(name):
    p, n = apply_style(name, "a man with glasses", "hat")
    assert "a man with glasses" in p and "{prompt}" not in p
    assert n.endswith("hat")
    style = get_style(name)
    if name != NO_STYLE:
        assert p != "a man with glasses" and style.negative and n == f"{style.negative}, hat"
        assert p == style.prompt.replace("{prompt}", "a man with glasses")


def test_no_style_and_none_are_identity():
    assert apply_style(NO_STYLE, " a cat ", " blurry ") == ("a cat", "blurry")
    assert apply_style(None, "a cat", "") == ("a cat", "")
    assert apply_style(NO_STYLE, "", "") == ("", "")


def test_negative_merging_and_empty_parts():
    style = get_style("Watercolor")
    assert apply_style("Watercolor", "x", "")[1] == style.negative
    assert apply_style("Watercolor", "x", "  ")[1] == style.negative
    p, _ = apply_style("Watercolor", "", "")
    assert p == style.prompt.replace("{prompt}", "a person")


def test_braces_in_user_prompt_are_literal():
    p, _ = apply_style("Neon", "a sign saying {hello} {prompt}", "")
    assert "a sign saying {hello} {prompt}" in p


def test_lenient_name_matching():
    assert get_style("line art").name == "Line art"
    assert get_style("film-noir").name == "Film Noir"


def test_unknown_style_lists_close_names():
    with pytest.raises(InvalidInputError, match="unknown style 'Watercolour'; did you mean 'Watercolor'"):
        apply_style("Watercolour", "x", "")
    with pytest.raises(InvalidInputError, match="faceanchor styles"):
        apply_style("zzzzzz", "x", "")


def test_loaded_lazily_and_cached():
    a, b = load_styles(), load_styles()
    assert a == b and list(a) == style_names()
