"""``python -m faceanchor.comfyui install COMFYUI/custom_nodes``: put the node pack into ComfyUI."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceanchor.comfyui", description="faceanchor's ComfyUI node pack.")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="Write the node pack's shim into ComfyUI's custom_nodes folder.")
    inst.add_argument("path", help="ComfyUI's custom_nodes folder (or the ComfyUI folder).")
    args = parser.parse_args(argv)
    from faceanchor.comfyui.install import install

    try:
        path = install(args.path)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"installed {path}; restart ComfyUI and look for the faceanchor category")
    return 0


if __name__ == "__main__":
    sys.exit(main())
