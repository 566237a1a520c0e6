"""faceanchor's ComfyUI custom nodes: characters, every method, identity scores and best-of-N.

ComfyUI loads a custom node pack from ``ComfyUI/custom_nodes/<name>/__init__.py`` and reads its
``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``. ``python -m faceanchor.comfyui install
ComfyUI/custom_nodes`` writes a two-line shim there that re-exports this module's mappings
(see :mod:`faceanchor.comfyui.install`). Top layer, like the CLI: nothing in faceanchor imports it.
"""

from faceanchor.comfyui.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None  # no front-end extension

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
