"""Put the node pack into a ComfyUI checkout: a two-line shim in ``custom_nodes/faceanchor_nodes/``.

ComfyUI imports each folder of ``custom_nodes`` by its ``__init__.py`` under the folder's own
name (``sys.modules[<folder>]``), so the folder must not be called ``faceanchor``: that would
shadow the installed package the shim imports. faceanchor itself is installed into ComfyUI's
Python (``pip install "faceanchor[gen]"``); the shim only re-exports its mappings.
"""

from __future__ import annotations

from pathlib import Path

FOLDER = "faceanchor_nodes"
SHIM = (
    "# faceanchor's ComfyUI nodes: written by `python -m faceanchor.comfyui install`; needs faceanchor in ComfyUI's Python.\n"
    "from faceanchor.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, WEB_DIRECTORY\n"
    "\n"
    "__all__ = [\"NODE_CLASS_MAPPINGS\", \"NODE_DISPLAY_NAME_MAPPINGS\", \"WEB_DIRECTORY\"]\n"
)


def install(custom_nodes: str | Path) -> Path:
    """Write the shim into ``custom_nodes`` (ComfyUI's ``custom_nodes`` folder, or the ComfyUI
    folder holding it); returns the shim's path. Rewriting an existing shim is fine."""
    root = Path(custom_nodes).expanduser()
    if root.is_dir() and (root / "custom_nodes").is_dir():
        root = root / "custom_nodes"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder: give ComfyUI's custom_nodes folder (or the ComfyUI folder)")
    target = root / FOLDER / "__init__.py"
    target.parent.mkdir(exist_ok=True)
    target.write_text(SHIM)
    return target
