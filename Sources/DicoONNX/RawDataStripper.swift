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
// schema, which protobuf-c copies too): in a DiCo-XL dynamo export they are 9,071 node
// metadata entries and 2,758 value_info entries. A model whose nodes call local functions is
// still refused, by their domain. The walk also keeps unbounded nesting away from protobuf-c,
// which recurses without a limit (see `strip`).
//
// protobuf-c only ever sees this compact copy. Bytes the walk finds malformed (a length past
// the end, a bad tag, a group) are ones protobuf-c refuses too, and get the same message;
// the walk's own verdicts are two: a repeated graph field and too deep a type nesting.

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
    static let modelDropped: FieldSet = [6, 14, 20, 25, 26]    // doc_string, metadata_props, training_info, functions, configuration
    static let graphDropped: FieldSet = [10, 13, 14, 16]       // doc_string, value_info, quantization_annotation, metadata_props
    static let nodeDropped: FieldSet = [6, 9, 10]              // doc_string, metadata_props, device_configurations
    static let tensorDropped: FieldSet = [12, 16]              // doc_string, metadata_props
    static let attributeDropped: FieldSet = [13]               // doc_string
    static let valueInfoDropped: FieldSet = [3, 4]             // doc_string, metadata_props
    /// Fields whose payload the walk rewrites, by message.
    static let modelRewritten: FieldSet = [7]                  // graph
    static let graphRewritten: FieldSet = [1, 5, 11, 12]       // node, initializer, input, output
    static let nodeRewritten: FieldSet = [5]                   // attribute
    static let attributeRewritten: FieldSet = [6, 11, 14, 15]  // g, graphs (emptied); tp, type_protos (checked)
    static let valueInfoRewritten: FieldSet = [2]              // type (checked)
    static let tensorRewritten: FieldSet = [9]                 // raw_data (emptied, recorded)

    /// What the walk made of the bytes.
    enum Outcome {
        /// The compact copy to unpack.
        case compact(StrippedModel)
        /// Not a well-formed message along the walk (protobuf-c would refuse it too).
        case malformed
        /// ModelProto.graph occurs more than once (protobuf would merge them).
        case repeatedGraph
        /// A TypeProto nested deeper than `maxTypeNesting`.
        case typeTooDeep
    }

    /// How deep TypeProtos may nest (sequence of map of optional ...): protobuf-c unpacks
    /// nested messages by recursion, with no limit of its own.
    static let maxTypeNesting = 32

    /// Walks `buffer` (a serialized ModelProto) and builds the compact copy. `progress` is
    /// called after each initializer with the offset the walk has passed, so that the caller
    /// can release the pages behind it.
    ///
    /// protobuf-c recurses into nested messages without a depth limit, so a small hostile file
    /// of deeply nested subgraphs or types would overflow the stack. The copy therefore has no
    /// path to unbounded nesting: the fields that could hold one are left out (functions,
    /// training_info, value_info), emptied (AttributeProto.g and .graphs: the importer refuses
    /// graph attributes anyway, by the attribute's type, which stays), or checked
    /// (TypeProto nesting of graph inputs, outputs and attributes).
    static func strip(_ buffer: UnsafeRawBufferPointer, progress: (Int) -> Void = { _ in }) -> Outcome {
        var spans: Spans = [:]
        var graphs = 0
        var typeTooDeep = false
        var out: [UInt8] = []
        /// Copies a TypeProto payload after checking its nesting.
        func copyType(_ start: Int, _ length: Int, _ out: inout [UInt8]) -> Bool {
            guard typeNesting(buffer, from: start, to: start + length, depth: 1) else {
                typeTooDeep = true
                return false
            }
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[start..<(start + length)]))
            return true
        }
        let ok = rewriting(buffer, from: 0, to: buffer.count, targets: modelRewritten, drop: modelDropped, into: &out) { _, graphStart, graphLength, out in
            // protobuf merges repeated occurrences of a message field; initializer indices
            // would no longer line up with the walk.
            graphs += 1
            guard graphs == 1 else { return false }
            var index = 0
            return rewriting(buffer, from: graphStart, to: graphStart + graphLength, targets: graphRewritten,
                             drop: graphDropped, into: &out) { field, start, length, out in
                switch field {
                case 1:  // a node: without its unread fields; attributes without subgraphs
                    return rewriting(buffer, from: start, to: start + length, targets: nodeRewritten, drop: nodeDropped, into: &out) {
                        _, aStart, aLength, out in
                        rewriting(buffer, from: aStart, to: aStart + aLength, targets: attributeRewritten, drop: attributeDropped,
                                  into: &out) { f, tStart, tLength, out in
                            f == 6 || f == 11 ? true : copyType(tStart, tLength, &out)
                        }
                    }
                case 11, 12:  // a graph input or output: its type checked
                    return rewriting(buffer, from: start, to: start + length, targets: valueInfoRewritten, drop: valueInfoDropped, into: &out) {
                        _, tStart, tLength, out in copyType(tStart, tLength, &out)
                    }
                default:  // an initializer
                    defer { index += 1; progress(start + length) }
                    return rewriting(buffer, from: start, to: start + length, targets: tensorRewritten, drop: tensorDropped, into: &out) {
                        _, dataStart, dataLength, _ in
                        spans[index] = (dataStart, dataLength)  // the last raw_data wins, as in protobuf
                        return true  // an empty raw_data field: the payload is read from the file
                    }
                }
            }
        }
        if graphs > 1 { return .repeatedGraph }
        if typeTooDeep { return .typeTooDeep }
        return ok ? .compact(StrippedModel(bytes: out, rawData: spans)) : .malformed
    }

    /// Whether the TypeProto in `[from, to)` nests at most `maxTypeNesting` deep (counting
    /// from `depth`) through Sequence.elem_type, Map.value_type and Optional.elem_type.
    /// A malformed payload also answers false: protobuf-c would refuse it.
    private static func typeNesting(_ buffer: UnsafeRawBufferPointer, from: Int, to: Int, depth: Int) -> Bool {
        guard depth <= maxTypeNesting else { return false }
        var r = WireReader(buffer: buffer, position: from, end: to)
        while r.position < r.end {
            guard let (number, wire) = r.tag() else { return false }
            // sequence_type = 4 and optional_type = 9 hold elem_type = 1; map_type = 5 holds value_type = 2.
            guard wire == 2, number == 4 || number == 5 || number == 9 else {
                guard r.skip(wire) else { return false }
                continue
            }
            guard let length = r.length() else { return false }
            let inner: UInt64 = number == 5 ? 2 : 1
            var q = WireReader(buffer: buffer, position: r.position, end: r.position + length)
            while q.position < q.end {
                guard let (n, w) = q.tag() else { return false }
                if w == 2 && n == inner {
                    guard let l = q.length(), typeNesting(buffer, from: q.position, to: q.position + l, depth: depth + 1) else { return false }
                    q.position += l
                } else {
                    guard q.skip(w) else { return false }
                }
            }
            r.position += length
        }
        return true
    }

    /// Appends to `out` the message in `[from, to)` of `buffer` with the payload of every
    /// length-delimited field whose number is in `targets` replaced by what
    /// `rewrite(number, payloadStart, payloadLength, &out)` appends (its tag copied, its length
    /// re-encoded), the fields in `drop` left out, and every other field copied as it is.
    /// False when the bytes are not a well-formed message of the wire types ONNX uses, or
    /// `rewrite` fails. One output buffer for the whole walk: a rewritten field's length is
    /// known only after its payload, so 10 bytes are reserved and the payload is moved back.
    private static func rewriting(_ buffer: UnsafeRawBufferPointer, from: Int, to: Int, targets: FieldSet,
                                  drop: FieldSet, into out: inout [UInt8],
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

/// A set of field numbers below 64 as a bit mask: the walk asks once per field, and hashing
/// a Set there was a tenth of the parse time.
struct FieldSet: ExpressibleByArrayLiteral {
    let mask: UInt64

    init(arrayLiteral numbers: UInt64...) {
        mask = numbers.reduce(0) { precondition($1 < 64); return $0 | (1 << $1) }
    }

    func contains(_ number: UInt64) -> Bool { number < 64 && mask & (1 << number) != 0 }
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
