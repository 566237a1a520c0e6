"""The node pack as ComfyUI's loader sees it (ComfyUI is not on PyPI: its loader's steps are
replayed here): the shim in custom_nodes, NODE_CLASS_MAPPINGS, and every node's declarations."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys

import pytest

from faceanchor.types import GenerationRequest

SOCKETS = {"IMAGE", "MASK", "FACEANCHOR_ENGINE", "FACEANCHOR_IDENTITY"}
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
OUTPUTS = SOCKETS | WIDGETS


def load_like_comfyui(module_path):
    """What ComfyUI's nodes.load_custom_node does with a folder: import its __init__.py under the
    folder's name, then read NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS / WEB_DIRECTORY."""
    name = module_path.name
    spec = importlib.util.spec_from_file_location(name, module_path / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    from faceanchor.comfyui.install import install

    custom_nodes = tmp_path_factory.mktemp("ComfyUI") / "custom_nodes"
    custom_nodes.mkdir()
    shim = install(custom_nodes.parent)  # the ComfyUI folder works too
    assert shim == custom_nodes / "faceanchor_nodes" / "__init__.py"
    return load_like_comfyui(shim.parent)


def test_the_loader_finds_every_node_with_a_display_name(pack):
    import faceanchor.comfyui as real

    assert pack.NODE_CLASS_MAPPINGS is real.NODE_CLASS_MAPPINGS
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    assert pack.WEB_DIRECTORY is None
    want = {"Load faceanchor engine", "Face analysis", "Character", "Generate", "ID photo", "Edit", "Identity score", "Best of N"}
    shown = set(pack.NODE_DISPLAY_NAME_MAPPINGS.values())
    assert all(any(s.startswith(w) for s in shown) for w in want), shown


def check_input(node, name, spec):
    where = f"{node}.{name}"
    assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, where
    kind, opts = spec[0], (spec[1] if len(spec) == 2 else {})
    assert isinstance(opts, dict), where
    if isinstance(kind, list):  # COMBO
        assert kind and all(isinstance(c, str) for c in kind), where
        assert len(set(kind)) == len(kind), where
        assert opts.get("default", kind[0]) in kind, where
        return
    assert kind in SOCKETS | WIDGETS, where
    if kind in ("INT", "FLOAT"):
        num = int if kind == "INT" else (int, float)
        for k in ("default", "min", "max", "step"):
            assert isinstance(opts.get(k), num) and not isinstance(opts.get(k), bool), f"{where}: {k}={opts.get(k)!r}"
        assert opts["min"] <= opts["default"] <= opts["max"], where
        assert opts["step"] > 0, where
    elif kind == "BOOLEAN":
        assert isinstance(opts.get("default"), bool), where
    elif kind == "STRING":
        assert isinstance(opts.get("default"), str), where


def test_every_node_declares_valid_inputs_outputs_function_and_category(pack):
    for key, cls in pack.NODE_CLASS_MAPPINGS.items():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional", "hidden"} and spec["required"], key
        for section in ("required", "optional"):
            for name, inp in spec.get(section, {}).items():
                check_input(key, name, inp)
        assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES, key
        assert all(isinstance(t, str) and t in OUTPUTS for t in cls.RETURN_TYPES), key
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES), key
        assert isinstance(cls.CATEGORY, str) and cls.CATEGORY, key
        fn = getattr(cls(), cls.FUNCTION)  # ComfyUI calls getattr(obj, FUNCTION)(**inputs)
        sig = inspect.signature(fn)
        sig.bind(**{n: None for n in spec["required"]})  # the required inputs only
        sig.bind(**{n: None for n in {**spec["required"], **spec.get("optional", {})}})


def test_generate_offers_every_request_field_with_the_api_schemas_ranges(pack):
    from faceanchor.comfyui.widgets import IDENTITY_FIELDS, NOT_OFFERED, SOCKET_FIELDS, UNSET_FLOAT, UNSET_INT
    from faceanchor.methods.registry import names

    spec = pack.NODE_CLASS_MAPPINGS["FaceAnchorGenerate"].INPUT_TYPES()
    inputs = {**spec["required"], **spec["optional"]}
    schema = GenerationRequest.model_json_schema()["properties"]  # what the HTTP API publishes
    for field in GenerationRequest.model_fields:
        assert field in inputs or field in IDENTITY_FIELDS | SOCKET_FIELDS | set(NOT_OFFERED), f"{field} is not offered"
    assert inputs["method"][0] == names()
    assert inputs["pose_image"][0] == "IMAGE"
    assert {"controlnet_pose", "controlnet_canny", "controlnet_depth"} <= set(inputs)
    checked = 0
    for field, prop in schema.items():
        if field not in inputs or isinstance(inputs[field][0], list) or inputs[field][0] not in ("INT", "FLOAT"):
            continue
        opts = inputs[field][1]
        variants = prop.get("anyOf", [prop])
        bounds = [v for v in variants if "maximum" in v]
        if not bounds:
            continue
        assert opts["max"] == bounds[0]["maximum"], field
        nullable = any(v.get("type") == "null" for v in variants)
        assert opts["min"] == (UNSET_INT if inputs[field][0] == "INT" else UNSET_FLOAT) if nullable else opts["min"] == bounds[0]["minimum"], field
        assert opts["default"] == (UNSET_INT if inputs[field][0] == "INT" else UNSET_FLOAT) if nullable else opts["default"] == prop["default"], field
        checked += 1
    assert checked >= 15
    assert inputs["scheduler"][0] == schema["scheduler"]["enum"]
    assert inputs["combine"][0] == schema["combine"]["enum"]


def test_widget_defaults_make_the_default_request_and_sentinels_mean_unset():
    from faceanchor.comfyui.widgets import request_fields, request_widgets

    defaults = {k: v[1]["default"] for k, v in request_widgets().items()}
    fields, ignored = request_fields(defaults, "instantid")
    assert ignored == []
    assert GenerationRequest(**fields).model_dump() == GenerationRequest().model_dump()
    for unset in ("num_inference_steps", "guidance_scale", "width", "height", "base", "model_name"):
        assert unset not in fields
    fields, _ = request_fields(dict(defaults, num_inference_steps=4, guidance_scale=0.0, width=512, base="sdxl",
                                    controlnet_canny=True), "instantid")
    req = GenerationRequest(**fields)
    assert (req.num_inference_steps, req.guidance_scale, req.width, req.base, req.controlnet_selection) == (4, 0.0, 512, "sdxl", ["canny"])


def test_fields_a_method_does_not_use_are_left_out_and_named():
    from faceanchor.comfyui.widgets import request_fields, request_widgets
    from faceanchor.methods.registry import get

    defaults = {k: v[1]["default"] for k, v in request_widgets().items()}
    fields, ignored = request_fields(dict(defaults, identity_strength=1.2, lora_scale=0.5), "instantid")
    assert "lora_scale" in ignored and "lora_scale" not in fields and fields["identity_strength"] == 1.2
    get("instantid").check_fields(GenerationRequest(**fields))  # what the engine would refuse is gone


def test_a_method_registered_at_run_time_appears_in_the_method_combo(pack):
    from faceanchor.methods.registry import get, register, unregister

    base = get("instantid")
    extra = type("Extra", (type(base),), {"name": "extra-test", "app": "extra-test", "order": 999})()
    register(extra)
    try:
        for key in ("FaceAnchorGenerate", "FaceAnchorFaceAnalysis", "FaceAnchorIdentityScore"):
            assert "extra-test" in pack.NODE_CLASS_MAPPINGS[key].INPUT_TYPES()["required"]["method"][0]
    finally:
        unregister("extra-test")


def test_loading_the_pack_imports_no_heavy_library(tmp_path):
    from faceanchor.comfyui.install import install

    shim = install(tmp_path)
    code = (
        "import importlib.util, sys; p = sys.argv[1];"
        "spec = importlib.util.spec_from_file_location('faceanchor_nodes', p); m = importlib.util.module_from_spec(spec);"
        "sys.modules['faceanchor_nodes'] = m; spec.loader.exec_module(m);"
        "[c.INPUT_TYPES() for c in m.NODE_CLASS_MAPPINGS.values()];"
        "print(','.join(x for x in ('torch', 'diffusers', 'transformers', 'dlib', 'onnxruntime', 'sqlalchemy') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(shim)], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_install_command_writes_the_shim_and_refuses_a_missing_folder(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "faceanchor.comfyui", "install", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0 and (tmp_path / "faceanchor_nodes" / "__init__.py").is_file()
    bad = subprocess.run([sys.executable, "-m", "faceanchor.comfyui", "install", str(tmp_path / "nope")], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_the_readmes_install_command_runs_as_written(tmp_path):
    import re
    import shlex
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if "faceanchor.comfyui install" in ln)
    command = re.split(r"\s*&&\s*", line)[-1]  # the pip install before it is the set-up command's own
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "faceanchor.comfyui", "install"]
    (tmp_path / "ComfyUI" / "custom_nodes").mkdir(parents=True)
    (tmp_path / "faceanchor").mkdir()
    import os

    import faceanchor

    env = dict(os.environ, PYTHONPATH=str(Path(faceanchor.__file__).resolve().parents[1]))  # this checkout's package, from any cwd
    done = subprocess.run([sys.executable, *argv[1:]], cwd=tmp_path / "faceanchor", capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    shim = tmp_path / "ComfyUI" / "custom_nodes" / "faceanchor_nodes"
    assert load_like_comfyui(shim).NODE_CLASS_MAPPINGS


def test_a_random_seed_reruns_the_node_and_a_fixed_one_lets_comfyui_cache(pack):
    import math

    for key in ("FaceAnchorGenerate", "FaceAnchorIDPhoto", "FaceAnchorEdit"):
        cls = pack.NODE_CLASS_MAPPINGS[key]
        spec = cls.INPUT_TYPES()["required"]
        inputs = {n: (s[1].get("default") if len(s) == 2 else None) for n, s in spec.items()}
        assert math.isnan(cls.IS_CHANGED(**inputs))  # the default seed is -1: random
        assert cls.IS_CHANGED(**dict(inputs, seed=5)) == cls.IS_CHANGED(**dict(inputs, seed=5)) == 5


def test_wrong_links_and_missing_inputs_are_one_clear_error(pack):
    from faceanchor.comfyui.engines import RemoteEngine
    from faceanchor.comfyui.images import from_images
    from faceanchor.comfyui.reference import FaceReference
    from faceanchor.errors import InvalidInputError

    nodes = pack.NODE_CLASS_MAPPINGS
    with pytest.raises(InvalidInputError, match="connect a 'Load faceanchor engine' node"):
        nodes["FaceAnchorFaceAnalysis"]().analyse("not an engine", None, 0, "instantid")
    with pytest.raises(InvalidInputError, match="connect a 'Face analysis' or 'Character' node"):
        nodes["FaceAnchorIdentityScore"]().score(RemoteEngine("http://127.0.0.1:9"), "not an identity", None, "instantid")
    with pytest.raises(ValueError, match="reference photos or a character"):
        FaceReference()
    with pytest.raises(InvalidInputError, match="expected an IMAGE tensor"):
        from_images([[1.0, 2.0]])


def test_per_controlnet_strengths_reach_the_request():
    from faceanchor.comfyui.widgets import request_fields, request_widgets
    from faceanchor.types import GenerationRequest

    values = {name: spec[1].get("default") for name, spec in request_widgets().items() if len(spec) > 1}
    values.update(controlnet_pose=True, controlnet_canny=True, controlnet_pose_scale=0.6, controlnet_depth_scale=1.5)
    fields, ignored = request_fields(values, "instantid")
    assert fields["controlnet_selection"] == ["pose", "canny"]
    assert fields["controlnet_scales"] == {"pose": 0.6}  # canny unset (-1) takes the shared scale; depth is not selected
    assert GenerationRequest(**fields).controlnet_scales == {"pose": 0.6} and not ignored
    values.update(controlnet_pose_scale=-1.0)
    assert "controlnet_scales" not in request_fields(values, "instantid")[0]
