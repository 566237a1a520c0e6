import shutil

import pytest

from faceanchor.errors import ModelNotFoundError
from faceanchor.face.analyzer import FaceAnalyzer
from faceanchor.face.packs import face_recognition_models_dir, find_dlib_pack, find_insightface_pack, insightface_dirs, onnx_role


def test_dlib_pack_found_without_importing_face_recognition_models(settings):
    import sys

    sys.modules.pop("face_recognition_models", None)
    d = face_recognition_models_dir()
    assert d is not None and (d / "shape_predictor_68_face_landmarks.dat").is_file()
    assert "face_recognition_models" not in sys.modules  # its __init__ needs pkg_resources
    p = find_dlib_pack(settings, need_cnn=True)
    assert p.landmarks.is_file() and p.recognition.is_file() and p.cnn.is_file()


@pytest.mark.parametrize("pack,files", [("antelopev2", "scrfd_10g_bnkps.onnx (detector) and glintr100.onnx (recognizer)"), ("buffalo_l", "det_10g.onnx (detector) and w600k_r50.onnx (recognizer)")])
def test_missing_pack_names_files_and_directories(settings, pack, files):
    with pytest.raises(ModelNotFoundError) as e:
        FaceAnalyzer(settings, pack=pack).prepare()
    msg = str(e.value)
    assert files in msg
    for d in insightface_dirs(settings, pack):
        assert str(d) in msg
    assert e.value.http_status == 503 and "\n" not in msg


def test_constructor_loads_nothing(settings):
    a = FaceAnalyzer(settings, pack="antelopev2")  # missing pack: no error until prepare()
    assert not a.prepared and a.detector is None


def test_pack_under_faceanchor_home(tmp_path, settings, scrfd_model_path, tiny_arcface):
    d = settings.models_dir / "insightface" / "antelopev2"
    d.mkdir(parents=True)
    shutil.copy(scrfd_model_path, d / "scrfd_10g_bnkps.onnx")
    shutil.copy(tiny_arcface.path, d / "glintr100.onnx")
    a = FaceAnalyzer(settings, pack="antelopev2").prepare()
    assert a.model_files["recognizer"].endswith("glintr100.onnx")
    assert a.space == "antelopev2" and a.dim == 512


def test_roles_read_from_the_graph_not_the_names(settings, scrfd_model_path, tiny_arcface):
    d = settings.insightface_root / "models" / "buffalo_l"
    d.mkdir(parents=True)
    # swapped names: the recognizer is called det_10g.onnx and the detector w600k_r50.onnx
    shutil.copy(scrfd_model_path, d / "w600k_r50.onnx")
    shutil.copy(tiny_arcface.path, d / "det_10g.onnx")
    (d / "README.txt").write_text("not a model")
    a = FaceAnalyzer(settings, pack="buffalo_l").prepare()
    assert a.model_files == {"detector": str(d / "w600k_r50.onnx"), "recognizer": str(d / "det_10g.onnx")}


def test_custom_names_and_nested_archive_layout(settings, scrfd_model_path, tiny_arcface):
    d = settings.insightface_root / "models" / "mypack" / "mypack"
    d.mkdir(parents=True)
    shutil.copy(scrfd_model_path, d / "a.onnx")
    shutil.copy(tiny_arcface.path, d / "b.onnx")
    files = find_insightface_pack(settings, "mypack")
    assert files.directory == d
    a = FaceAnalyzer(settings, pack="mypack").prepare()
    assert a.space == "mypack" and a.metric == "cosine"


def test_pack_without_recognizer_says_so(settings, scrfd_model_path):
    d = settings.insightface_root / "models" / "antelopev2"
    d.mkdir(parents=True)
    shutil.copy(scrfd_model_path, d / "scrfd_10g_bnkps.onnx")
    (d / "glintr100.onnx").write_bytes(b"truncated download")
    with pytest.raises(ModelNotFoundError, match="has no face recognizer: put .*glintr100.onnx"):
        FaceAnalyzer(settings, pack="antelopev2").prepare()


def test_onnx_role(scrfd_model_path, tiny_arcface):
    import onnxruntime as ort

    assert onnx_role(ort.InferenceSession(str(scrfd_model_path), providers=["CPUExecutionProvider"])) == "detection"
    assert onnx_role(ort.InferenceSession(str(tiny_arcface.path), providers=["CPUExecutionProvider"])) == "recognition"
