"""Writes a large ONNX model with external data from a safetensors file, for timing the ONNX
importer against the safetensors reader on the same weights.

    python3 scripts/make_onnx_bench_model.py bench-out/XL.safetensors bench-out/XL.onnx
    python3 scripts/make_onnx_bench_model.py --embedded bench-out/L.safetensors bench-out/L-embedded.onnx

Writes OUT (the ModelProto: every tensor of IN as an initializer with data_location EXTERNAL,
and one Identity node from input x to output out, which is all the parser needs) and
OUT.data (the tensors' bytes, in the safetensors file's order, at the offsets the
initializers name). The data file is streamed from the mapped safetensors file in 64 MB
chunks, so this needs little memory even for DiCo-XL (2.8 GB). With --embedded the weights go
into raw_data inside OUT instead (protobuf's 2 GiB limit: DiCo-L, 1.86 GB, is the largest
preset that fits; this holds the model in memory about twice). Only onnx is used.
Run by hand; the benchmark numbers go in the report of issue 5.
"""

import json
import mmap
import os
import struct
import sys

import onnx
from onnx import TensorProto, helper

DTYPES = {"F32": TensorProto.FLOAT, "F16": TensorProto.FLOAT16, "BF16": TensorProto.BFLOAT16,
          "F64": TensorProto.DOUBLE, "I64": TensorProto.INT64, "I32": TensorProto.INT32,
          "I8": TensorProto.INT8, "U8": TensorProto.UINT8, "BOOL": TensorProto.BOOL}
CHUNK = 64 << 20


def main(src, dst, embedded=False):
    data_name = os.path.basename(dst) + ".data"
    data_path = os.path.join(os.path.dirname(os.path.abspath(dst)), data_name)
    with open(src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        start = 8 + n
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    header.pop("__metadata__", None)
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    initializers = []
    offset = 0
    with open(os.devnull if embedded else data_path, "wb") as out:
        for name, e in entries:
            b, end = e["data_offsets"]
            t = TensorProto()
            t.name = name
            t.data_type = DTYPES[e["dtype"]]
            t.dims.extend(e["shape"])
            if embedded:
                t.raw_data = mm[start + b:start + end]
                initializers.append(t)
                offset += end - b
                continue
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(end - b))):
                entry = t.external_data.add()
                entry.key, entry.value = k, v
            initializers.append(t)
            for p in range(start + b, start + end, CHUNK):
                out.write(mm[p:min(p + CHUNK, start + end)])
            offset += end - b
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, "H", "W"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, "H", "W"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["out"], name="identity")], "bench",
                              [x], [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="make_onnx_bench_model.py")
    with open(dst, "wb") as f:
        f.write(model.SerializeToString())
    print(f"{dst}: {len(initializers)} initializers, {offset:,} bytes in {dst if embedded else data_path}")


if __name__ == "__main__":
    args = sys.argv[1:]
    emb = "--embedded" in args
    args = [a for a in args if a != "--embedded"]
    sys.exit(main(args[0], args[1], embedded=emb))
