#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import DicoCore
import DicoIR
import DicoONNX

// Writer for `.dico` version 1.0 (DiCo graphs) and 1.1 (generic ONNX graphs, flag bit 0); the byte layout is specified in Formats/DICO.md:
//   0   magic 89 44 49 43 4F 0D 0A 1A       8   major u16, minor u16, flags u32
//   16  header_offset u64 (64)              24  header_length u64
//   32  data_offset u64 (multiple of 64)    40  data_length u64
//   48  file_length u64                     56  header_crc32 u32, prefix_crc32 u32 (bytes 0..59)
//   64  JSON header, space padded to data_offset; then tensors, each 64-byte aligned.
// Offsets and sizes are fixed before any data is produced and every CRC is written as eight
// hex digits, so the header is laid out once, tensors are produced in parallel straight to
// their offsets, and the real CRCs replace placeholders of the same length at the end.

/// The `.dico` format constants.
public enum DicoFormatInfo {
    public static let magic: [UInt8] = [0x89, 0x44, 0x49, 0x43, 0x4F, 0x0D, 0x0A, 0x1A]
    public static let major: UInt16 = 1
    /// The minor version this writer knows up to; a file is stamped with the lowest minor
    /// version that has everything it holds (`minor(for:)`, `onnxGraphMinor`).
    public static let minor: UInt16 = 1
    /// The minor version of files holding a generic ONNX graph.
    public static let onnxGraphMinor: UInt16 = 1
    /// Prefix flag bit 0: the file's graph is an ONNX graph (`onnx_graph`, not `graph`). A 1.0
    /// reader rejects unknown flags, so it refuses such a file instead of misreading it.
    public static let onnxGraphFlag: UInt32 = 1

    /// The minor version a file holding `graph` is stamped with: 1 if it uses an op added in
    /// 1.1 (`GraphJSON.formatMinor`), else 0, so a graph of 1.0 ops (every `--no-optimize`
    /// conversion) is written exactly as before and a 1.0 reader can tell a file it cannot run.
    public static func minor(for graph: Graph) -> UInt16 {
        graph.nodes.map { GraphJSON.formatMinor($0.op) }.max() ?? 0
    }
    /// Alignment of the data section and of every tensor in it.
    public static let alignment = 64
    public static let headerOffset = 64
}

/// One tensor to write: its table entry, without the offset and checksum the writer adds.
public struct DicoTensorOutput: Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// For quantized tensors: the scheme, the axis and the name of the scales tensor.
    public let quantization: (scheme: Quantization.Scheme, axis: Int, scales: String)?

    public init(name: String, dtype: DType, shape: [Int], quantization: (scheme: Quantization.Scheme, axis: Int, scales: String)? = nil) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.quantization = quantization
    }

    /// Bytes of the tensor's data.
    public var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
}

/// A unit of work for the writer: one or more tensors produced together (an int8 weight
/// and its scales come from one pass over the source), by a closure that fills one buffer
/// per tensor. Jobs run on any thread, each once.
public struct DicoTensorJob: @unchecked Sendable {
    public let tensors: [DicoTensorOutput]
    public let produce: ([UnsafeMutableRawBufferPointer]) throws -> Void

    public init(_ tensors: [DicoTensorOutput], produce: @escaping ([UnsafeMutableRawBufferPointer]) throws -> Void) {
        self.tensors = tensors
        self.produce = produce
    }

    var byteCount: Int { tensors.reduce(0) { $0 + $1.byteCount } }
}

/// Writes `.dico` files: atomically (temporary file, then rename), deterministically (same
/// inputs, same bytes, whatever the thread count) and streaming (one tensor buffer per worker).
public enum DicoWriter {
    /// Writes a `.dico` file.
    /// - Parameters:
    ///   - model: the `model` object of the header.
    ///   - graph: the graph; each constant's name must be a tensor name in `tensors`.
    ///   - provenance: the `provenance` object of the header, possibly with placeholders.
    ///   - finalProvenance: called after the tensors are written; its result replaces
    ///     `provenance` and must serialize to the same length (e.g. a digest computed
    ///     meanwhile replacing as many placeholder digits).
    ///   - progress: called (serially) with the bytes of tensor data written so far.
    /// - Throws: `DicoError(.usage)` when `path` exists and `overwrite` is false;
    ///   `DicoError.io` on write failures; whatever a `produce` closure throws. In every failure
    ///   the temporary file is removed and an existing `path` is left untouched.
    public static func write(to path: String, overwrite: Bool, model: JSONValue, graph: Graph, provenance: JSONValue,
                             jobs: [DicoTensorJob], threads: Int, progress: ((Int) -> Void)? = nil,
                             finalProvenance: (() throws -> JSONValue)? = nil) throws {
        try write(to: path, overwrite: overwrite, model: model, section: .dico(graph), provenance: provenance, jobs: jobs, threads: threads,
                  progress: progress, finalProvenance: finalProvenance, beforeCommit: nil)
    }

    /// Writes a generic-graph `.dico` (version 1.1, flag bit 0; Formats/DICO.md, "Generic ONNX
    /// graphs"): `onnx` as written, its initializers and tensor attributes
    /// (`ONNXGraphJSON.attributeTensors`) each an entry of the table under that name.
    /// - Parameter beforeCommit: called with the complete temporary file before it replaces
    ///   `path` (the drift check reads it); what it throws aborts the write, leaving `path` as it was.
    /// - Throws: as `write(graph:)`; `DicoError(.internalError)` when an initializer or tensor
    ///   attribute has no job.
    public static func write(to path: String, overwrite: Bool, model: JSONValue, onnx: ONNXModel, provenance: JSONValue,
                             jobs: [DicoTensorJob], threads: Int, progress: ((Int) -> Void)? = nil,
                             finalProvenance: (() throws -> JSONValue)? = nil, beforeCommit: ((String) throws -> Void)? = nil) throws {
        try write(to: path, overwrite: overwrite, model: model, section: .onnx(onnx), provenance: provenance, jobs: jobs, threads: threads,
                  progress: progress, finalProvenance: finalProvenance, beforeCommit: beforeCommit)
    }

    /// What a file's graph is: a DiCo IR graph (flags 0; version 1.0, byte-identical to the
    /// files written before, unless it uses a 1.1 op) or an ONNX graph (version 1.1, flag bit 0).
    enum Section {
        case dico(Graph)
        case onnx(ONNXModel)

        var minor: UInt16 {
            switch self {
            case let .dico(g): return DicoFormatInfo.minor(for: g)
            case .onnx: return DicoFormatInfo.onnxGraphMinor
            }
        }
        var flags: UInt32 { if case .onnx = self { return DicoFormatInfo.onnxGraphFlag }; return 0 }
        /// The tensors the graph refers to by name.
        var tensorNames: [String] {
            switch self {
            case let .dico(g): return g.constantIDs.map { g[$0].name }
            case let .onnx(m): return m.graph.initializers.map(\.name) + ONNXGraphJSON.attributeTensors(m.graph).map(\.name)
            }
        }
        var member: (key: String, value: JSONValue) {
            switch self {
            case let .dico(g): return ("graph", GraphJSON.encode(g))
            case let .onnx(m): return ("onnx_graph", ONNXGraphJSON.encode(m))
            }
        }
    }

    static func write(to path: String, overwrite: Bool, model: JSONValue, section: Section, provenance: JSONValue,
                      jobs: [DicoTensorJob], threads: Int, progress: ((Int) -> Void)?,
                      finalProvenance: (() throws -> JSONValue)?, beforeCommit: ((String) throws -> Void)?) throws {
        let tensors = jobs.flatMap(\.tensors)
        // First tensor index of each job in the table.
        var firstIndex: [Int] = []
        var k0 = 0
        for j in jobs {
            firstIndex.append(k0)
            k0 += j.tensors.count
        }
        var seen = Set<String>()
        for t in tensors where !seen.insert(t.name).inserted {
            throw DicoError(.internalError, "\(path): tensor '\(t.name)' is written twice")
        }
        for name in section.tensorNames where !seen.contains(name) {
            throw DicoError(.internalError, "\(path): graph tensor '\(name)' has no job")
        }
        let graphMember = section.member
        // Offsets: each tensor 64-byte aligned, in the given order.
        var offsets: [Int] = []
        var end = 0
        for t in tensors {
            let start = align(end)
            offsets.append(start)
            end = start + t.byteCount
        }
        let dataLength = end
        var crcs = [UInt32](repeating: 0, count: tensors.count)
        let placeholder = headerJSON(model: model, graph: graphMember, minor: section.minor, provenance: provenance, tensors: tensors, offsets: offsets, crcs: nil)
        let headerLength = placeholder.utf8.count
        let dataOffset = align(DicoFormatInfo.headerOffset + headerLength)
        let fileLength = dataOffset + dataLength

        let out = try AtomicFileWriter(path: path, overwrite: overwrite)
        try out.setLength(fileLength)

        // Produce and write jobs in parallel, largest first so the workers finish together.
        let order = jobs.indices.sorted { jobs[$0].byteCount > jobs[$1].byteCount || (jobs[$0].byteCount == jobs[$1].byteCount && $0 < $1) }
        let lock = Lock()
        var next = 0, done = 0
        var failure: Error?
        let workers = max(1, min(threads, jobs.count))
        crcs.withUnsafeMutableBufferPointer { crcBuf in
            let crcOut = crcBuf
            DispatchQueue.concurrentPerform(iterations: workers) { _ in
                while true {
                    let k: Int? = lock.locked {
                        guard failure == nil, next < order.count else { return nil }
                        next += 1
                        return order[next - 1]
                    }
                    guard let j = k else { return }
                    let job = jobs[j]
                    let buffers = job.tensors.map { UnsafeMutableRawBufferPointer.allocate(byteCount: max($0.byteCount, 1), alignment: 64) }
                    defer { buffers.forEach { $0.deallocate() } }
                    let views = zip(buffers, job.tensors).map { UnsafeMutableRawBufferPointer(rebasing: $0[0..<$1.byteCount]) }
                    do {
                        try job.produce(views)
                        for (n, view) in views.enumerated() {
                            let i = firstIndex[j] + n
                            crcOut[i] = CRC32.checksum(UnsafeRawBufferPointer(view))
                            try out.write(UnsafeRawBufferPointer(view), at: dataOffset + offsets[i])
                        }
                        lock.locked {
                            done += job.byteCount
                            progress?(done)
                        }
                    } catch {
                        lock.locked { if failure == nil { failure = error } }
                        return
                    }
                }
            }
        }
        if let failure { throw failure }

        let finalProv = try finalProvenance?() ?? provenance
        let header = headerJSON(model: model, graph: graphMember, minor: section.minor, provenance: finalProv, tensors: tensors, offsets: offsets, crcs: crcs)
        var headerBytes = Array(header.utf8)
        guard headerBytes.count == headerLength else {
            throw DicoError(.internalError, "\(path): the final header is \(headerBytes.count) bytes, the reserved one \(headerLength)")
        }
        let headerCRC = headerBytes.withUnsafeBytes { CRC32.checksum($0) }
        headerBytes += [UInt8](repeating: 0x20, count: dataOffset - DicoFormatInfo.headerOffset - headerLength)
        try headerBytes.withUnsafeBytes { try out.write($0, at: DicoFormatInfo.headerOffset) }

        var prefix = [UInt8](repeating: 0, count: 64)
        prefix.replaceSubrange(0..<8, with: DicoFormatInfo.magic)
        put(&prefix, 8, UInt64(DicoFormatInfo.major), 2)
        put(&prefix, 10, UInt64(section.minor), 2)
        put(&prefix, 12, UInt64(section.flags), 4)
        put(&prefix, 16, UInt64(DicoFormatInfo.headerOffset), 8)
        put(&prefix, 24, UInt64(headerLength), 8)
        put(&prefix, 32, UInt64(dataOffset), 8)
        put(&prefix, 40, UInt64(dataLength), 8)
        put(&prefix, 48, UInt64(fileLength), 8)
        put(&prefix, 56, UInt64(headerCRC), 4)
        let prefixCRC = prefix.withUnsafeBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        put(&prefix, 60, UInt64(prefixCRC), 4)
        try prefix.withUnsafeBytes { try out.write($0, at: 0) }
        // Everything went out with pwrite (setLength flushed the sequential buffer), so the
        // temporary file is complete for any reader.
        try beforeCommit?(out.temporaryPath)
        try out.commit()
    }

    static func align(_ n: Int) -> Int { (n + DicoFormatInfo.alignment - 1) / DicoFormatInfo.alignment * DicoFormatInfo.alignment }

    static func put(_ b: inout [UInt8], _ at: Int, _ v: UInt64, _ size: Int) {
        for i in 0..<size { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    static func headerJSON(model: JSONValue, graph: (key: String, value: JSONValue), minor: UInt16, provenance: JSONValue,
                           tensors: [DicoTensorOutput], offsets: [Int], crcs: [UInt32]?) -> String {
        let table: [JSONValue] = tensors.indices.map { i in
            let t = tensors[i]
            var m: [(key: String, value: JSONValue)] = [
                ("name", .string(t.name)), ("dtype", .string(t.dtype.rawValue)), ("shape", .array(t.shape.map { .integer($0) })),
                ("offset", .integer(offsets[i])), ("length", .integer(t.byteCount)),
                ("crc32", .string(crcs.map { CRC32.hex($0[i]) } ?? "00000000")),
            ]
            if let q = t.quantization {
                m.append(("quantization", .object([("scheme", .string(q.scheme.rawValue)), ("axis", .integer(q.axis)), ("scales", .string(q.scales))])))
            }
            return .object(m)
        }
        let root: JSONValue = .object([
            ("format", .string("dico")), ("version", .array([.integer(Int(DicoFormatInfo.major)), .integer(Int(minor))])),
            ("model", model), graph, ("tensors", .array(table)), ("provenance", provenance),
        ])
        return root.serialized()
    }
}
