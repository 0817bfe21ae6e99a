#!/usr/bin/env python3
"""Rebuild the ONNX model held by a generic-graph `.dico` (Formats/DICO.md, "Generic ONNX
graphs") with onnx.helper, from the reference reader's view of the file alone, and optionally
check it with onnxruntime.

    python3 scripts/dico_to_onnx.py MODEL.dico OUT.onnx [--compare ORIGINAL.onnx] [--input IN.safetensors]

With --compare, the rebuilt model and ORIGINAL run in onnxruntime on the inputs of
IN.safetensors (tensors named after the graph inputs) or, without it, on a seeded input (numpy
default_rng(0), symbolic dimensions 1), and the relative L2 difference of each output is
printed. Needs numpy, onnx and onnxruntime (run by hand; the test suite does not need it).
"""

import argparse
import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Formats"))
import dico_reader  # noqa: E402

TYPES = {"f32": TensorProto.FLOAT, "f16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16, "f64": TensorProto.DOUBLE,
         "i64": TensorProto.INT64, "i32": TensorProto.INT32, "i16": TensorProto.INT16, "i8": TensorProto.INT8,
         "u8": TensorProto.UINT8, "bool": TensorProto.BOOL}


def rebuild(path):
    m = dico_reader.read(path)
    g = m.onnx_graph
    if g is None:
        raise SystemExit(f"{path}: holds a DiCo graph, not a generic ONNX graph")

    def tensor(name, a, dtype):
        if dtype == "bf16":   # stored as its uint16 bit patterns
            return helper.make_tensor(name, TensorProto.BFLOAT16, a.shape, a.tobytes(), raw=True)
        return numpy_helper.from_array(np.ascontiguousarray(a), name)

    def attr(v):
        x = m.onnx_attribute(v)
        return tensor("", x, m.entry(v["tensor"]).dtype) if "tensor" in v else x

    def value_info(v):
        return helper.make_tensor_value_info(v["name"], TYPES[v["dtype"]] if v["dtype"] else TensorProto.UNDEFINED, v["shape"])

    inits = [tensor(n, a, i["dtype"]) for (n, a), i in zip(m.onnx_initializers().items(), g["initializers"])]
    nodes = [helper.make_node(n["op_type"], n["inputs"], n["outputs"], name=n["name"], domain=n["domain"],
                              **{k: attr(v) for k, v in n["attributes"].items()}) for n in g["nodes"]]
    graph = helper.make_graph(nodes, g["name"], [value_info(v) for v in g["inputs"]], [value_info(v) for v in g["outputs"]], inits)
    return helper.make_model(graph, ir_version=g["ir_version"], producer_name=g["producer_name"],
                             producer_version=g["producer_version"],
                             opset_imports=[helper.make_opsetid(o["domain"], o["version"]) for o in g["opset_imports"]])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dico")
    p.add_argument("out")
    p.add_argument("--compare", metavar="ORIGINAL.onnx")
    p.add_argument("--input", metavar="IN.safetensors")
    a = p.parse_args()
    model = rebuild(a.dico)
    onnx.checker.check_model(model)
    onnx.save(model, a.out)
    print(f"wrote {a.out}: {len(model.graph.node)} nodes, {len(model.graph.initializer)} initializers")
    if a.compare:
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        ours = ort.InferenceSession(a.out, opts, providers=["CPUExecutionProvider"])
        theirs = ort.InferenceSession(a.compare, opts, providers=["CPUExecutionProvider"])
        if a.input:
            from safetensors.numpy import load_file
            data = load_file(a.input)
            feeds = {i.name: data[i.name] for i in ours.get_inputs()}
        else:
            rng = np.random.default_rng(0)
            feeds = {i.name: rng.uniform(-1, 1, [d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
                     for i in ours.get_inputs()}
        for o, x, y in zip(ours.get_outputs(), ours.run(None, feeds), theirs.run(None, feeds)):
            err = np.linalg.norm((x - y).astype(np.float64)) / max(np.linalg.norm(y.astype(np.float64)), 1e-300)
            print(f"  {o.name}: relative L2 against the original {err:.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
