"""Style presets (data in ``styles.json``) and the pure :func:`apply_style`."""

from faceanchor.styles.presets import NO_STYLE, Style, apply_style, get_style, load_styles, style_names

__all__ = ["NO_STYLE", "Style", "apply_style", "get_style", "load_styles", "style_names"]
