"""Checks Formats/onnx.proto against the official ONNX schema of the installed `onnx` package.

Run from the repo root:  python3 scripts/check-onnx-proto.py
Needs protoc-c (Debian protobuf-c-compiler) and the `onnx` Python package; run by hand after
editing the .proto, never by CI. Every message, field and enum value declared in our subset
must exist in the official schema with the same number, type, label and (for messages)
type name, and every enum value must carry the official number. Fields we leave out are
listed, not errors.
"""

import os
import subprocess
import sys
import tempfile

import onnx
from google.protobuf import descriptor_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def ours():
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "onnx.desc")
        subprocess.run(["protoc-c", "-I" + os.path.join(ROOT, "Formats"), "--descriptor_set_out=" + out,
                        os.path.join(ROOT, "Formats", "onnx.proto")], check=True)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    return fds.file[0]


def official_messages():
    fdp = descriptor_pb2.FileDescriptorProto()
    onnx.ModelProto.DESCRIPTOR.file.CopyToProto(fdp)
    return fdp


def index(fdp):
    messages, enums = {}, {}

    def walk(prefix, msgs, ens):
        for e in ens:
            enums[prefix + e.name] = {v.name: v.number for v in e.value}
        for m in msgs:
            name = prefix + m.name
            messages[name] = m
            walk(name + ".", m.nested_type, m.enum_type)

    walk("", fdp.message_type, fdp.enum_type)
    return messages, enums


def main():
    mine_m, mine_e = index(ours())
    off_m, off_e = index(official_messages())
    errors, skipped = [], []
    for name, m in mine_m.items():
        o = off_m.get(name)
        if o is None:
            errors.append(f"message {name} is not in the official schema")
            continue
        of = {f.name: f for f in o.field}
        for f in m.field:
            g = of.get(f.name)
            if g is None:
                errors.append(f"{name}.{f.name} is not in the official schema")
                continue
            for attr in ("number", "type", "label"):
                if getattr(f, attr) != getattr(g, attr):
                    errors.append(f"{name}.{f.name}: {attr} {getattr(f, attr)} != official {getattr(g, attr)}")
            if f.type_name.split(".")[-1] != g.type_name.split(".")[-1]:
                errors.append(f"{name}.{f.name}: type {f.type_name} != official {g.type_name}")
            if f.options.packed != g.options.packed:
                errors.append(f"{name}.{f.name}: packed {f.options.packed} != official {g.options.packed}")
            if f.HasField("oneof_index") != g.HasField("oneof_index"):
                errors.append(f"{name}.{f.name}: oneof membership differs from the official schema")
        declared = {f.name for f in m.field}
        skipped += [f"{name}.{n} = {of[n].number}" for n in of if n not in declared]
    for name, values in mine_e.items():
        o = off_e.get(name)
        if o is None:
            errors.append(f"enum {name} is not in the official schema")
            continue
        for v, n in values.items():
            if o.get(v) != n:
                errors.append(f"enum {name}.{v} = {n}, official {o.get(v)}")
        skipped += [f"{name}.{v} = {n}" for v, n in o.items() if v not in values]
    print(f"checked {len(mine_m)} messages and {len(mine_e)} enums against onnx {onnx.__version__}")
    if skipped:
        print("not declared (skipped by the parser as unknown fields): " + ", ".join(skipped))
    for e in errors:
        print("ERROR: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
