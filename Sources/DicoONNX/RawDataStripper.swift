// Zero-copy initializers for models that embed their weights (up to protobuf's 2 GiB).
//
// protobuf-c copies every `bytes` field out of the input into its own heap allocation, so
// unpacking a 1.9 GB model would hold the weights twice. Instead, before unpacking, this walks
// the protobuf wire format along the one path that holds the weights,
//     ModelProto.graph (7) -> GraphProto.initializer (5) -> TensorProto.raw_data (9),
// records where each initializer's raw_data payload sits in the mapped file, and builds a
// compact copy of the message in which those payloads are empty (the field stays, with length
// 0, so `has_raw_data` is unchanged). protobuf-c unpacks the compact copy (metadata only) and
// the initializers become views into the mapped file at the recorded offsets.
//
// The same walk leaves out the fields the importer never reads, whose every string and
// message protobuf-c would otherwise allocate and free one by one: doc strings, metadata_props
// (the dynamo exporter puts a stack trace on every node), GraphProto.value_info (thousands of
// entries in a dynamo export), local functions and training info (unknown fields to our
// schema, which protobuf-c copies too). On a real DiCo-XL dynamo export this is most of the
// parse time. A model whose nodes call local functions is still refused: by their domain.
//
// Anything the walk does not expect (a second graph field, a group, a length past the end)
// returns nil and the caller unpacks the original bytes instead, which then either fails to
// parse or holds a structure whose initializers are copied: the walk is an optimization, never
// a second parser with its own verdicts.

/// The compact ModelProto and where the initializer payloads are in the original bytes.
struct StrippedModel {
    /// The ModelProto with every initializer's raw_data payload removed.
    var bytes: [UInt8]
    /// Initializer index (order in GraphProto.initializer) -> payload offset and length in
    /// the original bytes (the last raw_data field of that TensorProto, as protobuf decides).
    var rawData: RawDataStripper.Spans
}

enum RawDataStripper {
    typealias Spans = [Int: (offset: Int, count: Int)]

    /// Fields left out of the compact copy, by message: never read by the importer (see the
    /// file comment). Field numbers as in Formats/onnx.proto and the official schema.
    static let modelDropped: Set<UInt64> = [6, 14, 20, 25, 26]    // doc_string, metadata_props, training_info, functions, configuration
    static let graphDropped: Set<UInt64> = [10, 13, 14, 16]       // doc_string, value_info, quantization_annotation, metadata_props
    static let nodeDropped: Set<UInt64> = [6, 9, 10]              // doc_string, metadata_props, device_configurations
    static let tensorDropped: Set<UInt64> = [12, 16]              // doc_string, metadata_props

    /// Strips `buffer` (a serialized ModelProto), or returns nil when its layout is not the
    /// simple one the walk handles. `progress` is called after each initializer with the
    /// offset the walk has passed, so that the caller can release the pages behind it.
    static func strip(_ buffer: UnsafeRawBufferPointer, progress: (Int) -> Void = { _ in }) -> StrippedModel? {
        var spans: Spans = [:]
        var sawGraph = false
        var out: [UInt8] = []
        let ok = rewriting(buffer, from: 0, to: buffer.count, targets: [7], drop: modelDropped, into: &out) { _, graphStart, graphLength, out in
            // protobuf merges repeated occurrences of a message field; indices would no
            // longer line up with the walk, so leave such files to the copying path.
            guard !sawGraph else { return false }
            sawGraph = true
            var index = 0
            return rewriting(buffer, from: graphStart, to: graphStart + graphLength, targets: [1, 5], drop: graphDropped, into: &out) {
                field, start, length, out in
                if field == 1 {  // a node: copied without its unread fields
                    return rewriting(buffer, from: start, to: start + length, targets: [], drop: nodeDropped, into: &out) { _, _, _, _ in false }
                }
                defer { index += 1; progress(start + length) }
                return rewriting(buffer, from: start, to: start + length, targets: [9], drop: tensorDropped, into: &out) {
                    _, dataStart, dataLength, _ in
                    spans[index] = (dataStart, dataLength)  // the last raw_data wins, as in protobuf
                    return true  // an empty raw_data field: the payload is read from the file
                }
            }
        }
        return ok ? StrippedModel(bytes: out, rawData: spans) : nil
    }

    /// Appends to `out` the message in `[from, to)` of `buffer` with the payload of every
    /// length-delimited field whose number is in `targets` replaced by what
    /// `rewrite(number, payloadStart, payloadLength, &out)` appends (its tag copied, its length
    /// re-encoded), the fields in `drop` left out, and every other field copied as it is.
    /// False when the bytes are not a well-formed message of the wire types ONNX uses, or
    /// `rewrite` fails. One output buffer for the whole walk: a rewritten field's length is
    /// known only after its payload, so 10 bytes are reserved and the payload is moved back.
    private static func rewriting(_ buffer: UnsafeRawBufferPointer, from: Int, to: Int, targets: Set<UInt64>,
                                  drop: Set<UInt64>, into out: inout [UInt8],
                                  _ rewrite: (UInt64, Int, Int, inout [UInt8]) -> Bool) -> Bool {
        var r = WireReader(buffer: buffer, position: from, end: to)
        while r.position < r.end {
            let start = r.position
            guard let (number, wire) = r.tag() else { return false }
            let afterTag = r.position
            if wire == 2 && targets.contains(number) {
                guard let length = r.length() else { return false }
                out.append(contentsOf: r.bytes(start, afterTag))
                let lengthAt = out.count
                out.append(contentsOf: repeatElement(0, count: 10))
                guard rewrite(number, r.position, length, &out) else { return false }
                var prefix: [UInt8] = []
                WireReader.appendVarint(UInt64(out.count - lengthAt - 10), to: &prefix)
                out.replaceSubrange(lengthAt..<(lengthAt + 10), with: prefix)
                r.position += length
            } else {
                guard r.skip(wire) else { return false }
                if !drop.contains(number) { out.append(contentsOf: r.bytes(start, r.position)) }
            }
        }
        return true
    }
}

/// A bounds-checked reader of protobuf wire format over `[position, end)` of `buffer`.
struct WireReader {
    let buffer: UnsafeRawBufferPointer
    var position: Int
    let end: Int

    /// A base-128 varint of at most 10 bytes; nil when it runs past `end` or is too long.
    mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while position < end && shift < 64 {
            let b = buffer[position]
            position += 1
            result |= UInt64(b & 0x7F) << shift
            if b < 0x80 { return result }
            shift += 7
        }
        return nil
    }

    /// A field tag: (field number, wire type).
    mutating func tag() -> (UInt64, UInt64)? {
        guard let t = varint(), t >> 3 != 0 else { return nil }
        return (t >> 3, t & 7)
    }

    /// A length prefix that fits in the remaining bytes.
    mutating func length() -> Int? {
        guard let n = varint(), n <= UInt64(end - position) else { return nil }
        return Int(n)
    }

    /// Skips one field value of wire type `wire`; false for groups or a value past `end`.
    mutating func skip(_ wire: UInt64) -> Bool {
        switch wire {
        case 0: return varint() != nil
        case 1: guard end - position >= 8 else { return false }; position += 8; return true
        case 2: guard let n = length() else { return false }; position += n; return true
        case 5: guard end - position >= 4 else { return false }; position += 4; return true
        default: return false  // 3, 4: groups (deprecated, not used by ONNX); 6, 7: invalid
        }
    }

    /// The bytes `[from, to)` of the buffer.
    func bytes(_ from: Int, _ to: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer[from..<to])
    }

    static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var v = value
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }
}
