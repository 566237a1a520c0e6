"""``faceanchor faces`` and ``faceanchor compare``: look at faces without generating anything.

Heavy imports (OpenCV, dlib, onnxruntime) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

PACK_HELP = "Face pack: dlib (offline default), antelopev2 or buffalo_l (InsightFace ONNX)."
DETECTOR_HELP = "dlib packs only: hog (default) or cnn."


def register(app: typer.Typer) -> None:
    app.command("faces", help="Detect every face in IMAGE: box, keypoints, score and quality.")(faces_command)
    app.command("compare", help="Compare the largest face of A with the largest face of B.")(compare_command)


def _analyzer(ctx: typer.Context, pack: Optional[str], detector: str):
    """An analyzer not yet prepared: images are checked before any model loads."""
    from faceanchor.config import load_settings
    from faceanchor.face.analyzer import FaceAnalyzer

    settings = ctx.obj if ctx.obj is not None else load_settings()
    return FaceAnalyzer(settings, pack=pack, detector=detector)


def faces_command(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="A JPEG, PNG or WEBP photo."),
    pack: Optional[str] = typer.Option(None, "--pack", help=PACK_HELP),
    detector: str = typer.Option("auto", "--detector", help=DETECTOR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    draw: Optional[Path] = typer.Option(None, "--draw", help="Write an overlay (boxes, keypoints, indices) to this PNG."),
) -> None:
    from faceanchor.errors import NoFaceError
    from faceanchor.face.overlay import draw_overlay

    analyzer = _analyzer(ctx, pack, detector)
    img = analyzer.load(image, name=image)
    faces = analyzer.prepare().get(img)
    if not faces:
        raise NoFaceError(f"no face found in {image} (also tried other scales)")
    if draw is not None:
        draw_overlay(img, faces).save(draw, format="PNG")
    if as_json:
        out = {
            "image": image,
            "size": list(img.size),
            "pack": analyzer.pack,
            "space": analyzer.space,
            "faces": [dict(index=i, **f.to_dict()) for i, f in enumerate(faces)],
        }
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{image}: {len(faces)} face(s), {img.size[0]}x{img.size[1]}, pack {analyzer.pack} (largest first)")
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = (int(round(v)) for v in f.bbox)
        q = f.quality
        line = f"  [{i}] box ({x1},{y1})-({x2},{y2}) score {f.det_score:.3f}"
        if q is not None:
            line += f" size {q.size_px:.0f}px blur {q.blur:.0f} yaw {q.yaw_deg:+.0f}deg"
        typer.echo(line)
        kps = "  ".join(f"{n} ({x:.0f},{y:.0f})" for n, (x, y) in zip(("le", "re", "nose", "ml", "mr"), f.kps))
        typer.echo(f"      kps {kps}")
        if q is not None and q.warnings:
            typer.echo(f"      warnings: {'; '.join(q.warnings)}")
    if draw is not None:
        typer.echo(f"overlay written to {draw}")


def compare_command(
    ctx: typer.Context,
    a: str = typer.Argument(..., help="First photo."),
    b: str = typer.Argument(..., help="Second photo."),
    pack: Optional[str] = typer.Option(None, "--pack", help=PACK_HELP),
    detector: str = typer.Option("auto", "--detector", help=DETECTOR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    from faceanchor.face.compare import compare_images

    analyzer = _analyzer(ctx, pack, detector)
    img_a, img_b = analyzer.load(a, name=a), analyzer.load(b, name=b)
    result = compare_images(analyzer.prepare(), img_a, img_b, name_a=a, name_b=b)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    v = result.verdict
    op = "<=" if not v.higher_is_closer else ">="
    typer.echo(
        f"{'same' if v.same else 'different'}: {v.metric} {v.score:.4f} "
        f"(same if {op} {v.threshold}), cosine {v.cosine:.4f}, space {v.space}"
    )
