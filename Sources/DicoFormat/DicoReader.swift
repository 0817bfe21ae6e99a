import Dispatch
import DicoCore
import DicoIR
import DicoONNX

/// One entry of a `.dico` tensor table.
public struct DicoTensorEntry: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Start relative to the data section.
    public let offset: Int
    public let length: Int
    public let crc32: UInt32
    public let quantization: (scheme: Quantization.Scheme, axis: Int, scales: String)?
}

/// A validated, memory-mapped `.dico` file (Formats/DICO.md). Tensors are zero-copy views;
/// the graph's constants point at them, quantized ones carrying their scales.
public final class DicoFile: @unchecked Sendable {
    public let path: String
    public let file: MappedFile
    public let major: Int, minor: Int
    /// The `model` object of the header.
    public let model: JSONValue
    /// The `provenance` object of the header.
    public let provenance: JSONValue
    public let tensors: [DicoTensorEntry]
    /// The DiCo graph; empty when the file holds a generic ONNX graph (`onnxModel`).
    public let graph: Graph
    /// The generic ONNX graph of a version 1.1 file with flag bit 0 (Formats/DICO.md, "Generic
    /// ONNX graphs"), ready for `ONNXInterpreter`: its path is this file's, its initializers
    /// and tensor attributes are zero-copy views of the table (quantized ones carrying their
    /// scales). nil for a DiCo file.
    public let onnxModel: ONNXModel?
    public let dataOffset: Int
    private let index: [String: Int]

    /// Whether `path` starts with the `.dico` magic (used to pick a reader).
    public static func hasMagic(_ path: String) -> Bool {
        MappedFile.prefix(of: path, count: 8) == DicoFormatInfo.magic
    }

    /// Opens and validates `path`: prefix, version, lengths, header checksum, tensor table,
    /// graph and, when `verifyChecksums`, every tensor's CRC (in parallel).
    /// - Throws: `DicoError.io` when the file cannot be read; `DicoError.invalid(path, ...)`
    ///   naming the damaged part or tensor and the rule broken.
    public init(path: String, verifyChecksums: Bool = true) throws {
        self.path = path
        let file = try MappedFile(path: path)
        self.file = file
        func bad(_ m: String) -> DicoError { DicoError.invalid(path, m) }
        guard file.size >= 64 else { throw bad("file is \(file.size) bytes, shorter than the 64-byte .dico prefix (truncated?)") }
        let p = file.bytes(offset: 0, count: 64)
        guard Array(p[0..<8]) == DicoFormatInfo.magic else { throw bad("not a .dico file (bad magic bytes)") }
        func u(_ at: Int, _ size: Int) -> UInt64 { (0..<size).reduce(UInt64(0)) { $0 | UInt64(p[at + $1]) << (8 * UInt64($1)) } }
        major = Int(u(8, 2))
        minor = Int(u(10, 2))
        guard major == Int(DicoFormatInfo.major) else {
            throw bad("file is .dico version \(major).\(minor); this dico-convert reads version \(DicoFormatInfo.major).x only\(major > Int(DicoFormatInfo.major) ? " (a newer dico-convert wrote it)" : "")")
        }
        let flags = UInt32(u(12, 4))
        guard flags & ~DicoFormatInfo.onnxGraphFlag == 0 else { throw bad("unknown flags 0x\(String(flags, radix: 16)) in the prefix") }
        let isONNXGraph = flags & DicoFormatInfo.onnxGraphFlag != 0
        guard !isONNXGraph || minor >= Int(DicoFormatInfo.onnxGraphMinor) else {
            throw bad("unknown flags 0x\(String(flags, radix: 16)) in the prefix of a version \(major).\(minor) file (flag bit 0, an ONNX graph, needs version 1.\(DicoFormatInfo.onnxGraphMinor) or later)")
        }
        guard UInt32(u(60, 4)) == CRC32.checksum(UnsafeRawBufferPointer(rebasing: p[0..<60])) else {
            throw bad("the 64-byte prefix is corrupt (CRC mismatch)")
        }
        let headerOffset = u(16, 8), headerLength = u(24, 8), dataOffset = u(32, 8), dataLength = u(40, 8), fileLength = u(48, 8)
        guard fileLength == UInt64(file.size) else {
            throw bad(UInt64(file.size) < fileLength ? "file is truncated: \(file.size) bytes, the prefix says \(fileLength)"
                                                     : "file has \(UInt64(file.size) - fileLength) trailing bytes after the \(fileLength) the prefix declares")
        }
        guard headerOffset == UInt64(DicoFormatInfo.headerOffset), headerLength <= fileLength, dataOffset % 64 == 0,
              dataOffset >= headerOffset + headerLength, dataLength <= fileLength, dataOffset == fileLength - dataLength else {
            throw bad("inconsistent prefix: header at \(headerOffset) (\(headerLength) bytes), data at \(dataOffset) (\(dataLength) bytes), file \(fileLength) bytes")
        }
        self.dataOffset = Int(dataOffset)
        let header = file.bytes(offset: Int(headerOffset), count: Int(headerLength))
        guard UInt32(u(56, 4)) == CRC32.checksum(header) else { throw bad("the JSON header is corrupt (CRC mismatch)") }
        let root: JSONValue
        do { root = try StrictJSON.parse(header) } catch { throw bad("the JSON header is not valid JSON: \(error)") }
        let top = try HeaderObject(root, "the header", path)
        guard top.string("format") == "dico" else { throw bad("the header's 'format' is not \"dico\"") }
        guard case let .array(v)? = top.value("version"), v.count == 2, v[0].exactNonNegativeInt == major, v[1].exactNonNegativeInt == minor else {
            throw bad("the header's 'version' does not match the prefix's \(major).\(minor)")
        }
        model = try top.require("model")
        provenance = try top.require("provenance")
        guard provenance.objectMembers != nil, model.objectMembers != nil else { throw bad("the header's 'model' and 'provenance' must be objects") }
        let padding = file.bytes(offset: Int(headerOffset + headerLength), count: Int(dataOffset - headerOffset - headerLength))
        guard padding.allSatisfy({ $0 == 0x20 }) else { throw bad("the header padding holds bytes other than spaces") }

        // Tensor table.
        guard let table = try top.require("tensors").arrayValue else { throw bad("'tensors' is not an array") }
        var entries: [DicoTensorEntry] = []
        var index: [String: Int] = [:]
        for (i, item) in table.enumerated() {
            let o = try HeaderObject(item, "tensor entry \(i)", path)
            guard let name = o.string("name") else { throw bad("tensor entry \(i) has no 'name'") }
            func tbad(_ m: String) -> DicoError { bad("tensor '\(name)': \(m)") }
            guard index[name] == nil else { throw tbad("appears twice in the tensor table") }
            guard let tag = o.string("dtype"), let dtype = DType(rawValue: tag) else { throw tbad("unknown dtype \(o.string("dtype").map { "'\($0)'" } ?? "(missing)")") }
            guard let dims = o.value("shape")?.arrayValue, let shape = Optional(dims.compactMap(\.exactNonNegativeInt)), shape.count == dims.count else {
                throw tbad("'shape' is not an array of non-negative integers")
            }
            guard let offset = o.value("offset")?.exactNonNegativeInt, let length = o.value("length")?.exactNonNegativeInt else {
                throw tbad("'offset' or 'length' is missing or not a non-negative integer")
            }
            var count = 1
            for d in shape {
                let (m, overflow) = count.multipliedReportingOverflow(by: d)
                guard !overflow else { throw tbad("shape \(shape) overflows") }
                count = m
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, bytes == length else { throw tbad("shape \(shape) x \(tag) is \(overflow ? "too many" : "\(bytes)") bytes but 'length' is \(length)") }
            guard offset % 64 == 0 else { throw tbad("offset \(offset) is not 64-byte aligned") }
            guard offset <= Int(dataLength), length <= Int(dataLength) - offset else {
                throw tbad("bytes [\(offset), \(offset + length)) run past the end of the data section (\(dataLength) bytes)")
            }
            guard let hex = o.string("crc32"), hex.utf8.count == 8, hex.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }),
                  let crc = UInt32(hex, radix: 16) else { throw tbad("'crc32' is not 8 lower-case hex digits") }
            var quant: (scheme: Quantization.Scheme, axis: Int, scales: String)?
            if let q = o.value("quantization") {
                let qo = try HeaderObject(q, "the quantization of tensor '\(name)'", path)
                guard let s = qo.string("scheme"), let scheme = Quantization.Scheme(rawValue: s) else { throw tbad("unknown quantization scheme") }
                guard let axis = qo.value("axis")?.exactNonNegativeInt, axis < shape.count, let scales = qo.string("scales") else {
                    throw tbad("quantization needs an 'axis' inside the shape and a 'scales' tensor name")
                }
                guard dtype == .i8 else { throw tbad("\(scheme.rawValue) needs dtype i8, not \(tag)") }
                quant = (scheme, axis, scales)
            }
            index[name] = entries.count
            entries.append(DicoTensorEntry(name: name, dtype: dtype, shape: shape, offset: offset, length: length, crc32: crc, quantization: quant))
        }
        for (a, b) in zip(entries, entries.dropFirst()) where b.offset < a.offset + a.length {
            throw bad(b.offset < a.offset ? "tensor '\(b.name)' is listed after '\(a.name)' but lies before it (the table is in data order)"
                                          : "tensors '\(a.name)' and '\(b.name)' overlap")
        }
        let dataEnd = entries.last.map { $0.offset + $0.length } ?? 0
        guard dataEnd == Int(dataLength) else {
            throw bad("the data section is \(dataLength) bytes but its last tensor ends at \(dataEnd)")
        }
        for e in entries {
            guard let q = e.quantization else { continue }
            guard let s = index[q.scales].map({ entries[$0] }), s.dtype == .f32, s.shape == [e.shape[q.axis]], s.quantization == nil else {
                throw bad("tensor '\(e.name)': its scales '\(q.scales)' must be an f32 tensor of shape [\(e.shape[q.axis])]")
            }
        }
        self.tensors = entries
        self.index = index
        // The bytes between tensors are zero (at most 63 of them each).
        for (k, e) in entries.enumerated() {
            let next = k + 1 < entries.count ? entries[k + 1].offset : e.offset + e.length
            let gap = file.bytes(offset: Int(dataOffset) + e.offset + e.length, count: next - e.offset - e.length)
            guard gap.allSatisfy({ $0 == 0 }) else { throw bad("non-zero bytes between tensor '\(e.name)' and the next one") }
        }

        if verifyChecksums {
            var failures = [Bool](repeating: false, count: entries.count)
            let base = Int(dataOffset)
            failures.withUnsafeMutableBufferPointer { f in
                let flags = f
                DispatchQueue.concurrentPerform(iterations: entries.count) { i in
                    let e = entries[i]
                    let bytes = file.bytes(offset: base + e.offset, count: e.length)
                    flags[i] = CRC32.checksum(bytes) != e.crc32
                }
            }
            if let i = failures.firstIndex(of: true) {
                let broken = entries.indices.filter { failures[$0] }.map { "'\(entries[$0].name)'" }
                throw bad("tensor\(broken.count == 1 ? "" : "s") \(broken.joined(separator: ", ")) \(broken.count == 1 ? "is" : "are") corrupt (CRC-32 mismatch; first: stored \(CRC32.hex(entries[i].crc32)))")
            }
            // Quantized int8 values lie in [-127, 127]: -128 (0x80) cannot come from the scheme.
            for e in entries where e.quantization != nil {
                if file.bytes(offset: base + e.offset, count: e.length).contains(0x80) {
                    throw bad("tensor '\(e.name)' holds the int8 value -128, outside the symmetric range [-127, 127]")
                }
            }
        }

        // A generic ONNX graph, its initializers and tensor attributes bound to the tensors.
        guard isONNXGraph == (top.value("onnx_graph") != nil), top.value("graph") == nil || !isONNXGraph else {
            throw bad(isONNXGraph ? "flag bit 0 says the graph is an ONNX graph, but the header has no 'onnx_graph' (or also a 'graph')"
                                  : "the header has an 'onnx_graph' but flag bit 0 (an ONNX graph) is not set")
        }
        if isONNXGraph {
            do {
                onnxModel = try ONNXGraphJSON.decode(top.value("onnx_graph")!, path: path) { DicoFile.view($0, entries, index, file, Int(dataOffset)) }
            } catch let e as DicoError where e.kind == .invalidInput && !e.message.hasPrefix(path) {
                throw bad("onnx_graph: \(e.message)")
            }
            graph = Graph()
            return
        }
        onnxModel = nil

        // Graph, with constants bound to the tensors.
        let g = try HeaderObject(try top.require("graph"), "the graph", path)
        var graph = Graph()
        guard let values = g.value("values")?.arrayValue, let nodes = g.value("nodes")?.arrayValue,
              let inputs = g.value("inputs")?.arrayValue, let outputs = g.value("outputs")?.arrayValue else {
            throw bad("the graph needs 'values', 'nodes', 'inputs' and 'outputs' arrays")
        }
        var nodeOfValue: [Int: Int] = [:]
        for (n, item) in nodes.enumerated() {
            if let out = try HeaderObject(item, "node \(n)", path).value("output")?.exactNonNegativeInt { nodeOfValue[out] = n }
        }
        for (i, item) in values.enumerated() {
            let v = try HeaderObject(item, "graph value \(i)", path)
            guard let name = v.string("name"), let tag = v.string("dtype"), let dtype = DType(rawValue: tag),
                  let dims = v.value("shape")?.arrayValue, let source = v.string("source") else {
                throw bad("graph value \(i) needs 'name', a known 'dtype', 'shape' and 'source'")
            }
            let shape = dims.compactMap(GraphJSON.decodeDim)
            guard shape.count == dims.count else { throw bad("graph value \(i) '\(name)' has an unreadable shape") }
            let src: ValueSource
            switch source {
            case "input": src = .input
            case "constant":
                guard let t = v.string("tensor"), let d = DicoFile.view(t, entries, index, file, Int(dataOffset)) else { throw bad("graph constant '\(name)' names no tensor of the table") }
                src = .constant(d)
            case "node":
                guard let n = nodeOfValue[i] else { throw bad("graph value \(i) '\(name)' is no node's output") }
                src = .node(n)
            default: throw bad("graph value \(i) '\(name)' has unknown source '\(source)'")
            }
            _ = graph.appendRecorded(Value(name: name, type: TensorType(dtype, shape), source: src))
        }
        func ids(_ a: [JSONValue], _ what: String) throws -> [ValueID] {
            try a.map {
                guard let k = $0.exactNonNegativeInt, k < values.count else { throw bad("\(what) refers to a value that does not exist") }
                return ValueID(k)
            }
        }
        for (n, item) in nodes.enumerated() {
            let o = try HeaderObject(item, "node \(n)", path)
            guard let op = o.string("op"), let name = o.string("name"), let ins = o.value("inputs")?.arrayValue,
                  let out = o.value("output")?.exactNonNegativeInt, out < values.count else {
                throw bad("node \(n) needs 'op', 'name', 'inputs' and a valid 'output'")
            }
            guard let attrs = (o.value("attrs") ?? .object([])).objectMembers else { throw bad("node '\(name)': 'attrs' is not an object") }
            let decoded: Op
            do { decoded = try GraphJSON.decodeOp(op, attrs, node: name) } catch let e as DicoError { throw bad(e.message) }
            graph.appendRecorded(Node(op: decoded, inputs: try ids(ins, "node '\(name)'"), output: ValueID(out), name: name))
        }
        graph.setInputs(try ids(inputs, "the graph inputs"))
        graph.outputs = try ids(outputs, "the graph outputs")
        do { try graph.verify() } catch let e as DicoError { throw bad("the graph is inconsistent: \(e.message)") }
        self.graph = graph
    }

    /// A zero-copy view of tensor `name` (raw storage; quantized tensors carry their scales).
    public func tensor(_ name: String) -> TensorData? {
        DicoFile.view(name, tensors, index, file, dataOffset)
    }

    static func view(_ name: String, _ entries: [DicoTensorEntry], _ index: [String: Int], _ file: MappedFile, _ base: Int) -> TensorData? {
        guard let i = index[name] else { return nil }
        let e = entries[i]
        var q: Quantization?
        if let qq = e.quantization, let s = view(qq.scales, entries, index, file, base) {
            q = Quantization(scheme: qq.scheme, axis: qq.axis, scales: s)
        }
        return TensorData(dtype: e.dtype, shape: e.shape, storage: .mapped(file, offset: base + e.offset), byteCount: e.length, quantization: q)
    }
}

/// A header JSON object with duplicate keys rejected.
struct HeaderObject {
    let members: [String: JSONValue]

    init(_ v: JSONValue, _ what: String, _ path: String) throws {
        guard let m = v.objectMembers else { throw DicoError.invalid(path, "\(what) is not a JSON object") }
        var d: [String: JSONValue] = [:]
        for (k, x) in m {
            guard d[k] == nil else { throw DicoError.invalid(path, "\(what) has the key '\(k)' twice") }
            d[k] = x
        }
        members = d
        self.what = what
        self.path = path
    }

    let what: String
    let path: String

    func value(_ k: String) -> JSONValue? { members[k] }
    func string(_ k: String) -> String? { members[k]?.stringValue }
    func require(_ k: String) throws -> JSONValue {
        guard let v = members[k] else { throw DicoError.invalid(path, "\(what) has no '\(k)'") }
        return v
    }
}
