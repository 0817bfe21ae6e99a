import DicoCore

/// One tensor to be written: its name, element type and shape (the bytes come separately).
public struct SafetensorsEntry: Sendable, Equatable {
    /// The tensor name (the header key); non-empty, unique, not `__metadata__`.
    public let name: String
    /// The element type.
    public let dtype: DType
    /// Dimensions, outermost first; empty for a scalar.
    public let shape: [Int]

    /// An entry as given; `SafetensorsWriter` validates it when writing.
    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// Writes safetensors files that the reference implementation loads, streaming tensor data so
/// a large file is never held in memory whole.
///
/// Output is deterministic: `__metadata__` first with keys in UTF-8 byte order, then the
/// tensors in the order given with contiguous offsets in that order, compact JSON padded with
/// spaces to a multiple of 8 bytes (as the reference writer does, so data stays 8-byte aligned
/// relative to the file start).
public enum SafetensorsWriter {
    /// Writes `entries` to `path` atomically; the data of entry `i` is produced by
    /// `fill(i, buffer)` into a zeroed buffer of exactly its byte size, in entry order.
    /// - Throws: `DicoError.invalid(path, ...)` for an empty, duplicate or `__metadata__`
    ///   name, a negative dimension or a byte size that overflows; `DicoError(.usage)` when
    ///   `path` exists and `overwrite` is false; `DicoError.io` when writing fails; anything
    ///   `fill` throws (the partial file is removed in every case).
    public static func write(entries: [SafetensorsEntry], metadata: [String: String]?, to path: String,
                             overwrite: Bool, fill: (Int, UnsafeMutableRawBufferPointer) throws -> Void) throws {
        let sizes = try byteSizes(entries, path: path)
        let maxSize = sizes.max() ?? 0
        // One scratch buffer reused for every entry: peak memory is the largest tensor.
        let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: max(maxSize, 1), alignment: 64)
        defer { scratch.deallocate() }
        try writeFile(entries, sizes, metadata, path, overwrite) { i, out in
            let buf = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<sizes[i]])
            // Zeroed so bytes `fill` leaves untouched are still deterministic.
            buf.initializeMemory(as: UInt8.self, repeating: 0)
            try fill(i, buf)
            try out.write(UnsafeRawBufferPointer(buf))
        }
    }

    /// Writes `tensors` (in the order given) and `metadata` to `path` atomically, copying each
    /// tensor's bytes straight from its storage.
    /// - Throws: as `write(entries:metadata:to:overwrite:fill:)`, and `DicoError.invalid` when
    ///   a tensor's `byteCount` disagrees with its shape and dtype.
    public static func write(_ tensors: [(name: String, data: TensorData)], metadata: [String: String]?,
                             to path: String, overwrite: Bool) throws {
        let entries = tensors.map { SafetensorsEntry(name: $0.name, dtype: $0.data.dtype, shape: $0.data.shape) }
        let sizes = try byteSizes(entries, path: path)
        for (i, t) in tensors.enumerated() where t.data.byteCount != sizes[i] {
            throw DicoError.invalid(path, "cannot write tensor '\(t.name)': it holds \(t.data.byteCount) bytes but its shape and dtype need \(sizes[i])")
        }
        try writeFile(entries, sizes, metadata, path, overwrite) { i, out in
            try out.write(tensors[i].data.bytes)
        }
    }

    /// The header bytes (JSON plus space padding, without the 8-byte length prefix) that the
    /// writer produces for `entries` of the given byte sizes.
    static func headerBytes(_ entries: [SafetensorsEntry], _ sizes: [Int], _ metadata: [String: String]?) -> [UInt8] {
        var members: [(key: String, value: JSONValue)] = []
        if let metadata {
            // Sorted by UTF-8 bytes, not String order: String comparison follows Unicode
            // canonical equivalence, byte order is what a reader sees.
            let keys = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
            members.append((key: "__metadata__", value: .object(keys.map { (key: $0, value: .string(metadata[$0]!)) })))
        }
        var offset = 0
        for (e, size) in zip(entries, sizes) {
            members.append((key: e.name, value: .object([
                (key: "dtype", value: .string(e.dtype.safetensorsName)),
                (key: "shape", value: .array(e.shape.map { .integer($0) })),
                (key: "data_offsets", value: .array([.integer(offset), .integer(offset + size)])),
            ])))
            offset += size
        }
        var bytes = Array(JSONValue.object(members).serialized().utf8)
        bytes.append(contentsOf: repeatElement(0x20, count: (8 - bytes.count % 8) % 8))
        return bytes
    }

    // MARK: - Internals

    /// Validates the entries and returns each one's byte size.
    private static func byteSizes(_ entries: [SafetensorsEntry], path: String) throws -> [Int] {
        var seen = Set<String>()
        var total = 0
        return try entries.map { e in
            guard !e.name.isEmpty else { throw DicoError.invalid(path, "cannot write a tensor with an empty name") }
            guard e.name != "__metadata__" else {
                throw DicoError.invalid(path, "cannot write tensor '__metadata__': the name is reserved for metadata")
            }
            guard seen.insert(e.name).inserted else {
                throw DicoError.invalid(path, "cannot write tensor '\(e.name)': duplicate tensor name")
            }
            var size = e.dtype.byteSize
            for d in e.shape {
                guard d >= 0 else { throw DicoError.invalid(path, "cannot write tensor '\(e.name)': negative dimension in shape \(e.shape)") }
                let (m, overflow) = size.multipliedReportingOverflow(by: d)
                guard !overflow else { throw DicoError.invalid(path, "cannot write tensor '\(e.name)': byte size of shape \(e.shape) overflows 64 bits") }
                size = m
            }
            let (t, overflow) = total.addingReportingOverflow(size)
            guard !overflow else { throw DicoError.invalid(path, "cannot write tensor '\(e.name)': total data size overflows 64 bits") }
            total = t
            return size
        }
    }

    private static func writeFile(_ entries: [SafetensorsEntry], _ sizes: [Int], _ metadata: [String: String]?,
                                  _ path: String, _ overwrite: Bool,
                                  emit: (Int, AtomicFileWriter) throws -> Void) throws {
        let header = headerBytes(entries, sizes, metadata)
        let out = try AtomicFileWriter(path: path, overwrite: overwrite)
        do {
            var prefix = UInt64(header.count).littleEndian
            try withUnsafeBytes(of: &prefix) { try out.write($0) }
            try header.withUnsafeBytes { try out.write($0) }
            for i in entries.indices { try emit(i, out) }
            try out.commit()
        } catch {
            out.abort() // no partial file is left behind
            throw error
        }
    }
}
