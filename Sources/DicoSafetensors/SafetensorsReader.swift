import DicoCore

// Reader for the safetensors format (https://github.com/huggingface/safetensors):
//   8 bytes   N, little-endian u64: the header length
//   N bytes   UTF-8 JSON object {"<name>": {"dtype", "shape", "data_offsets": [begin, end]}, ...}
//             with an optional "__metadata__": {string: string}; the reference writer pads it
//             with spaces to a multiple of 8 bytes
//   rest      the byte buffer; offsets are relative to its start
// The rules enforced are those of the reference reader (safetensors/src/tensor.rs,
// `read_metadata` and `Metadata::validate`), plus rejections it leaves implicit (unknown keys,
// duplicate names, non-space padding), so that a file accepted here is unambiguous.

/// Where one tensor of a safetensors file lives and what it holds.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    /// The tensor name (the header key).
    public let name: String
    /// The element type.
    public let dtype: DType
    /// Dimensions, outermost first; empty for a scalar.
    public let shape: [Int]
    /// First byte, relative to the start of the data section.
    public let begin: Int
    /// One past the last byte, relative to the start of the data section.
    public let end: Int

    /// A tensor layout as given (no validation: `SafetensorsFile` validates what it reads).
    public init(name: String, dtype: DType, shape: [Int], begin: Int, end: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.begin = begin
        self.end = end
    }

    /// `end - begin`.
    public var byteCount: Int { end - begin }
}

/// A validated, memory-mapped safetensors file; tensors are zero-copy views into the mapping.
public final class SafetensorsFile: @unchecked Sendable {
    /// The reference implementation's cap on the header length (`MAX_HEADER_SIZE`).
    public static let maxHeaderLength = 100_000_000

    /// The path the file was opened with (used in every error message).
    public let path: String
    /// The mapping; tensor views keep it alive.
    public let file: MappedFile
    /// Every tensor, in header order.
    public let tensors: [SafetensorsTensorInfo]
    /// The `__metadata__` map; nil when the header has none.
    public let metadata: [String: String]?
    /// File offset of the data section: 8 + header length.
    public let dataStart: Int
    private let index: [String: Int]

    /// Maps `path` and validates its header and layout completely.
    /// - Throws: `DicoError.io` when the file cannot be opened or mapped;
    ///   `DicoError.invalid(path, ...)` (kind `.invalidInput`) for any violation of the format,
    ///   naming the tensor concerned and the rule broken.
    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path)
        self.file = file
        let parsed = try SafetensorsHeaderParser(path: path, file: file).parse()
        tensors = parsed.tensors
        metadata = parsed.metadata
        dataStart = parsed.dataStart
        var index: [String: Int] = [:]
        for (i, t) in parsed.tensors.enumerated() { index[t.name] = i }
        self.index = index
    }

    /// Tensor names in header order.
    public var names: [String] { tensors.map(\.name) }

    /// The layout of tensor `name`; nil if there is no such tensor.
    public func info(_ name: String) -> SafetensorsTensorInfo? {
        index[name].map { tensors[$0] }
    }

    /// A zero-copy view of tensor `name` into the mapped file; nil if there is no such tensor.
    public func tensor(_ name: String) -> TensorData? {
        guard let t = info(name) else { return nil }
        return TensorData(dtype: t.dtype, shape: t.shape,
                          storage: .mapped(file, offset: dataStart + t.begin), byteCount: t.byteCount)
    }
}

/// The validation steps of `SafetensorsFile.init`, one rule per check, each with its own
/// message phrase (tests grep for them).
private struct SafetensorsHeaderParser {
    let path: String
    let file: MappedFile

    func invalid(_ message: String) -> DicoError { DicoError.invalid(path, message) }
    func invalid(tensor: String, _ message: String) -> DicoError {
        DicoError.invalid(path, "tensor '\(tensor)': \(message)")
    }

    func parse() throws -> (tensors: [SafetensorsTensorInfo], metadata: [String: String]?, dataStart: Int) {
        let fileSize = file.size
        guard fileSize >= 8 else {
            throw invalid("file is \(fileSize) bytes, shorter than the 8-byte header length prefix")
        }
        let prefix = file.bytes(offset: 0, count: 8)
        var n: UInt64 = 0
        for i in (0..<8).reversed() { n = n << 8 | UInt64(prefix[i]) } // little-endian u64
        guard n <= UInt64(SafetensorsFile.maxHeaderLength) else {
            throw invalid("header length \(n) exceeds the limit of \(SafetensorsFile.maxHeaderLength) bytes")
        }
        let headerLength = Int(n)
        guard headerLength <= fileSize - 8 else {
            throw invalid("header length \(headerLength) runs past the end of the file (\(fileSize - 8) bytes follow the length prefix)")
        }
        let header = file.bytes(offset: 8, count: headerLength)
        if let bad = StrictJSON.firstInvalidUTF8(header) {
            throw invalid("header is not valid UTF-8 (at header byte \(bad))")
        }
        let root: JSONValue
        let jsonEnd: Int
        do {
            (root, jsonEnd) = try StrictJSON.parsePrefix(header)
        } catch {
            throw invalid("header is not valid JSON: \(error.reason) at header byte \(error.offset)")
        }
        guard let members = root.objectMembers else {
            throw invalid("header JSON must be an object, found \(root.kindName)")
        }
        // The reference writer pads with spaces to 8-byte alignment; nothing else may follow.
        for i in jsonEnd..<headerLength where header[i] != 0x20 {
            throw invalid("header has non-space bytes after the JSON object (byte 0x\(String(header[i], radix: 16, uppercase: true)) at header byte \(i)); only space padding is allowed")
        }

        let dataStart = 8 + headerLength
        let dataLength = fileSize - dataStart
        var tensors: [SafetensorsTensorInfo] = []
        var metadata: [String: String]?
        var seen = Set<String>()
        for (name, value) in members {
            if name == "__metadata__" {
                guard metadata == nil else { throw invalid("duplicate __metadata__ entry") }
                metadata = try parseMetadata(value)
                continue
            }
            // Swift String equality is Unicode canonical equivalence, so two names that differ
            // only in normalization also count as duplicates: they could not both be looked up.
            guard seen.insert(name).inserted else { throw invalid("duplicate tensor name '\(name)'") }
            let t = try parseEntry(name, value)
            guard t.end <= dataLength else {
                throw invalid(tensor: name, "data_offsets [\(t.begin), \(t.end)] extend past the end of the data section (\(dataLength) bytes)")
            }
            tensors.append(t)
        }

        // Same layout rule as the reference `Metadata::validate`: sorted by offsets, the
        // tensors tile the data section exactly, with no overlap, gap or trailing byte.
        let sorted = tensors.sorted { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var previous: SafetensorsTensorInfo?
        for t in sorted {
            let expected = previous?.end ?? 0
            if t.begin < expected, let p = previous {
                throw invalid(tensor: t.name, "data_offsets [\(t.begin), \(t.end)] overlap tensor '\(p.name)' [\(p.begin), \(p.end)]")
            }
            if t.begin > expected {
                let after = previous.map { "after tensor '\($0.name)' (which ends at \($0.end))" } ?? "at the start of the data section"
                throw invalid(tensor: t.name, "data_offsets [\(t.begin), \(t.end)] leave a gap of \(t.begin - expected) bytes \(after)")
            }
            previous = t
        }
        let covered = previous?.end ?? 0
        if covered != dataLength {
            let last = previous.map { "the last tensor '\($0.name)' ends at \($0.end)" } ?? "there are no tensors"
            throw invalid("\(dataLength - covered) trailing bytes after the last tensor (\(last); the data section is \(dataLength) bytes)")
        }
        return (tensors, metadata, dataStart)
    }

    func parseMetadata(_ value: JSONValue) throws -> [String: String] {
        guard let members = value.objectMembers else {
            throw invalid("__metadata__ must map strings to strings, found \(value.kindName)")
        }
        var result: [String: String] = [:]
        for (key, v) in members {
            guard let s = v.stringValue else {
                throw invalid("__metadata__ must map strings to strings, key '\(key)' has \(v.kindName)")
            }
            guard result.updateValue(s, forKey: key) == nil else {
                throw invalid("duplicate __metadata__ key '\(key)'")
            }
        }
        return result
    }

    func parseEntry(_ name: String, _ value: JSONValue) throws -> SafetensorsTensorInfo {
        guard let members = value.objectMembers else {
            throw invalid(tensor: name, "entry must be an object with dtype, shape and data_offsets, found \(value.kindName)")
        }
        var fields: [String: JSONValue] = [:]
        for (key, v) in members {
            guard ["dtype", "shape", "data_offsets"].contains(key) else {
                throw invalid(tensor: name, "unknown key '\(key)' (allowed: dtype, shape, data_offsets)")
            }
            guard fields.updateValue(v, forKey: key) == nil else {
                throw invalid(tensor: name, "duplicate key '\(key)'")
            }
        }
        for key in ["dtype", "shape", "data_offsets"] where fields[key] == nil {
            throw invalid(tensor: name, "missing key '\(key)'")
        }

        guard let dtypeName = fields["dtype"]!.stringValue else {
            throw invalid(tensor: name, "dtype must be a string, found \(fields["dtype"]!.kindName)")
        }
        guard let dtype = DType(safetensorsName: dtypeName) else {
            let known = DType.allCases.map(\.safetensorsName).joined(separator: " ")
            throw invalid(tensor: name, "unknown dtype '\(dtypeName)' (supported: \(known))")
        }

        let shapeValue = fields["shape"]!
        guard let dims = shapeValue.arrayValue else {
            throw invalid(tensor: name, "shape must be an array of non-negative integers, found \(shapeValue.kindName)")
        }
        var shape: [Int] = []
        for d in dims {
            guard let v = d.exactNonNegativeInt else {
                throw invalid(tensor: name, "shape must be an array of non-negative integers, found \(d.serialized())")
            }
            shape.append(v)
        }

        let offsetsValue = fields["data_offsets"]!
        guard let offsets = offsetsValue.arrayValue else {
            throw invalid(tensor: name, "data_offsets must be an array [begin, end], found \(offsetsValue.kindName)")
        }
        guard offsets.count == 2 else {
            throw invalid(tensor: name, "data_offsets must have exactly 2 elements, found \(offsets.count)")
        }
        guard let begin = offsets[0].exactNonNegativeInt, let end = offsets[1].exactNonNegativeInt else {
            throw invalid(tensor: name, "data_offsets must be non-negative integers, found \(offsetsValue.serialized())")
        }
        guard begin <= end else {
            throw invalid(tensor: name, "data_offsets [\(begin), \(end)] have begin greater than end")
        }

        let shapeText = "[" + shape.map(String.init).joined(separator: ", ") + "]"
        var bytes = dtype.byteSize
        for d in shape {
            let (m, overflow) = bytes.multipliedReportingOverflow(by: d)
            if overflow {
                throw invalid(tensor: name, "byte size of shape \(shapeText) x \(dtype.safetensorsName) overflows 64 bits")
            }
            bytes = m
        }
        guard bytes == end - begin else {
            throw invalid(tensor: name, "shape \(shapeText) x \(dtype.safetensorsName) is \(bytes) bytes but data_offsets span \(end - begin)")
        }
        return SafetensorsTensorInfo(name: name, dtype: dtype, shape: shape, begin: begin, end: end)
    }
}
