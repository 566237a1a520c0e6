"""Face packs: where the detector and recognizer files of ``dlib``, ``antelopev2`` and
``buffalo_l`` live, and which ONNX file in a pack is which.

Nothing is downloaded. InsightFace packs are looked for in
``settings.insightface_root / "models" / <pack>`` (``~/.insightface/models/<pack>``) and
``settings.models_dir / "insightface" / <pack>`` (under ``FACEANCHOR_HOME``). The ``dlib``
pack comes from the ``face_recognition_models`` distribution, located without importing it
(its ``__init__`` imports the removed ``pkg_resources``), or from ``models_dir / "dlib"``.

An ONNX file's role is read from its graph like InsightFace's ``model_zoo`` does: 5+ outputs
is a detector (SCRFD); a square input of 112+ px (multiple of 16) with one output is a
recognizer (ArcFace); 192 px (landmarks), 96 px (gender/age) and 128 px two-input (swapper)
models are neither.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceanchor.errors import ModelNotFoundError

DLIB_FILES = {
    "landmarks": "shape_predictor_68_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "cnn": "mmod_human_face_detector.dat",
}


@dataclass(frozen=True)
class InsightFacePackSpec:
    name: str
    detector: str
    recognizer: str


INSIGHTFACE_PACKS: dict[str, InsightFacePackSpec] = {
    "antelopev2": InsightFacePackSpec("antelopev2", "scrfd_10g_bnkps.onnx", "glintr100.onnx"),
    "buffalo_l": InsightFacePackSpec("buffalo_l", "det_10g.onnx", "w600k_r50.onnx"),
}
#: InfiniteYou's pack: antelopev2's SCRFD detector, facexlib's ArcFace (IR-SE50, PyTorch) recognizer.
FACEXLIB_PACK = "facexlib"
FACEXLIB_WEIGHTS = "recognition_arcface_ir_se50.pth"
PACK_NAMES = ("dlib", *INSIGHTFACE_PACKS, FACEXLIB_PACK)


@dataclass(frozen=True)
class DlibPack:
    directory: Path
    landmarks: Path
    recognition: Path
    cnn: Path | None
    name: str = "dlib"


@dataclass(frozen=True)
class OnnxPackFiles:
    """An InsightFace pack directory and its ONNX files, roles not yet checked."""

    name: str
    directory: Path
    candidates: tuple[Path, ...]  # expected names first, then the other .onnx files


# --------------------------------------------------------------------------- dlib


def face_recognition_models_dir() -> Path | None:
    """``face_recognition_models/models`` without running the package's ``__init__``."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "models"
        if d.is_dir():
            return d
    return None


def dlib_dirs(settings: Any) -> list[Path]:
    dirs = [settings.models_dir / "dlib"]
    frm = face_recognition_models_dir()
    if frm is not None:
        dirs.insert(0, frm)
    return dirs


def find_dlib_pack(settings: Any, need_cnn: bool = False) -> DlibPack:
    needed = ["landmarks", "recognition"] + (["cnn"] if need_cnn else [])
    searched = dlib_dirs(settings)
    for d in searched:
        if all((d / DLIB_FILES[k]).is_file() for k in needed):
            cnn = d / DLIB_FILES["cnn"]
            return DlibPack(directory=d, landmarks=d / DLIB_FILES["landmarks"], recognition=d / DLIB_FILES["recognition"], cnn=cnn if cnn.is_file() else None)
    files = ", ".join(DLIB_FILES[k] for k in needed)
    where = " or ".join(str(d) for d in searched)
    raise ModelNotFoundError(
        f"face pack 'dlib' was not found: install face-recognition-models==0.3.0 or put {files} in {where}"
    )


# --------------------------------------------------------------------------- InsightFace


def insightface_dirs(settings: Any, pack: str) -> list[Path]:
    return [Path(settings.insightface_root) / "models" / pack, settings.models_dir / "insightface" / pack]


def _onnx_in(d: Path) -> list[Path]:
    files = sorted(p for p in d.glob("*.onnx") if p.is_file())
    if not files:  # an archive unpacked one level too deep: <pack>/<pack>/*.onnx
        files = sorted(p for p in (d / d.name).glob("*.onnx") if p.is_file())
    return files


def find_insightface_pack(settings: Any, pack: str) -> OnnxPackFiles:
    """The first searched directory holding ONNX files for ``pack``, expected names first."""
    spec = INSIGHTFACE_PACKS.get(pack)
    searched = insightface_dirs(settings, pack)
    for d in searched:
        if not d.is_dir():
            continue
        files = _onnx_in(d)
        if not files:
            continue
        expected = [spec.detector, spec.recognizer] if spec else []
        ordered = [f for name in expected for f in files if f.name == name]
        ordered += [f for f in files if f not in ordered]
        return OnnxPackFiles(name=pack, directory=files[0].parent, candidates=tuple(ordered))
    raise ModelNotFoundError(missing_pack_message(pack, searched))


def missing_pack_message(pack: str, searched: list[Path], found: str = "was not found") -> str:
    spec = INSIGHTFACE_PACKS.get(pack)
    if spec:
        what = f"{spec.detector} (detector) and {spec.recognizer} (recognizer)"
    else:
        what = "an SCRFD detector .onnx and an ArcFace recognizer .onnx"
    where = " or ".join(str(d) for d in searched)
    return f"face pack {pack!r} {found}: put {what} in {where}"


def onnx_role(session: Any) -> str:
    """``detection``, ``recognition`` or ``other`` from a session's inputs and outputs."""
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    shape = inputs[0].shape
    if len(outputs) >= 5:
        return "detection"
    if len(shape) != 4:
        return "other"
    h, w = shape[2], shape[3]
    if not (isinstance(h, int) and isinstance(w, int)):
        return "other"
    if (h, w) in ((192, 192), (96, 96)) or (h == w == 128 and len(inputs) == 2):
        return "other"
    if h == w and h >= 112 and h % 16 == 0 and len(outputs) == 1:
        return "recognition"
    return "other"


def open_onnx_pack(files: OnnxPackFiles, providers: list[str]) -> tuple[Path, Any, Path, Any]:
    """Open sessions over the candidates (expected names first) until a detector and a
    recognizer are found; return ``(detector_path, session, recognizer_path, session)``."""
    import onnxruntime as ort

    det = rec = None
    for path in files.candidates:
        if det is not None and rec is not None:
            break
        try:
            sess = ort.InferenceSession(str(path), providers=providers)
        except Exception:
            continue  # not a loadable model: keep looking
        role = onnx_role(sess)
        if role == "detection" and det is None:
            det = (path, sess)
        elif role == "recognition" and rec is None:
            rec = (path, sess)
    if det is None or rec is None:
        lacking = " and ".join(n for n, v in (("no face detector", det), ("no face recognizer", rec)) if v is None)
        raise ModelNotFoundError(missing_pack_message(files.name, [files.directory], found=f"in {files.directory} has {lacking}"))
    return det[0], det[1], rec[0], rec[1]


# --------------------------------------------------------------------------- facexlib (InfiniteYou)

def facexlib_dirs(settings: Any) -> list[Path]:
    """Where ``recognition_arcface_ir_se50.pth`` is looked for: ``<models_dir>/facexlib``,
    ``<insightface_root>/models/facexlib`` and facexlib's own download folder ``facexlib/weights``."""
    return [settings.models_dir / "facexlib", Path(settings.insightface_root) / "models" / "facexlib", Path("facexlib") / "weights"]


def find_facexlib_pack(settings: Any) -> tuple[Path, Any, Path]:
    """``(detector_path, detector_session, recognizer_path)`` of the ``facexlib`` pack: the SCRFD
    detector of the antelopev2 pack (as InfiniteYou detects) and facexlib's ArcFace weights."""
    import onnxruntime as ort

    searched = facexlib_dirs(settings)
    rec = next((d / FACEXLIB_WEIGHTS for d in searched if (d / FACEXLIB_WEIGHTS).is_file()), None)
    if rec is None:
        raise ModelNotFoundError(
            f"face pack 'facexlib' was not found: put {FACEXLIB_WEIGHTS} (facexlib's ArcFace, the v0.1.0 release) in "
            f"{' or '.join(str(d) for d in searched)}, and the antelopev2 pack's scrfd_10g_bnkps.onnx in "
            f"{' or '.join(str(d) for d in insightface_dirs(settings, 'antelopev2'))}"
        )
    files = find_insightface_pack(settings, "antelopev2")
    for path in files.candidates:
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception:
            continue
        if onnx_role(sess) == "detection":
            return path, sess, rec
    raise ModelNotFoundError(missing_pack_message("antelopev2", [files.directory], found=f"in {files.directory} has no face detector"))
