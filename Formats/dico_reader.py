#!/usr/bin/env python3
"""Reference reader for `.dico` files, version 1.x (Formats/DICO.md).

Written from the spec alone, with the standard library and numpy only, so that a `.dico`
file can be read and checked without dico-convert. The file is memory-mapped: opening a
multi-GB file reads its prefix and header, and tensor data is only touched when it is
checked (``verify=True``) or used.

    import dico_reader
    m = dico_reader.read("model.dico")          # raises dico_reader.DicoFormatError
    m.version, m.model["preset"], m.graph["nodes"][0]
    w = m.tensors["x_embedder.proj.weight"]      # float32 (dequantized / widened)
    q = m.raw["blocks.0.0.conv1.weight"]         # as stored (int8, uint16 for bf16, ...)

A generic ONNX graph (version 1.1, flag bit 0) has ``m.onnx_graph`` instead of ``m.graph``;
``m.onnx_initializers()`` gives each initializer in its ONNX dtype (int8 dequantized) and
``m.onnx_attribute(value)`` a node attribute's Python value, enough to rebuild the model with
onnx.helper (Formats/DICO.md, "Rebuilding the ONNX model"); this reader does not need onnx.

Command line::

    python3 Formats/dico_reader.py FILE.dico [--summary] [--dump-stats OUT.json] [--no-verify]

Exit status: 0 success; 65 the file is not a valid .dico file (``dico_reader: error: ...`` on
stderr); 74 the file cannot be read; 64 usage error.
"""

import argparse
import json
import math
import mmap
import os
import re
import struct
import sys
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = ["read", "DicoModel", "DicoFormatError", "TensorEntry", "MAGIC", "MAJOR", "MINOR"]

MAGIC = b"\x89DICO\r\n\x1a"
MAJOR = 1
MINOR = 1
# Prefix flag bit 0: the file holds a generic ONNX graph (`onnx_graph`), from version 1.1.
FLAG_ONNX_GRAPH = 1
# The op table of Formats/DICO.md: 1.0, then the fusions added in 1.1. A node with any other
# op is refused (naming it) rather than skipped: the graph would compute something else.
OPS = frozenset({
    "conv2d", "conv2d_activation", "linear", "channel_layer_norm", "modulate", "layer_norm_modulate", "gated_add",
    "gelu", "silu", "sigmoid", "global_avg_pool", "mul", "add", "slice", "concat", "pixel_shuffle", "pixel_unshuffle",
    "embedding", "timestep_embedding",
    "conv2d_gated_add", "channel_attention",
})
PREFIX_SIZE = 64
HEADER_OFFSET = 64
ALIGNMENT = 64

# Storage dtype tag -> numpy dtype of the stored elements (little-endian). bf16 is kept as its
# uint16 bit pattern; bool as numpy bool (one byte, 0 or 1).
STORAGE_DTYPES = {
    "f32": np.dtype("<f4"),
    "f16": np.dtype("<f2"),
    "bf16": np.dtype("<u2"),
    "f64": np.dtype("<f8"),
    "i8": np.dtype("i1"),
    "u8": np.dtype("u1"),
    "i16": np.dtype("<i2"),
    "i32": np.dtype("<i4"),
    "i64": np.dtype("<i8"),
    "bool": np.dtype("?"),
}
QUANT_SCHEMES = {"int8_symmetric_per_channel"}
GRAPH_SOURCES = {"input", "constant", "node"}
# A symbolic dimension: N, H or W, optionally scaled: "H/2", "2*W", "3*N/2".
_DIM_RE = re.compile(r"^(?:[1-9][0-9]*\*)?[NHW](?:/[1-9][0-9]*)?$")
_CRC_RE = re.compile(r"^[0-9a-f]{8}$")

# Elements per chunk when streaming over a tensor (CRCs, conversions, statistics).
_CHUNK_ELEMENTS = 1 << 22
_CHUNK_BYTES = 1 << 26


class DicoFormatError(Exception):
    """The file is not a valid `.dico` file; the message names the file (and the tensor)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class TensorEntry:
    """One validated entry of the tensor table."""

    __slots__ = ("name", "dtype", "shape", "offset", "length", "crc32", "quantization", "count")

    def __init__(self, name, dtype, shape, offset, length, crc32, quantization, count):
        self.name = name
        self.dtype = dtype                  # storage tag, e.g. "i8"
        self.shape = shape                  # tuple of ints
        self.offset = offset                # relative to data_offset
        self.length = length                # bytes
        self.crc32 = crc32                  # int
        self.quantization = quantization    # None or {"scheme", "axis", "scales"}
        self.count = count                  # element count

    def __repr__(self):
        q = f", quantization={self.quantization}" if self.quantization else ""
        return f"TensorEntry({self.name!r}, {self.dtype}, {list(self.shape)}, offset={self.offset}, length={self.length}{q})"


def _is_uint(v):
    """A JSON non-negative integer (bool is an int in Python, but not in JSON)."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _one_of(v, choices):
    """`v` is a string among `choices` (JSON values of other kinds may be unhashable)."""
    return isinstance(v, str) and v in choices


def _strict_pairs(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


class _RawTensors(Mapping):
    """name -> stored numpy array: a read-only, zero-copy view of the mapping."""

    def __init__(self, owner):
        self._m = owner

    def __getitem__(self, name):
        return self._m._raw(self._m._entry(name))

    def __iter__(self):
        return iter(self._m._index)

    def __len__(self):
        return len(self._m._index)


class _FloatTensors(Mapping):
    """name -> float32 array: f32 as a zero-copy view; f16 and bf16 widened; int8 quantized
    tensors dequantized (q * scales along the axis). f64 stays float64 and integer/bool tensors
    are returned as stored. Computed on each access (nothing is cached)."""

    def __init__(self, owner):
        self._m = owner

    def __getitem__(self, name):
        return self._m._value(self._m._entry(name))

    def __iter__(self):
        return iter(self._m._index)

    def __len__(self):
        return len(self._m._index)


class DicoModel:
    """A validated, memory-mapped `.dico` file.

    Attributes: ``path``; ``version`` (major, minor); ``flags``; ``model``, ``provenance`` and
    ``graph`` (the header's objects as parsed; ``graph`` is None for a generic ONNX graph, whose
    ``onnx_graph`` is set instead, else None); ``header`` (the whole JSON header); ``entries`` (the
    tensor table, a list of TensorEntry in data order); ``tensors`` and ``raw`` (read-only
    mappings name -> numpy array, see _FloatTensors and _RawTensors); ``data_offset``.
    Arrays from ``raw`` (and f32 ones from ``tensors``) are views of the mapping: keep the
    model open while they are used. ``close()`` (or ``with``) unmaps it once no view is left.
    """

    def __init__(self, path, verify=True):
        self.path = os.fspath(path)
        self._mm = None
        self._fd = None
        try:
            self._open(verify)
        except BaseException:
            try:
                self.close()
            except BufferError:   # a view is still referenced (by the traceback): let GC unmap
                self._mm = None
            raise

    # -- errors --------------------------------------------------------------------------

    def _bad(self, message):
        return DicoFormatError(f"{self.path}: {message}")

    def _tbad(self, name, message):
        return DicoFormatError(f"{self.path}: tensor '{name}': {message}")

    # -- opening -------------------------------------------------------------------------

    def _open(self, verify):
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._fd = fd
        size = os.fstat(fd).st_size
        head = os.pread(fd, PREFIX_SIZE, 0)

        # 1. Magic.
        if head[:8] != MAGIC:
            if not head:
                raise self._bad("the file is empty, not a .dico file")
            if len(head) < 8 and MAGIC.startswith(head) and head:
                raise self._bad(f"file is {size} bytes, shorter than the 8-byte .dico magic (truncated?)")
            if head.startswith(b"\x89DICO\n") or head.startswith(b"\x89DICO\r\r\n"):
                raise self._bad("not a .dico file: the magic bytes' CR LF was altered (the file went through a text-mode transfer)")
            raise self._bad("not a .dico file (bad magic bytes)")
        # 2. Major version (before anything else: another major may lay the prefix out otherwise).
        if len(head) < 10:
            raise self._bad(f"file is {size} bytes, shorter than the 64-byte .dico prefix (truncated?)")
        major = struct.unpack_from("<H", head, 8)[0]
        minor = struct.unpack_from("<H", head, 10)[0] if len(head) >= 12 else None
        if major != MAJOR:
            written = f"{major}.{minor}" if minor is not None else f"{major}.x"
            why = " (written by a newer writer)" if major > MAJOR else ""
            raise self._bad(f"file is .dico version {written}; this reader reads version {MAJOR}.x only{why}")
        if len(head) < PREFIX_SIZE:
            raise self._bad(f"file is {size} bytes, shorter than the 64-byte .dico prefix (truncated?)")
        (flags, header_offset, header_length, data_offset, data_length, file_length,
         header_crc, prefix_crc) = struct.unpack_from("<IQQQQQII", head, 12)
        # 3. Flags: bit 0 (an ONNX graph, from 1.1) is the only one defined.
        if flags & ~FLAG_ONNX_GRAPH:
            raise self._bad(f"unknown flags 0x{flags:x} in the prefix")
        if flags & FLAG_ONNX_GRAPH and (minor is None or minor < 1):
            raise self._bad(f"unknown flags 0x{flags:x} in the prefix of a version {major}.{minor} file (flag bit 0, an ONNX graph, needs version 1.1 or later)")
        self.flags = flags
        # 4. Prefix CRC.
        if zlib.crc32(head[:60]) != prefix_crc:
            raise self._bad("the 64-byte prefix is corrupt (CRC mismatch)")
        # 5. Declared length against the actual size.
        if file_length != size:
            if size < file_length:
                raise self._bad(f"file is truncated: {size} bytes, the prefix says {file_length}")
            raise self._bad(f"file has {size - file_length} trailing byte{'' if size - file_length == 1 else 's'} after the {file_length} the prefix declares")
        # 6. Header bounds.
        if not (header_offset == HEADER_OFFSET and data_offset % ALIGNMENT == 0
                and header_offset + header_length <= data_offset
                and data_offset + data_length == file_length):
            raise self._bad(f"inconsistent prefix: header at {header_offset} ({header_length} bytes), "
                            f"data at {data_offset} ({data_length} bytes), file {file_length} bytes")
        self.version = (major, minor)
        self.data_offset = data_offset
        self.data_length = data_length
        self.file_length = file_length

        self._mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        os.close(fd)
        self._fd = None
        header = self._mm[header_offset:header_offset + header_length]
        # 7. Header CRC, then the padding up to the data section.
        if zlib.crc32(header) != header_crc:
            raise self._bad("the JSON header is corrupt (CRC mismatch)")
        if self._mm[header_offset + header_length:data_offset].strip(b" "):
            raise self._bad("the bytes between the JSON header and the data section are not all spaces (0x20)")

        # 8. The JSON header: UTF-8, one object, no duplicate keys.
        try:
            text = header.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._bad(f"the JSON header is not valid UTF-8 (byte {e.start})") from None
        try:
            root = json.loads(text, object_pairs_hook=_strict_pairs, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise self._bad(f"the JSON header is not valid JSON: {e}") from None
        if not isinstance(root, dict):
            raise self._bad("the JSON header is not a JSON object")
        self.header = root
        if root.get("format") != "dico":
            raise self._bad("the header's 'format' is not \"dico\"")
        if root.get("version") != [major, minor] or not all(_is_uint(v) for v in root["version"]):
            raise self._bad(f"the header's 'version' {json.dumps(root.get('version'))} does not match the prefix's {major}.{minor}")
        onnx = bool(flags & FLAG_ONNX_GRAPH)
        graph_key, other_key = ("onnx_graph", "graph") if onnx else ("graph", "onnx_graph")
        if other_key in root:
            raise self._bad(f"the header has '{other_key}', but flag bit 0 says the graph is {'an ONNX graph' if onnx else 'a DiCo graph'}")
        for key, kind in (("model", dict), (graph_key, dict), ("tensors", list), ("provenance", dict)):
            if key not in root:
                raise self._bad(f"the header has no '{key}'")
            if not isinstance(root[key], kind):
                raise self._bad(f"the header's '{key}' is not a JSON {'object' if kind is dict else 'array'}")
        self.model = root["model"]
        self.provenance = root["provenance"]
        self.graph = None if onnx else root["graph"]
        self.onnx_graph = root["onnx_graph"] if onnx else None

        # 9. The tensor table.
        self._read_table(root["tensors"])
        self.raw = _RawTensors(self)
        self.tensors = _FloatTensors(self)
        if onnx:
            self._check_onnx_graph()
        else:
            self._check_graph()

        # 10. Contents: CRCs, value rules, zero bytes between tensors.
        if verify:
            self._verify_data()

    def _read_table(self, table):
        entries, index = [], {}
        for i, item in enumerate(table):
            if not isinstance(item, dict):
                raise self._bad(f"tensor entry {i} is not a JSON object")
            name = item.get("name")
            if not isinstance(name, str):
                raise self._bad(f"tensor entry {i} has no 'name' string")
            if name in index:
                raise self._tbad(name, "appears twice in the tensor table")
            tag = item.get("dtype")
            if not _one_of(tag, STORAGE_DTYPES):
                raise self._tbad(name, f"unknown dtype {json.dumps(tag) if tag is not None else '(missing)'}")
            shape = item.get("shape")
            if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
                raise self._tbad(name, "'shape' is not an array of non-negative integers")
            offset, length = item.get("offset"), item.get("length")
            if not (_is_uint(offset) and _is_uint(length)):
                raise self._tbad(name, "'offset' or 'length' is missing or not a non-negative integer")
            count = math.prod(shape)
            nbytes = count * STORAGE_DTYPES[tag].itemsize
            if nbytes != length:
                raise self._tbad(name, f"shape {shape} x {tag} is {nbytes} bytes but 'length' is {length}")
            if offset % ALIGNMENT:
                raise self._tbad(name, f"offset {offset} is not {ALIGNMENT}-byte aligned")
            if offset + length > self.data_length:
                raise self._tbad(name, f"bytes [{offset}, {offset + length}) run past the end of the data section ({self.data_length} bytes)")
            crc = item.get("crc32")
            if not isinstance(crc, str) or not _CRC_RE.match(crc):
                raise self._tbad(name, "'crc32' is not 8 lower-case hex digits")
            quant = None
            if "quantization" in item:
                q = item["quantization"]
                if not isinstance(q, dict):
                    raise self._tbad(name, "'quantization' is not a JSON object")
                if not _one_of(q.get("scheme"), QUANT_SCHEMES):
                    raise self._tbad(name, f"unknown quantization scheme {json.dumps(q.get('scheme'))}")
                axis, scales = q.get("axis"), q.get("scales")
                if not (_is_uint(axis) and axis < len(shape) and isinstance(scales, str)):
                    raise self._tbad(name, "quantization needs an 'axis' inside the shape and a 'scales' tensor name")
                if tag != "i8":
                    raise self._tbad(name, f"{q['scheme']} needs dtype i8, not {tag}")
                quant = {"scheme": q["scheme"], "axis": axis, "scales": scales}
            index[name] = len(entries)
            entries.append(TensorEntry(name, tag, tuple(shape), offset, length, int(crc, 16), quant, count))

        # Data order, no overlap, and the data section ends where the last tensor ends.
        end, prev = 0, None
        for e in entries:
            if e.offset < end:
                if e.offset < prev.offset:
                    raise self._bad(f"the tensor table is not in data order: '{e.name}' (offset {e.offset}) follows '{prev.name}' (offset {prev.offset})")
                raise self._bad(f"tensors '{prev.name}' and '{e.name}' overlap")
            end, prev = e.offset + e.length, e
        if end != self.data_length:
            raise self._bad(f"the data section is {self.data_length} bytes but the last tensor ends at {end}")

        for e in entries:
            q = e.quantization
            if q is None:
                continue
            s = entries[index[q["scales"]]] if q["scales"] in index else None   # a str (checked above)
            want = (e.shape[q["axis"]],)
            if s is None or s.dtype != "f32" or s.shape != want or s.quantization is not None:
                raise self._tbad(e.name, f"its scales '{q['scales']}' must be an f32 tensor of shape [{want[0]}] without quantization")
        self.entries = entries
        self._index = index

    def _check_graph(self):
        """The graph's structure: what a consumer relies on to walk it (indices in range,
        constants naming table entries, nodes in topological order)."""
        g = self.graph
        for key in ("values", "nodes", "inputs", "outputs"):
            if not isinstance(g.get(key), list):
                raise self._bad("the graph needs 'values', 'nodes', 'inputs' and 'outputs' arrays")
        values, nodes = g["values"], g["nodes"]
        for i, v in enumerate(values):
            if not isinstance(v, dict):
                raise self._bad(f"graph value {i} is not a JSON object")
            name, src, shape = v.get("name"), v.get("source"), v.get("shape")
            if not isinstance(name, str) or not _one_of(v.get("dtype"), STORAGE_DTYPES) or not isinstance(shape, list) \
                    or not _one_of(src, GRAPH_SOURCES):
                raise self._bad(f"graph value {i} needs 'name', a known 'dtype', 'shape' and a 'source' of input, constant or node")
            for d in shape:
                if not (_is_uint(d) or (isinstance(d, str) and _DIM_RE.match(d))):
                    raise self._bad(f"graph value {i} '{name}' has an unreadable shape dimension {json.dumps(d)}")
            if src == "constant" and not _one_of(v.get("tensor"), self._index):
                raise self._bad(f"graph constant '{name}' names no tensor of the table")

        def ref(k, what):
            if not _is_uint(k) or k >= len(values):
                raise self._bad(f"{what} refers to a value that does not exist ({json.dumps(k)})")
            return k

        ready = {i for i, v in enumerate(values) if v["source"] != "node"}
        for n, node in enumerate(nodes):
            if not isinstance(node, dict) or not isinstance(node.get("op"), str) or not isinstance(node.get("name"), str) \
                    or not isinstance(node.get("inputs"), list) or not isinstance(node.get("attrs", {}), dict):
                raise self._bad(f"node {n} needs 'op', 'name', 'inputs' and a valid 'output'")
            what = f"node '{node['name']}'"
            if node["op"] not in OPS:
                raise self._bad(f"{what}: unknown op {json.dumps(node['op'])}")
            for k in node["inputs"]:
                if ref(k, what) not in ready:
                    raise self._bad(f"{what} uses value {k} '{values[k]['name']}' before it is computed (nodes are not in topological order)")
            out = ref(node.get("output"), what)
            if values[out]["source"] != "node" or out in ready:
                raise self._bad(f"{what}: its output value {out} '{values[out]['name']}' is not a node value or is produced twice")
            ready.add(out)
        for i, v in enumerate(values):
            if i not in ready:
                raise self._bad(f"graph value {i} '{v['name']}' is no node's output")
        for k in g["inputs"]:
            if values[ref(k, "the graph inputs")]["source"] != "input":
                raise self._bad(f"graph input {k} '{values[k]['name']}' is not an input value")
        for k in g["outputs"]:
            ref(k, "the graph outputs")

    def _check_onnx_graph(self):
        """A generic ONNX graph's structure: every name resolves (initializers and tensor
        attributes to table entries, node inputs to earlier values, graph outputs to some
        value), nothing is defined twice, attributes have one known kind."""
        g = self.onnx_graph
        for key, kind in (("ir_version", int), ("producer_name", str), ("producer_version", str), ("opset_imports", list),
                          ("name", str), ("inputs", list), ("outputs", list), ("initializers", list), ("nodes", list)):
            if not isinstance(g.get(key), kind) or isinstance(g.get(key), bool):
                raise self._bad(f"onnx_graph: '{key}' is missing or not a JSON {kind.__name__}")
        defined = set()
        for i, init in enumerate(g["initializers"]):
            name = init.get("name") if isinstance(init, dict) else None
            if not isinstance(name, str) or not _one_of(init.get("dtype"), STORAGE_DTYPES):
                raise self._bad(f"onnx_graph: initializer {i} needs a 'name' and a known 'dtype'")
            if name not in self._index:
                raise self._bad(f"onnx_graph: initializer '{name}' names no tensor of the table")
            e = self.entries[self._index[name]]
            stored = "f32" if e.quantization else e.dtype
            if stored != init["dtype"] and not (init["dtype"] == "f32" and e.dtype in ("f16", "bf16", "f64")):
                raise self._bad(f"onnx_graph: initializer '{name}' is declared {init['dtype']} but its tensor stores {e.dtype}")
            if name in defined:
                raise self._bad(f"onnx_graph: initializer '{name}' is listed twice")
            defined.add(name)
        for what in ("inputs", "outputs"):
            for i, v in enumerate(g[what]):
                if not isinstance(v, dict) or not isinstance(v.get("name"), str) or "dtype" not in v or "shape" not in v:
                    raise self._bad(f"onnx_graph: graph {what[:-1]} {i} needs 'name', 'dtype' and 'shape'")
        for v in g["inputs"]:
            if v["name"] in defined:
                raise self._bad(f"onnx_graph: graph input '{v['name']}' is also an initializer or listed twice")
            defined.add(v["name"])
        for k, node in enumerate(g["nodes"]):
            if not isinstance(node, dict) or not all(isinstance(node.get(key), str) for key in ("op_type", "domain", "name")) \
                    or not all(isinstance(node.get(key), list) and all(isinstance(x, str) for x in node[key]) for key in ("inputs", "outputs")) \
                    or not isinstance(node.get("attributes"), dict):
                raise self._bad(f"onnx_graph: node {k} needs 'op_type', 'domain', 'name', 'inputs', 'outputs' and 'attributes'")
            label = f"node '{node['name']}' ({node['op_type']})"
            for j, name in enumerate(node["inputs"]):
                if name and name not in defined:
                    raise self._bad(f"onnx_graph: {label}: input {j} '{name}' is not an initializer, a graph input or the output of an earlier node")
            for key, value in node["attributes"].items():
                if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in _ATTRIBUTE_KINDS:
                    raise self._bad(f"onnx_graph: {label}: attribute '{key}' is not an object with one kind key")
                if "tensor" in value and value["tensor"] not in self._index:
                    raise self._bad(f"onnx_graph: {label}: attribute '{key}' names tensor {json.dumps(value['tensor'])}, which is not in the table")
            for name in node["outputs"]:
                if name and name in defined:
                    raise self._bad(f"onnx_graph: {label}: output '{name}' is already defined")
                defined.add(name)
        for v in g["outputs"]:
            if v["name"] not in defined:
                raise self._bad(f"onnx_graph: graph output '{v['name']}' is not produced by any node, input or initializer")

    def onnx_initializers(self):
        """{name: numpy array} of a generic ONNX graph's initializers, in graph order, each in
        its ONNX dtype: int8 ones dequantized, fp16/bf16-stored float32 ones widened (as
        ``tensors`` gives them), others as stored."""
        out = {}
        for init in self.onnx_graph["initializers"]:
            e = self._entry(init["name"])
            a = self.tensors[e.name] if init["dtype"] == "f32" else self.raw[e.name]
            out[e.name] = a if init["dtype"] != "f32" or a.dtype == np.float32 else a.astype(np.float32)
        return out

    def onnx_attribute(self, value):
        """The Python value of one `onnx_graph` node attribute: float, int, str, a numpy array
        (a tensor, as stored), or a list of floats, ints or strs."""
        (kind, v), = value.items()
        if kind == "float":
            return _json_float(v)
        if kind == "floats":
            return [_json_float(x) for x in v]
        if kind == "tensor":
            return self.raw[v]
        return v

    def _verify_data(self):
        data = np.frombuffer(self._mm, np.uint8, count=self.data_length, offset=self.data_offset) \
            if self.data_length else np.empty(0, np.uint8)
        end = 0
        for e in self.entries:
            if data[end:e.offset].any():
                raise self._bad(f"non-zero bytes between tensors before '{e.name}' (data bytes [{end}, {e.offset}))")
            crc = 0
            for a in range(e.offset, e.offset + e.length, _CHUNK_BYTES):
                crc = zlib.crc32(data[a:min(a + _CHUNK_BYTES, e.offset + e.length)], crc)
            if crc != e.crc32:
                raise self._tbad(e.name, f"is corrupt (CRC-32 mismatch: the bytes give {crc:08x}, the header says {e.crc32:08x})")
            if e.dtype == "bool" or e.quantization is not None:
                for a in range(e.offset, e.offset + e.length, _CHUNK_BYTES):
                    c = data[a:min(a + _CHUNK_BYTES, e.offset + e.length)]
                    if e.dtype == "bool" and np.any(c > 1):
                        raise self._tbad(e.name, "a bool value is neither 0 nor 1")
                    if e.quantization is not None and np.any(c == 0x80):
                        raise self._tbad(e.name, "an int8 quantized value is -128, outside [-127, 127]")
            self._release(self.data_offset + e.offset, e.length)
            end = e.offset + e.length

    # -- tensor access -------------------------------------------------------------------

    def _entry(self, name):
        i = self._index.get(name)
        if i is None:
            raise KeyError(name)
        return self.entries[i]

    def entry(self, name):
        """The TensorEntry of `name` (KeyError if absent)."""
        return self._entry(name)

    def _raw(self, e, dtype=None):
        dt = dtype or STORAGE_DTYPES[e.dtype]
        if e.count == 0:
            a = np.empty(e.shape, dt)
            a.flags.writeable = False
            return a
        return np.frombuffer(self._mm, dtype=dt, count=e.count, offset=self.data_offset + e.offset).reshape(e.shape)

    def float32_chunks(self, name, max_elements=_CHUNK_ELEMENTS):
        """The tensor's values converted to float32 as in Swift's TensorData.floats()
        (dequantized, widened or narrowed), in row-major order, as flat chunks of at most
        about `max_elements` (so a multi-GB tensor is never held whole)."""
        e = self._entry(name)
        raw = self._raw(e).reshape(-1)
        q = e.quantization
        if q is not None:
            axis, dims = q["axis"], e.shape
            n_axis, inner = dims[axis], math.prod(dims[axis + 1:])
            scales = self._raw(self._entry(q["scales"])).reshape(-1)
            rows = raw.reshape(-1, inner) if inner else raw.reshape(-1, 1)[:0]
            step = max(1, max_elements // max(inner, 1))
            for r in range(0, rows.shape[0], step):
                block = rows[r:r + step]
                c = np.arange(r, r + block.shape[0]) % n_axis
                yield (block.astype(np.float32) * scales[c][:, None]).reshape(-1)
            return
        for a in range(0, e.count, max_elements):
            yield _to_float32(e.dtype, raw[a:a + max_elements])

    def _value(self, e):
        if e.dtype == "f32" and e.quantization is None:
            return self._raw(e)
        if e.quantization is None and e.dtype not in ("f16", "bf16"):
            return self._raw(e)   # f64, integers, bool: as stored
        out = np.empty(e.count, np.float32)
        k = 0
        for chunk in self.float32_chunks(e.name):
            out[k:k + chunk.size] = chunk
            k += chunk.size
        return out.reshape(e.shape)

    def _release(self, offset, length):
        """Drops a range's pages from the resident set (the file is read-only; they come
        back from the page cache when needed)."""
        if self._mm is None or not hasattr(self._mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or length == 0:
            return
        page = mmap.PAGESIZE
        a = offset // page * page
        b = min(-(-(offset + length) // page) * page, len(self._mm))
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, a, b - a)
        except (OSError, ValueError):
            pass

    def stats(self):
        """{name: {"dtype", "shape", "sum", "sumsq", "first"}} in table order: float64 sums
        of the float32 values (see float32_chunks) and of their squares, and the first 4."""
        out = {}
        for e in self.entries:
            s = ss = 0.0
            first = []
            for chunk in self.float32_chunks(e.name):
                c = chunk.astype(np.float64)
                s += float(c.sum())
                ss += float((c * c).sum())
                if len(first) < 4:
                    first += [float(x) for x in chunk[:4 - len(first)]]
            self._release(self.data_offset + e.offset, e.length)
            out[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "sum": s, "sumsq": ss, "first": first}
        return out

    def summary(self):
        """A short human-readable description."""
        counts, nbytes = {}, {}
        for e in self.entries:
            key = e.dtype + ("/" + e.quantization["scheme"] if e.quantization else "")
            counts[key] = counts.get(key, 0) + 1
            nbytes[key] = nbytes.get(key, 0) + e.length
        cfg = self.model.get("config") if isinstance(self.model.get("config"), dict) else {}
        lines = [
            f"file: {self.path} ({self.file_length} bytes)",
            f"format: .dico {self.version[0]}.{self.version[1]}",
            f"model: {self.model.get('architecture', '?')} preset {self.model.get('preset', '?')}"
            + (f", hidden_size {cfg['hidden_size']}" if "hidden_size" in cfg else "")
            + (f", {self.model['parameters']} parameters" if "parameters" in self.model else ""),
            f"graph: {len(self.graph['values'])} values, {len(self.graph['nodes'])} nodes" if self.graph is not None else
            f"onnx graph: {len(self.onnx_graph['nodes'])} nodes, {len(self.onnx_graph['initializers'])} initializers, "
            f"opsets {', '.join(str(o.get('domain') or 'ai.onnx') + ' ' + str(o.get('version')) for o in self.onnx_graph['opset_imports'])}",
            f"tensors: {len(self.entries)}",
        ]
        for key in sorted(counts):
            lines.append(f"  {key}: {counts[key]} tensors, {nbytes[key]} bytes")
        return "\n".join(lines)

    # -- lifetime ------------------------------------------------------------------------

    def close(self):
        """Unmaps the file. Fails (BufferError) while arrays from `raw`/`tensors` are alive."""
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.close()
        except BufferError:
            pass
        return False


_ATTRIBUTE_KINDS = {"float", "int", "string", "tensor", "floats", "ints", "strings"}
_FLOAT_WORDS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _json_float(v):
    """A float attribute value: a JSON number, or "NaN", "Infinity", "-Infinity"."""
    return _FLOAT_WORDS[v] if isinstance(v, str) else float(v)


def _to_float32(tag, a):
    """Stored values of dtype `tag` (flat numpy array) as float32."""
    if tag == "f32":
        return a
    if tag == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def read(path, verify=True):
    """Opens and validates the `.dico` file at `path`; with `verify`, also every tensor's
    CRC-32, the value rules (quantized int8 in [-127, 127], bool 0 or 1) and the zero bytes
    between tensors. Without it no tensor data is read at open (and none is checked).

    Raises DicoFormatError for an invalid file, OSError when it cannot be read."""
    return DicoModel(path, verify=verify)


# -- command line --------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"dico_reader: error: {message}", file=sys.stderr)
        sys.exit(64)


def main(argv=None):
    p = _Parser(prog="dico_reader.py", description="Read and check a .dico file (Formats/DICO.md).")
    p.add_argument("file", help="the .dico file")
    p.add_argument("--summary", action="store_true", help="print a summary (the default without --dump-stats)")
    p.add_argument("--dump-stats", metavar="OUT.json", help="write per-tensor dtype, shape, sum, sum of squares and first values")
    p.add_argument("--no-verify", action="store_true", help="skip the tensor CRC and value checks")
    args = p.parse_args(argv)
    try:
        with read(args.file, verify=not args.no_verify) as m:
            if args.summary or not args.dump_stats:
                print(m.summary())
            if args.dump_stats:
                stats = m.stats()
                tmp = args.dump_stats + ".tmp"
                with open(tmp, "w", encoding="utf-8") as f:
                    json.dump(stats, f, indent=1, allow_nan=True)
                    f.write("\n")
                os.replace(tmp, args.dump_stats)
    except DicoFormatError as e:
        print(f"dico_reader: error: {e}", file=sys.stderr)
        return 65
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"dico_reader: error: {where}{e.strerror or e}", file=sys.stderr)
        return 74
    return 0


if __name__ == "__main__":
    sys.exit(main())
