"""Generate the ONNX test fixtures in Fixtures/ (deterministic inputs, fixed seeds).

Run from the repo root:  python3 Fixtures/make_onnx_fixtures.py

Writes (from Fixtures/tiny.safetensors, the C=24 model of make_fixtures.py):
  Fixtures/tiny_opset13.onnx        legacy TorchScript exporter, opset 13, STATIC shapes
                                    (batch 2, latent 8x8 baked in)
  Fixtures/tiny_opset17.onnx        legacy TorchScript exporter, opset 17, dynamic batch,
                                    height and width
  Fixtures/tiny_dynamo.onnx         dynamo exporter (torch.export), opset 18, dynamic batch,
  Fixtures/tiny_dynamo.onnx.data      every initializer as external data (forced, size 0 up)
  Fixtures/tiny_onnx_ref.safetensors  x [2,4,8,8], t f32 [250, 999], y [10, 3], out (PyTorch
                                    float32) and out_ort_<fixture> (onnxruntime on each export)
and a small non-DiCo model:
  Fixtures/convnet.onnx             Conv+BatchNorm+ReLU x2, GlobalAveragePool, Flatten, Linear,
                                    a bare MatMul (legacy exporter, opset 17; BatchNorm folded)
  Fixtures/convnet_ref.safetensors  x [3,3,8,8], out (PyTorch), out_ort

Prints, per export, the opsets and a histogram of node op types (copied into
Fixtures/README.md: it is the list of ops the ONNX interpreter must run).
Run by hand, never by CI. Needs torch, onnx, onnxruntime, onnxscript (for dynamo=True).
"""

import collections
import json
import os
import sys
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dico_torch  # noqa: E402
from make_fixtures import rel_l2, save_st  # noqa: E402  (same reference-file writer)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

MADE_BY = "Fixtures/make_onnx_fixtures.py"


def layer_norm_channels_static(x):
    """dico_torch.layer_norm_channels with the channel count as a Python int.

    The reference passes ``(x.shape[1],)`` as normalized_shape; under the legacy tracer with
    dynamic axes that becomes a traced value, which LayerNormalization cannot take. The
    official modules hold nn.LayerNorm(D) with a constant D, so this is the faithful export;
    the values are identical.
    """
    c = int(x.shape[1])
    return torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (c,), eps=dico_torch.LN_EPS).permute(0, 3, 1, 2)


def load_tiny():
    from safetensors import safe_open

    path = os.path.join(HERE, "tiny.safetensors")
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["dico.config"])
    return dico_torch.load_safetensors(path, config).eval()


def op_histogram(model_proto):
    """op_type counts of the main graph, plus ops inside any function or subgraph (flagged)."""
    hist = collections.Counter()
    for n in model_proto.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        hist[key] += 1
        for a in n.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                hist[f"<subgraph in {n.op_type}>"] += 1
    return hist


def describe(name, model_proto):
    opsets = {(o.domain or "ai.onnx"): o.version for o in model_proto.opset_import}
    hist = op_histogram(model_proto)
    inits = model_proto.graph.initializer
    ext = sum(1 for t in inits if t.data_location == onnx.TensorProto.EXTERNAL)
    print(f"\n{name}: producer {model_proto.producer_name} {model_proto.producer_version}, "
          f"ir_version {model_proto.ir_version}, opsets {opsets}")
    print(f"  {len(model_proto.graph.node)} nodes, {len(inits)} initializers ({ext} external), "
          f"functions {len(model_proto.functions)}")
    print("  inputs: " + ", ".join(f"{i.name}{dims(i)}" for i in model_proto.graph.input))
    print("  outputs: " + ", ".join(f"{o.name}{dims(o)}" for o in model_proto.graph.output))
    print("  ops: " + ", ".join(f"{k} {v}" for k, v in sorted(hist.items())))
    return opsets, hist


def dims(value_info):
    shape = value_info.type.tensor_type.shape
    return "[" + ",".join(d.dim_param if d.HasField("dim_param") else str(d.dim_value) for d in shape.dim) + "]"


def run_ort(path, feeds):
    """onnxruntime's output. The model goes in as bytes with its external data loaded back
    inline, because onnxruntime's shape inference refuses small external tensors (Reshape
    shapes, Unsqueeze axes), which the dynamo fixture deliberately has."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(onnx.load(path).SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return torch.from_numpy(sess.run(None, {k: feeds[k] for k in names})[0])


def export_legacy(module, args, path, opset, input_names, output_names, dynamic_axes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, path, dynamo=False, opset_version=opset,
                          input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)


def export_dynamo(module, args, path, data_name):
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(module, args, dynamo=True, input_names=["x", "t", "y"],
                                output_names=["out"],
                                dynamic_shapes={"x": {0: batch}, "t": {0: batch}, "y": {0: batch}})
    proto = program.model_proto
    data_path = os.path.join(os.path.dirname(path), data_name)
    if os.path.exists(data_path):
        os.remove(data_path)  # onnx appends to an existing data file
    # Force every initializer out, however small, so the fixture exercises external data.
    onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    size_threshold=0, location=data_name, convert_attribute=False)


def main():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    dico_torch.layer_norm_channels = layer_norm_channels_static  # DiCoBlock looks it up at call time
    summary = {}

    tiny = load_tiny()
    wrapped = tiny  # exported as is: DiCo.forward takes (x, t, y), initializers keep the official names
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(200))
    t = torch.tensor([250.0, 999.0], dtype=torch.float32)
    y = torch.tensor([10, 3], dtype=torch.int64)
    with torch.inference_mode():
        out = wrapped(x, t, y)
    feeds = {"x": x.numpy(), "t": t.numpy(), "y": y.numpy()}
    ref = {"x": x, "t": t, "y": y, "out": out}

    exports = [
        ("tiny_opset13.onnx", lambda p: export_legacy(wrapped, (x, t, y), p, 13, ["x", "t", "y"], ["out"], None)),
        ("tiny_opset17.onnx", lambda p: export_legacy(
            wrapped, (x, t, y), p, 17, ["x", "t", "y"], ["out"],
            {"x": {0: "N", 2: "H", 3: "W"}, "t": {0: "N"}, "y": {0: "N"}, "out": {0: "N", 2: "H", 3: "W"}})),
        ("tiny_dynamo.onnx", lambda p: export_dynamo(wrapped, (x, t, y), p, "tiny_dynamo.onnx.data")),
    ]
    for name, do_export in exports:
        path = os.path.join(HERE, name)
        do_export(path)
        proto = onnx.load(path, load_external_data=False)
        summary[name] = describe(name, proto)
        got = run_ort(path, feeds)
        err = rel_l2(got, out)
        print(f"  onnxruntime vs PyTorch relative L2: {err:.3e}")
        assert err < 1e-5, (name, err)
        ref["out_ort_" + name.removesuffix(".onnx")] = got

    save_st({k: v.contiguous() for k, v in ref.items()}, os.path.join(HERE, "tiny_onnx_ref.safetensors"),
            {"model": "tiny.safetensors", "x_seed": "200", "made_by": MADE_BY, "torch": torch.__version__,
             "onnxruntime": ort.__version__})

    # --- a small non-DiCo model: conv net + linear + a bare MatMul ------------------------
    class ConvNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(8)
            self.conv2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.bn2 = torch.nn.BatchNorm2d(16)
            self.fc = torch.nn.Linear(16, 10)
            self.proj = torch.nn.Parameter(torch.randn(10, 5, generator=torch.Generator().manual_seed(7)))

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            h = torch.relu(self.bn2(self.conv2(h)))
            h = torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, 1), 1)
            return self.fc(h) @ self.proj

    net = ConvNet()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding changes the weights
        for bn in (net.bn1, net.bn2):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.weight.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.num_features, generator=g) * 0.1)
    net.eval()
    cx = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(201))
    with torch.inference_mode():
        cout = net(cx)
    path = os.path.join(HERE, "convnet.onnx")
    export_legacy(net, (cx,), path, 17, ["x"], ["out"], {"x": {0: "N"}, "out": {0: "N"}})
    summary["convnet.onnx"] = describe("convnet.onnx", onnx.load(path))
    got = run_ort(path, {"x": cx.numpy()})
    err = rel_l2(got, cout)
    print(f"  onnxruntime vs PyTorch relative L2: {err:.3e}")
    assert err < 1e-5, err
    save_st({"x": cx.contiguous(), "out": cout.contiguous(), "out_ort": got.contiguous()},
            os.path.join(HERE, "convnet_ref.safetensors"),
            {"model": "convnet.onnx", "x_seed": "201", "made_by": MADE_BY, "torch": torch.__version__,
             "onnxruntime": ort.__version__})

    every = collections.Counter()
    for _, hist in summary.values():
        every.update(hist.keys())
    print("\nunion of ops over all exports: " + ", ".join(sorted(every)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
