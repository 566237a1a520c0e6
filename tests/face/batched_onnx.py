"""Test helper: a copy of an ONNX model whose batch size is free (the test models fix it at 1).

Input and outputs get a symbolic batch dimension; a ``Reshape`` whose target shape starts with
the literal batch 1 copies it from its input instead (0); a ``Resize`` given output ``sizes``
(batch 1 in them) gets the equivalent ``scales``. The weights are untouched, so the copy
computes the same network on each image of a batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def batched_copy(src: Path, dst: Path) -> Path:
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(src))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in shape_inference.infer_shapes(model).graph.value_info}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input})
    inits = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]]).copy()
            if target[0] == 1:
                target[0] = 0
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(target.astype(np.int64), node.input[1]))
        if node.op_type == "Resize" and len(node.input) == 4 and node.input[3]:
            sizes = numpy_helper.to_array(inits[node.input[3]]).astype(np.float32)
            scales = sizes / np.asarray(shapes[node.input[0]], np.float32)
            name = node.input[3] + "_scales"
            model.graph.initializer.append(numpy_helper.from_array(scales.astype(np.float32), name))
            del node.input[3]
            node.input[2] = name
    del model.graph.value_info[:]  # inferred for batch 1
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return dst


class CountingSession:
    """An onnxruntime session that counts its run calls and their batch sizes."""

    def __init__(self, session):
        self.session, self.batches = session, []

    def run(self, names, feeds):
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self.session.run(names, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)
