"""Generate Fixtures/onnx_op_cases.safetensors: single-op ONNX conformance cases for the Swift
ONNX interpreter, with onnxruntime's outputs as the reference.

Run from the repo root:  python3 Fixtures/make_onnx_op_cases.py

Each case is one node built with onnx.helper at a given opset, run by onnxruntime (CPU,
graph optimizations off) on seeded inputs. The file holds, per case <c>:
  <c>.in.<input name>    every input (also those the Swift test makes initializers)
  <c>.attr.<attr name>   tensor-valued attributes (Constant value, ConstantOfShape value)
  <c>.out.<k>            onnxruntime's k-th output
and in __metadata__["cases"] a JSON list describing each case:
  {"name", "op", "opset", "attributes": {name: {"type": int|float|string|ints|floats|tensor,
   "value"}}, "inputs": [{"name", "initializer": bool} | null for an omitted input],
   "outputs": [names], "check": exact|elementwise|l2}
"check" names the Swift test's tolerance class (see ONNXOpConformanceTests.swift).
Deterministic (fixed seeds, sorted metadata). Run by hand, never by CI. Needs numpy, onnx,
onnxruntime, safetensors.
"""

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "onnx_op_cases.safetensors")
MADE_BY = "Fixtures/make_onnx_op_cases.py"

NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
    np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32, np.dtype(np.bool_): TensorProto.BOOL,
}

rng = np.random.default_rng(1234)
cases = []
tensors = {}


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def positive(*shape):
    return (np.abs(rng.standard_normal(shape)) + 0.1).astype(np.float32)


def ir_version(opset):
    return 8 if opset <= 17 else 9 if opset <= 20 else 10


def case(name, op, inputs, attrs=None, opset=17, outputs=1, initializers=(), check="exact", omit=()):
    """One single-node case. `inputs` is a list of (name, array) in order; names listed in
    `omit` become omitted optional inputs (""). Names in `initializers` are graph
    initializers in the ONNX model too (so onnxruntime sees them as constants)."""
    attrs = attrs or {}
    out_names = [f"y{k}" for k in range(outputs)] if isinstance(outputs, int) else list(outputs)
    node_inputs = ["" if n in omit else n for n, _ in inputs]
    node = helper.make_node(op, node_inputs, out_names, name=name, **{k: v for k, v in attrs.items()})
    graph_inputs, inits = [], []
    for n, a in inputs:
        if n in omit:
            continue
        if n in initializers:
            inits.append(numpy_helper.from_array(a, n))
        else:
            graph_inputs.append(helper.make_tensor_value_info(n, NP_TO_ONNX[a.dtype], a.shape))
    graph_outputs = [helper.make_empty_tensor_value_info(o) for o in out_names]
    g = helper.make_graph([node], name, graph_inputs, graph_outputs, initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name=MADE_BY)
    model.ir_version = ir_version(opset)
    # Output types come from shape inference (the cases do not spell them out).
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type for v in inferred.graph.value_info}
    for o in model.graph.output:
        o.type.CopyFrom(types[o.name])
    if all(o.type.tensor_type.HasField("shape") for o in model.graph.output):
        onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {n: a for n, a in inputs if n not in omit and n not in initializers}
    results = sess.run(None, feeds)

    meta_attrs = {}
    for k, v in attrs.items():
        if isinstance(v, onnx.TensorProto):
            arr = numpy_helper.to_array(v)
            tensors[f"{name}.attr.{k}"] = np.array(arr, order="C", copy=True)  # keeps 0-d shapes (ascontiguousarray would not)
            meta_attrs[k] = {"type": "tensor"}
        elif isinstance(v, bool) or isinstance(v, int):
            meta_attrs[k] = {"type": "int", "value": int(v)}
        elif isinstance(v, float):
            meta_attrs[k] = {"type": "float", "value": float(np.float32(v))}
        elif isinstance(v, str):
            meta_attrs[k] = {"type": "string", "value": v}
        elif isinstance(v, (list, tuple)) and all(isinstance(x, int) for x in v):
            meta_attrs[k] = {"type": "ints", "value": [int(x) for x in v]}
        elif isinstance(v, (list, tuple)):
            meta_attrs[k] = {"type": "floats", "value": [float(np.float32(x)) for x in v]}
        else:
            raise TypeError((name, k, v))
    for n, a in inputs:
        if n not in omit:
            tensors[f"{name}.in.{n}"] = np.array(a, order="C", copy=True)
    for k, r in enumerate(results):
        tensors[f"{name}.out.{k}"] = np.array(r, order="C", copy=True)
    cases.append({
        "name": name, "op": op, "opset": opset, "attributes": meta_attrs,
        "inputs": [None if n in omit else {"name": n, "initializer": n in initializers} for n, _ in inputs],
        "outputs": out_names, "check": check,
    })


def i64(*v):
    return np.array(v, dtype=np.int64)


def build():
    # --- unary float functions ---------------------------------------------------------
    # Sqrt, Reciprocal, Neg, Relu, Floor, Ceil are correctly rounded single IEEE operations:
    # exact. The transcendental ones may differ from onnxruntime's (MLAS) by a few ulps.
    for op in ["Sqrt", "Reciprocal"]:
        case(f"{op.lower()}", op, [("x", positive(3, 5))])
    for op in ["Neg", "Relu", "Floor", "Ceil"]:
        case(f"{op.lower()}", op, [("x", randn(3, 5) * 3)])
    for op in ["Erf", "Sigmoid", "Sin", "Cos", "Tanh", "Exp"]:
        case(f"{op.lower()}", op, [("x", randn(4, 6) * 2)], check="elementwise")
    case("log", "Log", [("x", positive(4, 6))], check="elementwise")
    case("neg_i64", "Neg", [("x", i64(3, -7, 0, 12))])
    case("gelu_none", "Gelu", [("x", randn(3, 8) * 2)], opset=20, check="elementwise")
    case("gelu_tanh", "Gelu", [("x", randn(3, 8) * 2)], {"approximate": "tanh"}, opset=20, check="elementwise")

    # --- binary arithmetic, broadcasting -------------------------------------------------
    # One IEEE operation per element: exact.
    for op in ["Add", "Sub", "Mul", "Div"]:
        case(f"{op.lower()}_nchw_c11", op, [("a", randn(2, 3, 4, 5)), ("b", randn(3, 1, 1) + 2)])
    case("add_n_c11", "Add", [("a", randn(2, 3, 4, 5)), ("b", randn(2, 3, 1, 1))])
    case("mul_scalar", "Mul", [("a", randn(2, 3, 4)), ("b", np.array(1.5, dtype=np.float32))], initializers=["b"])
    case("sub_outer", "Sub", [("a", randn(4, 1)), ("b", randn(1, 5))])
    case("div_scalar_first", "Div", [("a", np.array([2.0], dtype=np.float32)), ("b", positive(2, 3))])
    case("add_same", "Add", [("a", randn(3, 7)), ("b", randn(3, 7))], opset=13)
    case("add_f64", "Add", [("a", rng.standard_normal((2, 3))), ("b", rng.standard_normal((3,)))])
    case("add_i64", "Add", [("a", i64(1, -2, 3, 4, 5, 6).reshape(2, 3)), ("b", i64(10, 20, 30))])
    case("div_i64_trunc", "Div", [("a", i64(7, -7, 7, -7, 9, 0)), ("b", i64(2, 2, -2, -2, 3, 5))])
    case("mul_i32", "Mul", [("a", np.array([[1, -2], [3, 4]], dtype=np.int32)), ("b", np.array([3, -1], dtype=np.int32))])

    # --- Pow --------------------------------------------------------------------------
    case("pow_sq", "Pow", [("x", randn(3, 4)), ("e", np.array(2.0, dtype=np.float32))], initializers=["e"])
    case("pow_half", "Pow", [("x", positive(3, 4)), ("e", np.array(0.5, dtype=np.float32))], check="elementwise")
    case("pow_cube_i64", "Pow", [("x", randn(3, 4)), ("e", np.array(3, dtype=np.int64))], check="elementwise")
    case("pow_bcast", "Pow", [("x", positive(2, 3)), ("e", np.array([1.0, -1.5, 2.5], dtype=np.float32))], check="elementwise")

    # --- comparisons, logic, Where -----------------------------------------------------------
    case("equal_i64", "Equal", [("a", i64(1, 2, 3, 4)), ("b", i64(1, 0, 3, 5))])
    case("less_bcast", "Less", [("a", randn(3, 4)), ("b", randn(4))])
    case("greater", "Greater", [("a", randn(3, 4)), ("b", randn(3, 1))])
    case("less_or_equal_i64", "LessOrEqual", [("a", i64(1, 2, 3)), ("b", i64(2))])
    case("greater_or_equal", "GreaterOrEqual", [("a", np.array([1.0, 2.0, -1.0], dtype=np.float32)), ("b", np.array([1.0], dtype=np.float32))])
    case("not", "Not", [("a", np.array([True, False, True]))])
    case("or", "Or", [("a", np.array([True, False, False])), ("b", np.array([False, False, True]))])
    case("xor", "Xor", [("a", np.array([[True], [False]])), ("b", np.array([True, False]))])
    case("and", "And", [("a", np.array([[True], [False]])), ("b", np.array([True, False, True]))])
    case("where_bcast", "Where", [("c", rng.random((3, 1)) > 0.5), ("x", randn(1, 4)), ("y", np.array(-1.0, dtype=np.float32))])
    case("where_i64", "Where", [("c", np.array([True, False, True])), ("x", i64(1, 2, 3)), ("y", i64(-1, -2, -3))])

    # --- Cast ---------------------------------------------------------------------------
    frac = np.array([1.5, -1.5, 2.7, -2.7, 0.0, 1e3, -0.4], dtype=np.float32)
    case("cast_f32_i64", "Cast", [("x", frac)], {"to": TensorProto.INT64}, opset=13)
    case("cast_i64_f32", "Cast", [("x", i64(3, -4, 1 << 40, 0))], {"to": TensorProto.FLOAT})
    case("cast_f32_f16", "Cast", [("x", randn(9) * 100)], {"to": TensorProto.FLOAT16})
    case("cast_f16_f32", "Cast", [("x", (randn(7) * 10).astype(np.float16))], {"to": TensorProto.FLOAT})
    case("cast_f32_bool", "Cast", [("x", np.array([0.0, 1.0, -2.0, 0.5], dtype=np.float32))], {"to": TensorProto.BOOL})
    case("cast_bool_f32", "Cast", [("x", np.array([True, False, True]))], {"to": TensorProto.FLOAT})
    case("cast_f64_f32", "Cast", [("x", rng.standard_normal(5))], {"to": TensorProto.FLOAT})
    case("cast_i64_i32", "Cast", [("x", i64(5, -6, 7))], {"to": TensorProto.INT32})
    case("cast_f32_f64_op21", "Cast", [("x", randn(4))], {"to": TensorProto.DOUBLE, "saturate": 1}, opset=21)

    # --- constants ------------------------------------------------------------------------
    case("constant_tensor", "Constant", [], {"value": numpy_helper.from_array(randn(2, 3), "v")})
    case("constant_floats", "Constant", [], {"value_floats": [1.0, 2.5, -3.0]})
    case("constant_int", "Constant", [], {"value_int": 42})
    case("constant_of_shape_i64", "ConstantOfShape", [("s", i64(2, 3))],
         {"value": numpy_helper.from_array(np.array([7], dtype=np.int64), "v")}, initializers=["s"])
    case("constant_of_shape_default", "ConstantOfShape", [("s", i64(4))])
    case("range_f32", "Range", [("s", np.array(0.5, dtype=np.float32)), ("l", np.array(5.6, dtype=np.float32)),
                                ("d", np.array(0.7, dtype=np.float32))])
    case("range_i64_down", "Range", [("s", np.array(10, dtype=np.int64)), ("l", np.array(0, dtype=np.int64)),
                                     ("d", np.array(-3, dtype=np.int64))])

    # --- shape ops ------------------------------------------------------------------------
    x234 = randn(2, 3, 4)
    case("shape", "Shape", [("x", x234)], opset=13)
    case("shape_start_end", "Shape", [("x", randn(2, 3, 4, 5))], {"start": 1, "end": -1}, opset=15)
    case("shape_start_neg", "Shape", [("x", randn(2, 3, 4, 5))], {"start": -2}, opset=15)
    case("size", "Size", [("x", x234)])
    case("reshape_zero_minus1", "Reshape", [("x", x234), ("s", i64(0, -1))], initializers=["s"])
    case("reshape_minus1_mid", "Reshape", [("x", x234), ("s", i64(4, -1, 2))])
    case("reshape_allowzero", "Reshape", [("x", x234), ("s", i64(6, 4))], {"allowzero": 1}, opset=14)
    case("reshape_op13", "Reshape", [("x", x234), ("s", i64(1, 0, -1))], opset=13)
    for a in [0, 2, -1]:
        case(f"flatten_axis{a}".replace("-", "m"), "Flatten", [("x", randn(2, 3, 4, 2))], {"axis": a})
    case("unsqueeze_attr_op11", "Unsqueeze", [("x", x234)], {"axes": [0, -1]}, opset=11)
    case("unsqueeze_input_op13", "Unsqueeze", [("x", x234), ("a", i64(1, -1))], opset=13, initializers=["a"])
    case("squeeze_attr_op11", "Squeeze", [("x", randn(2, 1, 3, 1))], {"axes": [1]}, opset=11)
    case("squeeze_input_op13", "Squeeze", [("x", randn(2, 1, 3, 1)), ("a", i64(-1))], opset=13)
    case("squeeze_all", "Squeeze", [("x", randn(1, 3, 1, 2))], opset=13)
    case("identity", "Identity", [("x", x234)])

    # --- layout -----------------------------------------------------------------------------
    case("transpose_nhwc", "Transpose", [("x", randn(2, 3, 4, 5))], {"perm": [0, 2, 3, 1]})
    case("transpose_default", "Transpose", [("x", x234)])
    case("transpose_6d", "Transpose", [("x", randn(1, 2, 2, 2, 3, 2))], {"perm": [0, 1, 3, 5, 2, 4]})
    case("depth_to_space_dcr", "DepthToSpace", [("x", randn(2, 8, 3, 2))], {"blocksize": 2})
    case("depth_to_space_crd", "DepthToSpace", [("x", randn(2, 8, 3, 2))], {"blocksize": 2, "mode": "CRD"})
    case("space_to_depth", "SpaceToDepth", [("x", randn(2, 2, 4, 6))], {"blocksize": 2})
    case("concat_axis1", "Concat", [("a", randn(2, 1, 3)), ("b", randn(2, 2, 3)), ("c", randn(2, 3, 3))], {"axis": 1})
    case("concat_neg_axis", "Concat", [("a", randn(2, 3, 1)), ("b", randn(2, 3, 2))], {"axis": -1})
    case("concat_i64", "Concat", [("a", i64(1, 2)), ("b", i64(3)), ("c", i64(4, 5, 6))], {"axis": 0})
    case("split_attr_op11", "Split", [("x", randn(3, 6))], {"axis": 1, "split": [1, 2, 3]}, opset=11, outputs=3)
    case("split_input_op13", "Split", [("x", randn(5, 2)), ("s", i64(2, 2, 1))], opset=13, outputs=3)
    case("split_equal_op13", "Split", [("x", randn(2, 6))], {"axis": -1}, opset=13, outputs=2)
    case("split_num_outputs_op18", "Split", [("x", randn(7, 2))], {"num_outputs": 3}, opset=18, outputs=3)
    case("split_input_op18", "Split", [("x", randn(2, 6)), ("s", i64(4, 2))], {"axis": 1}, opset=18, outputs=2, initializers=["s"])
    x56 = randn(5, 6)
    case("slice_basic", "Slice", [("x", x56), ("s", i64(1, 0)), ("e", i64(3, 4))], opset=13)
    case("slice_axes_steps", "Slice", [("x", x56), ("s", i64(0, 1)), ("e", i64(6, 5)), ("a", i64(1, 0)), ("st", i64(2, 3))], initializers=["s", "e", "a", "st"])
    case("slice_negative", "Slice", [("x", x56), ("s", i64(-3)), ("e", i64(-1)), ("a", i64(-1))])
    case("slice_reverse", "Slice", [("x", x56), ("s", i64(-1)), ("e", i64(-(1 << 63))), ("a", i64(1)), ("st", i64(-1))])
    case("slice_reverse_step2", "Slice", [("x", x56), ("s", i64(10)), ("e", i64(0)), ("a", i64(0)), ("st", i64(-2))])
    case("slice_clamp_max", "Slice", [("x", x56), ("s", i64(2)), ("e", i64((1 << 63) - 1)), ("a", i64(0))])
    case("slice_i32", "Slice", [("x", x56), ("s", np.array([1], dtype=np.int32)), ("e", np.array([4], dtype=np.int32)),
                                ("a", np.array([1], dtype=np.int32))])
    case("slice_omitted_axes", "Slice", [("x", x56), ("s", i64(0)), ("e", i64(5)), ("a", i64(0)), ("st", i64(2))], omit=["a"])
    case("gather_axis0_neg", "Gather", [("x", randn(5, 3)), ("i", i64(0, -1, 2, 2))])
    case("gather_axis1_2d", "Gather", [("x", randn(2, 5, 3)), ("i", i64(4, 0, 1, 3).reshape(2, 2))], {"axis": 1})
    case("gather_i32_neg_axis", "Gather", [("x", randn(3, 4)), ("i", np.array([3, 1], dtype=np.int32))], {"axis": -1})
    case("gather_scalar_i64", "Gather", [("x", i64(2, 48, 16, 16)), ("i", np.array(1, dtype=np.int64))], initializers=["i"])
    case("expand_up", "Expand", [("x", randn(3, 1)), ("s", i64(2, 3, 4))], initializers=["s"])
    case("expand_smaller_shape", "Expand", [("x", randn(3, 1)), ("s", i64(1, 4))])
    case("expand_bidirectional", "Expand", [("x", randn(2, 1, 6)), ("s", i64(3, 1))])

    # --- reductions and normalization (summation order differs: l2) ----------------------------
    x4 = randn(2, 3, 4, 5)
    case("reduce_mean_attr_last", "ReduceMean", [("x", x4)], {"axes": [-1]}, opset=13, check="l2")
    case("reduce_mean_attr_nokeep", "ReduceMean", [("x", x4)], {"axes": [1, 2], "keepdims": 0}, opset=13, check="l2")
    case("reduce_mean_all_op13", "ReduceMean", [("x", x4)], opset=13, check="l2")
    case("reduce_mean_input_op18", "ReduceMean", [("x", x4), ("a", i64(2, 3))], {"keepdims": 1}, opset=18, check="l2",
         initializers=["a"])
    case("reduce_mean_noop_op18", "ReduceMean", [("x", x4)], {"noop_with_empty_axes": 1}, opset=18, check="l2")
    case("reduce_mean_split_axes_op18", "ReduceMean", [("x", x4), ("a", i64(0, 2))], {"keepdims": 0}, opset=18, check="l2")
    case("reduce_sum_op13", "ReduceSum", [("x", x4), ("a", i64(1))], opset=13, check="l2")
    case("global_average_pool", "GlobalAveragePool", [("x", x4)], check="l2")
    c = 6
    case("layer_norm_last", "LayerNormalization", [("x", randn(2, 4, 3, c) * 3 + 1), ("g", randn(c)), ("b", randn(c))],
         {"axis": -1, "epsilon": 1e-6}, opset=17, check="l2")
    case("layer_norm_axis1_scale_only", "LayerNormalization", [("x", randn(2, 3, 4)), ("g", randn(3, 4))],
         {"axis": 1}, opset=17, check="l2")
    case("layer_norm_stats", "LayerNormalization", [("x", randn(3, 8)), ("g", randn(8)), ("b", randn(8))],
         {"epsilon": 1e-5, "stash_type": 1}, opset=17, outputs=3, check="l2")
    case("layer_norm_bcast_scale_op18", "LayerNormalization", [("x", randn(2, 3, 4)), ("g", randn(4)), ("b", randn(1))],
         {"axis": -2}, opset=18, check="l2")

    # --- Conv (summation order differs: l2) -----------------------------------------------------
    x = randn(2, 4, 7, 6)
    case("conv_3x3_pad1_bias", "Conv", [("x", x), ("w", randn(5, 4, 3, 3)), ("b", randn(5))],
         {"pads": [1, 1, 1, 1], "kernel_shape": [3, 3]}, initializers=["w", "b"], check="l2")
    case("conv_1x1", "Conv", [("x", x), ("w", randn(3, 4, 1, 1)), ("b", randn(3))], check="l2")
    case("conv_1x1_nobias", "Conv", [("x", x), ("w", randn(3, 4, 1, 1))], check="l2")
    case("conv_depthwise", "Conv", [("x", x), ("w", randn(4, 1, 3, 3)), ("b", randn(4))],
         {"group": 4, "pads": [1, 1, 1, 1]}, check="l2")
    case("conv_grouped", "Conv", [("x", x), ("w", randn(6, 2, 3, 3)), ("b", randn(6))], {"group": 2}, check="l2")
    case("conv_stride2", "Conv", [("x", x), ("w", randn(3, 4, 3, 3))], {"strides": [2, 2], "pads": [1, 1, 1, 1]}, check="l2")
    case("conv_dilation2", "Conv", [("x", x), ("w", randn(3, 4, 3, 2))], {"dilations": [2, 2], "pads": [2, 1, 2, 1]}, check="l2")
    case("conv_asym_pads", "Conv", [("x", x), ("w", randn(2, 4, 3, 3))], {"pads": [0, 1, 2, 1]}, check="l2")
    case("conv_same_upper", "Conv", [("x", x), ("w", randn(3, 4, 3, 3))], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, check="l2")
    case("conv_same_lower", "Conv", [("x", x), ("w", randn(3, 4, 4, 4))], {"auto_pad": "SAME_LOWER"}, check="l2")
    case("conv_valid", "Conv", [("x", x), ("w", randn(3, 4, 3, 3))], {"auto_pad": "VALID"}, check="l2")
    case("conv_depthwise_stride2_dil", "Conv", [("x", x), ("w", randn(4, 1, 3, 3))],
         {"group": 4, "strides": [2, 1], "dilations": [1, 2], "pads": [1, 2, 1, 2]}, check="l2")

    # --- Gemm / MatMul (summation order differs: l2) -----------------------------------------
    case("gemm_transb_bias", "Gemm", [("a", randn(3, 5)), ("w", randn(4, 5)), ("c", randn(4))], {"transB": 1},
         initializers=["w", "c"], check="l2")
    case("gemm_transa_alpha_beta", "Gemm", [("a", randn(5, 3)), ("w", randn(5, 4)), ("c", randn(3, 1))],
         {"transA": 1, "alpha": 0.5, "beta": 2.0}, check="l2")
    case("gemm_no_c", "Gemm", [("a", randn(3, 5)), ("w", randn(5, 4))], opset=13, check="l2")
    case("gemm_scalar_c", "Gemm", [("a", randn(2, 3)), ("w", randn(3, 4)), ("c", np.array(0.25, dtype=np.float32))], check="l2")
    case("matmul_2d", "MatMul", [("a", randn(3, 5)), ("b", randn(5, 4))], check="l2")
    case("matmul_batch_bcast", "MatMul", [("a", randn(2, 1, 3, 4)), ("b", randn(5, 4, 6))], check="l2")
    case("matmul_fold", "MatMul", [("a", randn(2, 3, 4)), ("b", randn(4, 5))], check="l2")
    case("matmul_1d_2d", "MatMul", [("a", randn(4)), ("b", randn(4, 3))], check="l2")
    case("matmul_2d_1d", "MatMul", [("a", randn(2, 3, 4)), ("b", randn(4))], check="l2")


def save_sorted(tensors, path, metadata):
    """safetensors.numpy.save_file with the __metadata__ keys in sorted order (same reason as
    make_fixtures.save_st: save_file writes them in hash order; the header keeps its length)."""
    save_file(tensors, path, metadata=metadata)
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n)
        hdr = json.loads(raw)
        hdr["__metadata__"] = dict(sorted(hdr["__metadata__"].items()))
        new = json.dumps(hdr, separators=(",", ":")).encode()
        if len(new) <= n and json.loads(new) == json.loads(raw):
            f.seek(8)
            f.write(new + b" " * (n - len(new)))


def main():
    build()
    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names), "case names repeat"
    meta = {"cases": json.dumps(cases, sort_keys=True), "made_by": MADE_BY,
            "onnxruntime": ort.__version__, "onnx": onnx.__version__}
    save_sorted(dict(sorted(tensors.items())), OUT, meta)
    size = os.path.getsize(OUT)
    print(f"{OUT}: {len(cases)} cases, {len(tensors)} tensors, {size:,} bytes")
    assert size < 300_000, size
    return 0


if __name__ == "__main__":
    sys.exit(main())
