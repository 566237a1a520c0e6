"""docs/comfyui_workflow.json: a ComfyUI (UI-format) workflow of the node pack. Every node type
exists, every link joins an output and an input of the same type, the widget values fit the
node's widget specs; then the workflow runs, in link order, on tiny weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from photos import small_copy  # noqa: E402

from faceanchor.comfyui import NODE_CLASS_MAPPINGS as NODES  # noqa: E402

WORKFLOW = ROOT / "docs" / "comfyui_workflow.json"
SOCKETS = {"IMAGE", "MASK", "FACEANCHOR_ENGINE", "FACEANCHOR_IDENTITY"}
#: ComfyUI's own nodes the workflow uses: (input sockets, output types, widget count).
CORE = {"LoadImage": ({}, ["IMAGE", "MASK"], 2), "SaveImage": ({"images": "IMAGE"}, [], 1), "PreviewImage": ({"images": "IMAGE"}, [], 0)}


def widget_specs(key):
    spec = NODES[key].INPUT_TYPES()["required"]
    return [(n, s) for n, s in spec.items() if isinstance(s[0], list) or s[0] not in SOCKETS]


def widget_values(node):
    """Widget name → value, skipping the control_after_generate entry ComfyUI stores after a seed."""
    values, it = {}, iter(node["widgets_values"])
    for name, spec in widget_specs(node["type"]):
        values[name] = next(it)
        if len(spec) == 2 and spec[1].get("control_after_generate"):
            assert next(it) in ("fixed", "increment", "decrement", "randomize")
    assert next(it, None) is None, f"node {node['id']}: more widget values than widgets"
    return values


def sockets(node):
    if node["type"] in CORE:
        return CORE[node["type"]][0], CORE[node["type"]][1]
    spec = NODES[node["type"]].INPUT_TYPES()
    ins = {n: s[0] for sec in ("required", "optional") for n, s in spec.get(sec, {}).items() if not isinstance(s[0], list) and s[0] in SOCKETS}
    return ins, list(NODES[node["type"]].RETURN_TYPES)


@pytest.fixture(scope="module")
def workflow():
    return json.loads(WORKFLOW.read_text())


def test_every_node_exists_and_every_link_is_consistent(workflow):
    nodes = {n["id"]: n for n in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and workflow["last_node_id"] >= max(nodes)
    assert {n["type"] for n in nodes.values()} >= {"FaceAnchorLoadEngine", "FaceAnchorFaceAnalysis", "FaceAnchorGenerate", "FaceAnchorIdentityScore"}
    for n in nodes.values():
        assert n["type"] in NODES or n["type"] in CORE, n["type"]
        ins, outs = sockets(n)
        assert [i["name"] for i in n["inputs"]] == [k for k in ins if any(i["name"] == k for i in n["inputs"])]
        assert [o["type"] for o in n["outputs"]] == outs, n["type"]
    link_ids = set()
    for lid, src, sslot, dst, dslot, typ in workflow["links"]:
        link_ids.add(lid)
        s, d = nodes[src], nodes[dst]
        assert s["outputs"][sslot]["type"] == typ and lid in s["outputs"][sslot]["links"]
        assert d["inputs"][dslot]["type"] == typ and d["inputs"][dslot]["link"] == lid
        assert sockets(d)[0][d["inputs"][dslot]["name"]] == typ
    assert workflow["last_link_id"] >= max(link_ids)
    for n in nodes.values():  # every required socket is linked, and only to links that exist
        ins, _ = sockets(n)
        required = NODES[n["type"]].INPUT_TYPES()["required"] if n["type"] in NODES else CORE[n["type"]][0]
        for i in n["inputs"]:
            assert i["link"] is None or i["link"] in link_ids
            if i["name"] in required:
                assert i["link"] is not None, f"{n['type']}.{i['name']} is not linked"


def test_comfyui_would_run_every_node(workflow):
    """ComfyUI executes output nodes and their ancestors only: every node must be one of them."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    outputs = {i for i, n in nodes.items() if n["type"] in ("SaveImage", "PreviewImage") or getattr(NODES.get(n["type"]), "OUTPUT_NODE", False)}
    parents = {i: {src for _, src, _, dst, _, _ in workflow["links"] if dst == i} for i in nodes}
    run, todo = set(), list(outputs)
    while todo:
        i = todo.pop()
        if i not in run:
            run.add(i)
            todo += parents[i]
    assert run == set(nodes), f"never executed: {[nodes[i]['type'] for i in set(nodes) - run]}"


def test_widget_values_fit_the_widget_specs(workflow):
    for n in workflow["nodes"]:
        if n["type"] in CORE:
            assert len(n["widgets_values"]) == CORE[n["type"]][2]
            continue
        values = widget_values(n)
        for name, spec in widget_specs(n["type"]):
            v = values[name]
            if isinstance(spec[0], list):
                assert v in spec[0], f"{n['type']}.{name}={v!r}"
            elif spec[0] in ("INT", "FLOAT"):
                assert spec[1]["min"] <= v <= spec[1]["max"], f"{n['type']}.{name}={v!r}"
            elif spec[0] == "BOOLEAN":
                assert isinstance(v, bool)
            else:
                assert isinstance(v, str)


def test_the_workflow_runs_on_tiny_weights(workflow, tmp_path):
    """Executed as ComfyUI would (each node once its inputs are ready), with the engine switched
    to tiny weights, Load Image giving a test photo and the size and steps made small."""
    from faceanchor.comfyui.images import to_images
    from faceanchor.imageio import load_image

    overrides = {"FaceAnchorLoadEngine": dict(weights="tiny", face_pack="dlib", device="cpu", home=str(tmp_path)),
                 "FaceAnchorGenerate": dict(width=64, height=64, num_inference_steps=2)}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    by_link = {lid: (src, sslot) for lid, src, sslot, *_ in workflow["links"]}
    results, saved = {}, {}
    pending = list(nodes)
    while pending:
        ready = [i for i in pending if all(inp["link"] is None or by_link[inp["link"]][0] in results for inp in nodes[i]["inputs"])]
        assert ready, "the workflow has a cycle"
        for i in ready:
            n = nodes[i]
            linked = {inp["name"]: results[by_link[inp["link"]][0]][by_link[inp["link"]][1]] for inp in n["inputs"] if inp["link"] is not None}
            if n["type"] == "LoadImage":
                results[i] = (to_images([load_image(small_copy("obama.jpg"))]), None)
            elif n["type"] in ("SaveImage", "PreviewImage"):
                saved[i] = linked["images"]
                results[i] = ()
            else:
                cls = NODES[n["type"]]
                values = {**widget_values(n), **overrides.get(n["type"], {}), **linked}
                results[i] = getattr(cls(), cls.FUNCTION)(**values)
            pending.remove(i)
    gen = next(i for i, n in nodes.items() if n["type"] == "FaceAnchorGenerate")
    images = results[gen][0]
    assert tuple(images.shape) == (1, 64, 64, 3) and 0 <= float(images.min()) <= float(images.max()) <= 1
    assert json.loads(results[gen][1])["seed"] == widget_values(nodes[gen])["seed"]
    save = next(i for i, n in nodes.items() if n["type"] == "SaveImage")
    assert np.array_equal(saved[save].numpy(), images.numpy())
    score = next(i for i, n in nodes.items() if n["type"] == "FaceAnchorIdentityScore")
    assert results[score][0] == -1.0  # tiny weights draw no face
