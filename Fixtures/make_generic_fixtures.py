"""Reference data for converting a generic (non-DiCo) ONNX graph to `.dico`.

Run from the repo root:  python3 Fixtures/make_generic_fixtures.py

Reads Fixtures/convnet.onnx (made by make_onnx_fixtures.py) and writes
  Fixtures/convnet_generic_ref.safetensors
    x                 f32 [2, 3, 8, 8], numpy default_rng(5) standard normal (batch 2: the
                      declared batch is the symbolic N)
    out_fp32          onnxruntime on the model as written
    out_int8          onnxruntime with every Conv/Gemm/MatMul weight initializer replaced by
                      its int8 per-channel quantization, dequantized (Formats/DICO.md,
                      "Generic ONNX graphs": which initializers, which axis)
    out_fp16          onnxruntime with every float32 initializer rounded to float16
    out_bf16          the same, rounded to bfloat16 (round to nearest even)
    q/<initializer>   the int8 values of each quantized initializer
    scale/<initializer>  its float32 scales, one per index along the axis
  metadata: "axes" (JSON: initializer -> axis), seeds, versions.
  Fixtures/const_external.onnx, const_external.onnx.data
                      y = x + c, c a Constant node's [4] float32 tensor whose data lives in the
                      external file (no initializer at all): its file must still be hashed
  Fixtures/reshape_batch2.onnx
                      y = reshape(x @ W, [8]) for x [N, 4]: runs at N = 2 only, so the drift check
                      (symbolic dimensions at 1) cannot run it, which is an error
  Fixtures/convnet_nan_weight.onnx
                      convnet.onnx with proj[0, 0] = NaN (int8 must refuse it, naming it; any
                      other precision's drift check sees a NaN output)

The quantization is computed here from the rule as written in Formats/DICO.md, in numpy
float32 arithmetic, independently of the Swift code: m = max |w| over each slice along the
axis; scale = m / 127; q = round-half-even(w * (127 / m)) clamped to [-127, 127]; the
dequantized value is q * scale (float32). Needs numpy, onnx, onnxruntime (not torch). Run by
hand, never by CI; two runs give byte-identical files.
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_onnx_op_cases import save_sorted  # noqa: E402  (the same sorted-metadata writer)
MADE_BY = "Fixtures/make_generic_fixtures.py"


def weight_axes(graph):
    """initializer name -> axis, for the float32 initializers that are the weight operand of
    Conv (input 1: axis 0), Gemm (input 1: axis 0 with transB=1, else 1) or MatMul (a rank-2
    initializer operand: axis 1 for input 1, the output columns; axis 0 for input 0, the
    output rows). An initializer with any other reader, or two readers wanting different
    axes, is not quantized."""
    inits = {i.name: i for i in graph.initializer}
    uses = {}
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        for k, name in enumerate(node.input):
            if name not in inits:
                continue
            rank = len(inits[name].dims)
            axis = None
            if node.op_type == "Conv" and k == 1:
                axis = 0
            elif node.op_type == "Gemm" and k == 1 and rank == 2:
                axis = 0 if attrs.get("transB", 0) == 1 else 1
            elif node.op_type == "MatMul" and rank == 2:
                axis = 1 if k == 1 else 0
            uses.setdefault(name, []).append(axis)
    for o in graph.output:
        if o.name in inits:
            uses.setdefault(o.name, []).append(None)
    out = {}
    for name, axes in uses.items():
        if inits[name].data_type == onnx.TensorProto.FLOAT and None not in axes and len(set(axes)) == 1:
            out[name] = axes[0]
    return out


def quantize(w, axis):
    """(q int8, scales f32) by the documented rule, in float32."""
    w = np.asarray(w, np.float32)
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    m = np.abs(rows).max(axis=1).astype(np.float32)
    scales = (m / np.float32(127)).astype(np.float32)
    q = np.zeros(rows.shape, np.int8)
    for r in range(rows.shape[0]):
        if m[r] > 0:
            inv = np.float32(127) / m[r]
            v = np.rint((rows[r] * inv).astype(np.float32))
            q[r] = np.clip(v, -127, 127).astype(np.int8)
    q = np.moveaxis(q.reshape(np.moveaxis(w, axis, 0).shape), 0, axis)
    return np.ascontiguousarray(q), scales


def dequantize(q, scales, axis):
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q.astype(np.float32) * scales.reshape(shape)).astype(np.float32)


def to_bf16(w):
    """float32 -> bfloat16 (round to nearest even) -> float32."""
    b = w.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return r.astype(np.uint32).view(np.float32)


def run_with(model, replace, x):
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name in replace:
            init.CopyFrom(numpy_helper.from_array(replace[init.name], init.name))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0].astype(np.float32)


def main():
    model = onnx.load(os.path.join(HERE, "convnet.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    axes = weight_axes(model.graph)
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)

    ref = {"x": x, "out_fp32": run_with(model, {}, x)}
    deq = {}
    for name, axis in sorted(axes.items()):
        q, s = quantize(inits[name], axis)
        ref["q/" + name], ref["scale/" + name] = q, s
        deq[name] = dequantize(q, s, axis)
    ref["out_int8"] = run_with(model, deq, x)
    floats = {k: v for k, v in inits.items() if v.dtype == np.float32}
    ref["out_fp16"] = run_with(model, {k: v.astype(np.float16).astype(np.float32) for k, v in floats.items()}, x)
    ref["out_bf16"] = run_with(model, {k: to_bf16(v) for k, v in floats.items()}, x)

    def rel(a, b):
        return float(np.linalg.norm((a - b).astype(np.float64)) / np.linalg.norm(b.astype(np.float64)))

    for p in ("int8", "fp16", "bf16"):
        print(f"  {p}: relative L2 against fp32 {rel(ref['out_' + p], ref['out_fp32']):.3e}")
    print(f"  quantized: {json.dumps(axes, sort_keys=True)}")
    save_sorted({k: np.ascontiguousarray(v) for k, v in ref.items()}, os.path.join(HERE, "convnet_generic_ref.safetensors"),
                {"model": "convnet.onnx", "x_seed": "numpy default_rng(5)", "made_by": MADE_BY,
                 "axes": json.dumps(axes, sort_keys=True), "onnxruntime": ort.__version__, "numpy": np.__version__})

    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    for init in bad.graph.initializer:
        if init.name == "proj":
            w = numpy_helper.to_array(init).copy()
            w[0, 0] = np.nan
            init.CopyFrom(numpy_helper.from_array(w, "proj"))
    onnx.save(bad, os.path.join(HERE, "convnet_nan_weight.onnx"))

    c = numpy_helper.from_array(np.array([1.5, -2.0, 0.25, 8.0], np.float32), "c")
    c.data_location = onnx.TensorProto.EXTERNAL
    c.ClearField("raw_data")
    for k, v in (("location", "const_external.onnx.data"), ("offset", "0"), ("length", "16")):
        entry = c.external_data.add()
        entry.key, entry.value = k, v
    with open(os.path.join(HERE, "const_external.onnx.data"), "wb") as f:
        f.write(np.array([1.5, -2.0, 0.25, 8.0], np.float32).tobytes())
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Constant", [], ["c"], name="c", value=c), onnx.helper.make_node("Add", ["x", "c"], ["y"], name="add")],
        "const_external", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])])
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], producer_name=MADE_BY)
    m.ir_version = 8
    path = os.path.join(HERE, "const_external.onnx")
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": np.ones((2, 4), np.float32)})[0]
    assert (y == np.ones((2, 4), np.float32) + np.array([1.5, -2.0, 0.25, 8.0], np.float32)).all(), y

    w = numpy_helper.from_array(np.random.default_rng(9).standard_normal((4, 4)).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([8], np.int64), "shape")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"), onnx.helper.make_node("Reshape", ["h", "shape"], ["y"], name="reshape")],
        "reshape_batch2", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8])], [w, shape])
    m = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], producer_name=MADE_BY)
    m.ir_version = 8
    path = os.path.join(HERE, "reshape_batch2.onnx")
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": np.ones((2, 4), np.float32)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
