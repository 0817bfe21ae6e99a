import DicoConversion
import DicoCore
import DicoFormat
import DicoIR
import DicoPasses
import DicoQuant
import Foundation
import XCTest

/// Helpers of the format tests, namespaced so they cannot clash with other files of this
/// test target.
enum FormatSupport {
    static let tiny = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Fixtures/tiny.safetensors").path

    static func u64(_ b: [UInt8], _ at: Int) -> Int {
        Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) })
    }

    static func put(_ b: inout [UInt8], _ at: Int, _ v: UInt64, _ size: Int) {
        for i in 0..<size { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt64(i))) }
    }

    static func crc(_ b: ArraySlice<UInt8>) -> UInt32 {
        Array(b).withUnsafeBytes { CRC32.checksum($0) }
    }

    /// Recomputes the prefix CRC (bytes 60-63, over bytes 0..59).
    static func fixPrefixCRC(_ b: inout [UInt8]) {
        put(&b, 60, UInt64(crc(b[0..<60])), 4)
    }

    static func member(_ v: JSONValue, _ key: String) -> JSONValue? {
        v.objectMembers?.first(where: { $0.key == key })?.value
    }

    static func replacing(_ v: JSONValue, _ key: String, with new: JSONValue) -> JSONValue {
        .object(v.objectMembers!.map { $0.key == key ? (key: key, value: new) : $0 })
    }

    /// Parses the header JSON of `b`, lets `edit` change it, writes it back padded with spaces
    /// to the original length (growing into the padding before the data section if it must),
    /// and fixes the header CRC and the prefix CRC, so that only the rule the edit breaks can
    /// object.
    static func editHeader(_ b: inout [UInt8], _ edit: (JSONValue) throws -> JSONValue) throws {
        let headerLength = u64(b, 24), dataOffset = u64(b, 32)
        let root = try Array(b[64..<(64 + headerLength)]).withUnsafeBytes { try StrictJSON.parse($0) }
        var text = Array(try edit(root).serialized().utf8)
        let newLength = max(headerLength, text.count)
        XCTAssertLessThanOrEqual(64 + newLength, dataOffset, "the edited header still fits before the data")
        text += [UInt8](repeating: 0x20, count: newLength - text.count)
        b.replaceSubrange(64..<(64 + newLength), with: text)
        put(&b, 24, UInt64(newLength), 8)
        put(&b, 56, UInt64(crc(b[64..<(64 + newLength)])), 4)
        fixPrefixCRC(&b)
    }

    /// `editHeader` on the tensor table.
    static func editTensorTable(_ b: inout [UInt8], _ edit: (inout [JSONValue]) -> Void) throws {
        try editHeader(&b) { root in
            var table = try XCTUnwrap(member(root, "tensors")?.arrayValue)
            edit(&table)
            return replacing(root, "tensors", with: .array(table))
        }
    }

    static func setOffset(_ table: inout [JSONValue], _ index: Int, _ offset: Int) {
        table[index] = replacing(table[index], "offset", with: .integer(offset))
    }
}

final class FormatTests: XCTestCase {
    typealias F = FormatSupport

    /// A tiny int8 .dico (quantized tensors and their scales), written once for the class.
    static var classDir: String!
    static var good: [UInt8] = []
    static var goodPath: String!

    override class func setUp() {
        super.setUp()
        let d = FileManager.default.temporaryDirectory.appendingPathComponent("dico-format-\(getpid())-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: false)
        classDir = d
        goodPath = "\(d)/good.dico"
        // The header edits below grow the header into the alignment padding before the data
        // section; how much padding there is depends on the header's length (graph, names), so
        // the tool version is lengthened until at least `headerSlack` bytes are free.
        let headerSlack = 40
        for pad in 0..<64 {
            try? FileManager.default.removeItem(atPath: goodPath)
            _ = try! Converter.convert(input: F.tiny, output: goodPath,
                                       options: ConversionOptions(precision: .int8, threads: 2, overwrite: false,
                                                                  toolVersion: "test" + String(repeating: "+", count: pad)))
            good = Array(FileManager.default.contents(atPath: goodPath)!)
            if FormatSupport.u64(good, 32) - 64 - FormatSupport.u64(good, 24) >= headerSlack { break }
        }
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: classDir)
        super.tearDown()
    }

    var dir: String!
    override func setUpWithError() throws {
        dir = "\(Self.classDir!)/\(name.filter { $0.isLetter || $0.isNumber })"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    /// The good file's tensor table, from the reader.
    var table: [DicoTensorEntry] { (try? DicoFile(path: Self.goodPath).tensors) ?? [] }
    var dataOffset: Int { F.u64(Self.good, 32) }
    var dataLength: Int { F.u64(Self.good, 40) }

    /// Writes `bytes` to a file named `name` and asserts that opening it throws
    /// `.invalidInput` whose message starts with the path and contains every phrase.
    @discardableResult
    func assertRejected(_ bytes: [UInt8], _ name: String, _ phrases: [String], isSafetensors: Bool = false,
                        file: StaticString = #filePath, line: UInt = #line) -> String {
        let path = "\(dir!)/\(name)"
        var message = ""
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), file: file, line: line)
        XCTAssertThrowsError(try DicoFile(path: path), name, file: file, line: line) { error in
            guard let e = error as? DicoError else { return XCTFail("not a DicoError: \(error)", file: file, line: line) }
            message = e.message
            XCTAssertEqual(e.kind, .invalidInput, e.message, file: file, line: line)
            XCTAssertTrue(e.message.hasPrefix("\(path): "), "message does not name the file: \(e.message)", file: file, line: line)
            for p in phrases {
                XCTAssertTrue(e.message.contains(p), "'\(p)' not in: \(e.message)", file: file, line: line)
            }
        }
        if !isSafetensors {
            XCTAssertThrowsError(try LoadedModel.open(path), "LoadedModel rejects it too", file: file, line: line)
        }
        return message
    }

    // MARK: - Sanity

    func testGoodFileOpensAndIsValid() throws {
        let f = try DicoFile(path: Self.goodPath)
        XCTAssertEqual(Array(Self.good[0..<8]), [0x89, 0x44, 0x49, 0x43, 0x4F, 0x0D, 0x0A, 0x1A])
        XCTAssertEqual(F.u64(Self.good, 16), 64)
        XCTAssertEqual(F.u64(Self.good, 48), Self.good.count)
        XCTAssertEqual(dataOffset % 64, 0)
        XCTAssertEqual(dataOffset + dataLength, Self.good.count)
        XCTAssertEqual(f.tensors.count, 141 + 61, "141 tensors and 61 int8 scales")
        for e in f.tensors { XCTAssertEqual(e.offset % 64, 0, e.name) }
        XCTAssertEqual(f.tensors.map { $0.offset + $0.length }.max(), dataLength, "the data ends where the last tensor ends")
        // The helper itself: an identity edit of the table gives a file that still opens.
        var same = Self.good
        try F.editTensorTable(&same) { _ in }
        XCTAssertEqual(same, Self.good, "re-serialized header is byte-identical")
    }

    // MARK: - Prefix and size

    func testTruncated() {
        assertRejected(Array(Self.good.dropLast(100)), "truncated.dico", ["file is truncated", "\(Self.good.count - 100) bytes", "says \(Self.good.count)"])
        assertRejected(Array(Self.good.dropLast(1)), "truncated1.dico", ["file is truncated"])
        assertRejected(Array(Self.good.prefix(63)), "truncated63.dico", ["63 bytes", "shorter than the 64-byte"])
    }

    func testTrailingBytes() {
        assertRejected(Self.good + [1, 2, 3, 4, 5, 6, 7], "trailing.dico", ["7 trailing bytes"])
        assertRejected(Self.good + [0], "trailing1.dico", ["1 trailing bytes"])
    }

    func testBadMagic() {
        var b = Self.good
        b[1] = UInt8(ascii: "X")
        assertRejected(b, "magic.dico", ["bad magic"])
        // A text-mode transfer turning \r\n into \n.
        var text = Self.good
        text.remove(at: 5)
        assertRejected(text, "crlf.dico", ["bad magic"])
        // A safetensors file is not a .dico.
        assertRejected(Array(FileManager.default.contents(atPath: F.tiny)!), "tiny.safetensors", ["not a .dico file"], isSafetensors: true)
    }

    /// Major version 2 with a valid prefix CRC: the version check fires and names both versions.
    func testNewerMajorVersion() throws {
        var b = Self.good
        F.put(&b, 8, 2, 2)
        F.fixPrefixCRC(&b)
        assertRejected(b, "v2.dico", ["version 2.1", "reads version 1.x only", "newer dico-convert"])
        // A newer minor version of major 1 is readable (prefix and header agreeing on 1.7).
        var minor = Self.good
        F.put(&minor, 10, 7, 2)
        try F.editHeader(&minor) { F.replacing($0, "version", with: .array([.integer(1), .integer(7)])) }
        let path = "\(dir!)/v1_7.dico"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(minor)))
        XCTAssertEqual(try DicoFile(path: path).minor, 7)
    }

    /// Flags: an undefined bit is refused in any version; bit 0 (a generic ONNX graph) is
    /// unknown to a 1.0 file, and in a 1.1 file must come with an `onnx_graph`.
    func testUnknownFlags() {
        var high = Self.good
        F.put(&high, 12, 0x8000_0000, 4)
        F.fixPrefixCRC(&high)
        assertRejected(high, "flags0x80000000.dico", ["unknown flags 0x80000000"])
        var v10 = Self.good
        F.put(&v10, 10, 0, 2)
        F.put(&v10, 12, 1, 4)
        F.fixPrefixCRC(&v10)
        assertRejected(v10, "flags0x1-v1.0.dico", ["unknown flags 0x1", "version 1.0 file"])
        var v11 = Self.good
        F.put(&v11, 12, 1, 4)
        F.fixPrefixCRC(&v11)
        assertRejected(v11, "flags0x1-v1.1.dico", ["flag bit 0 says the graph is an ONNX graph, but the header has no 'onnx_graph'"])
    }

    /// The header's "version" must equal the prefix's.
    func testHeaderVersionDiffersFromPrefix() throws {
        var b = Self.good
        try F.editHeader(&b) { F.replacing($0, "version", with: .array([.integer(1), .integer(0)])) }
        assertRejected(b, "header-version.dico", ["'version'", "1.1"])
    }

    /// Any changed byte in 16..59 without fixing the CRC: the prefix CRC check fires (before
    /// the length or header checks the byte might otherwise upset).
    func testCorruptPrefix() {
        for at in [16, 24, 31, 33, 40, 48, 52, 56, 59] {
            var b = Self.good
            b[at] ^= 0x10
            assertRejected(b, "prefix\(at).dico", ["64-byte prefix is corrupt", "CRC mismatch"])
        }
        var crc = Self.good
        crc[61] ^= 1
        assertRejected(crc, "prefixcrc.dico", ["64-byte prefix is corrupt"])
    }

    /// A prefix with a valid CRC but impossible fields.
    func testInconsistentPrefix() {
        var b = Self.good
        F.put(&b, 32, UInt64(dataOffset + 8), 8)   // data offset not a multiple of 64
        F.put(&b, 40, UInt64(dataLength - 8), 8)
        F.fixPrefixCRC(&b)
        assertRejected(b, "prefix-fields.dico", ["inconsistent prefix"])
        var h = Self.good
        F.put(&h, 24, UInt64(dataOffset), 8)       // header running into the data section
        F.fixPrefixCRC(&h)
        assertRejected(h, "prefix-header.dico", ["inconsistent prefix"])
    }

    // MARK: - Header and data

    func testCorruptHeaderByte() {
        let headerLength = F.u64(Self.good, 24)
        for at in [64, 64 + headerLength / 2, 64 + headerLength - 1] {
            var b = Self.good
            b[at] ^= 0x01
            assertRejected(b, "header\(at).dico", ["JSON header is corrupt", "CRC mismatch"])
        }
    }

    /// A flipped data byte names the tensor that holds it (found from the reader's table).
    func testCorruptTensorData() throws {
        for name in ["latent.0.conv1.weight", "latent.0.conv1.weight#scale", "final_layer.out_proj.bias", "x_embedder.proj.weight"] {
            let e = try XCTUnwrap(table.first { $0.name == name }, name)
            var b = Self.good
            b[dataOffset + e.offset + e.length / 2] ^= 0x40
            assertRejected(b, "data-\(name).dico", ["tensor '\(name)' is corrupt", "CRC-32 mismatch", "stored \(CRC32.hex(e.crc32))"])
            // Without the full check the file opens, and the damage is in that tensor only.
            let path = "\(dir!)/data-\(name).dico"
            let f = try DicoFile(path: path, verifyChecksums: false)
            XCTAssertNotEqual(CRC32.checksum(try XCTUnwrap(f.tensor(name)).bytes), e.crc32)
            for other in f.tensors where other.name != name {
                XCTAssertEqual(CRC32.checksum(try XCTUnwrap(f.tensor(other.name)).bytes), other.crc32, other.name)
            }
        }
    }

    /// Two damaged tensors are both named, in a grammatical message. Fails today: the reader
    /// writes "tensor s 'a', 'b' are corrupt" (see the bug report).
    func testTwoCorruptTensorsAreBothNamed() {
        let t = table
        var b = Self.good
        let a = t[3], c = t[100]
        b[dataOffset + a.offset] ^= 1
        b[dataOffset + c.offset] ^= 1
        assertRejected(b, "data-two.dico", ["'\(a.name)'", "'\(c.name)'", "are corrupt"])
        assertRejected(b, "data-two-plural.dico", ["tensors '"])
    }

    // MARK: - Tensor table offsets

    func testMisalignedOffset() throws {
        let t = table
        let k = t.count / 2
        var b = Self.good
        try F.editTensorTable(&b) { F.setOffset(&$0, k, t[k].offset + 32) }
        assertRejected(b, "misaligned.dico", ["tensor '\(t[k].name)'", "offset \(t[k].offset + 32) is not 64-byte aligned"])
    }

    func testOffsetPastTheDataSection() throws {
        let t = table
        let last = t.indices.max { t[$0].offset < t[$1].offset }!
        var b = Self.good
        let beyond = (dataLength / 64 + 1) * 64
        try F.editTensorTable(&b) { F.setOffset(&$0, last, beyond) }
        assertRejected(b, "past.dico", ["tensor '\(t[last].name)'", "run past the end of the data section", "(\(dataLength) bytes)"])
        // Starting inside the data section but running past its end.
        let big = t.indices.first { t[$0].length > 256 }!
        var c = Self.good
        let start = (dataLength - 64) / 64 * 64
        try F.editTensorTable(&c) { F.setOffset(&$0, big, start) }
        assertRejected(c, "runs-past.dico", ["tensor '\(t[big].name)'", "run past the end of the data section"])
    }

    func testOverlappingTensors() throws {
        let t = table
        let byOffset = t.indices.sorted { t[$0].offset < t[$1].offset }
        let a = byOffset[10], b0 = byOffset[11]
        var b = Self.good
        // b0 moved to start inside a (64-byte aligned, still inside the data section).
        try F.editTensorTable(&b) { F.setOffset(&$0, b0, t[a].offset) }
        assertRejected(b, "overlap.dico", ["'\(t[b0].name)'", "'\(t[a].name)'", "overlap"])
        // A tensor moved over the first one.
        var c = Self.good
        let last = byOffset.last!
        try F.editTensorTable(&c) { F.setOffset(&$0, last, 0) }
        let m = assertRejected(c, "overlap0.dico", ["'\(t[last].name)'"])
        XCTAssertTrue(m.contains("overlap") || m.contains("lies before"), m)
    }

    // MARK: - Not a .dico at all

    // MARK: - Hostile graphs: errors, never traps

    /// Edits the first node of the graph whose op is `op`.
    func editNode(_ b: inout [UInt8], op: String, _ edit: @escaping (JSONValue) -> JSONValue) throws {
        try F.editHeader(&b) { root in
            let graph = try XCTUnwrap(F.member(root, "graph"))
            var nodes = try XCTUnwrap(F.member(graph, "nodes")?.arrayValue)
            let i = try XCTUnwrap(nodes.firstIndex { F.member($0, "op")?.stringValue == op })
            nodes[i] = edit(nodes[i])
            return F.replacing(root, "graph", with: F.replacing(graph, "nodes", with: .array(nodes)))
        }
    }

    /// The bytes between tensors must be zero (no CRC covers them).
    func testNonZeroGapByte() {
        let t = table
        let k = t.indices.first { t[$0].length % 64 != 0 && $0 + 1 < t.count }!
        var b = Self.good
        b[dataOffset + t[k].offset + t[k].length] = 1
        assertRejected(b, "gap.dico", ["non-zero bytes between tensor '\(t[k].name)'"])
    }

    func testHugeAttributeIsRejectedNotATrap() throws {
        var b = Self.good
        try editNode(&b, op: "conv2d") { n in
            F.replacing(n, "attrs", with: F.replacing(F.member(n, "attrs")!, "padding", with: .integer(4_611_686_018_427_387_904)))
        }
        assertRejected(b, "huge-padding.dico", ["attribute 'padding'", "not an integer in 0..."])
    }

    func testDuplicateAttributeIsRejected() throws {
        var b = Self.good
        try editNode(&b, op: "slice") { n in
            var attrs = F.member(n, "attrs")!.objectMembers!
            attrs.append(attrs[0])
            return F.replacing(n, "attrs", with: .object(attrs))
        }
        assertRejected(b, "dup-attr.dico", ["an attribute appears twice"])
    }

    /// A reader meets an op it does not know (a later version's): the file is refused,
    /// naming the node and the op, rather than run without it.
    func testUnknownOpIsRejectedByName() throws {
        var b = Self.good
        try editNode(&b, op: "slice") { n in F.replacing(n, "op", with: .string("slice_v9")) }
        assertRejected(b, "unknown-op.dico", ["unknown op 'slice_v9'"])
    }

    /// The version stamp follows the ops: a graph of 1.0 ops is written as 1.0 (so files
    /// without the 1.1 fusions are unchanged), one with a 1.1 op as 1.1.
    func testMinorVersionFollowsTheOps() throws {
        XCTAssertEqual(try DicoFile(path: Self.goodPath).minor, 1, "the default pipeline's graph holds 1.1 fusions")
        XCTAssertEqual(DicoFormatInfo.minor(for: try Self.everyOpGraph()), 0)
        XCTAssertEqual(DicoFormatInfo.minor(for: try Self.otherAttributesGraph()), 1)
        let f = try roundTrip(try Self.otherAttributesGraph(), "v11")
        XCTAssertEqual(f.minor, 1)
    }

    func testEmptyFile() {
        assertRejected([], "empty.dico", ["0 bytes", "shorter than the 64-byte .dico prefix"])
    }

    func testTenByteFile() {
        assertRejected(Array(Self.good.prefix(10)), "ten.dico", ["10 bytes", "shorter than the 64-byte .dico prefix"])
    }

    func testRandomBytes() {
        var state: UInt64 = 0x1234_5678
        let bytes: [UInt8] = (0..<4096).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        XCTAssertNotEqual(bytes[0], 0x89)
        assertRejected(bytes, "random.dico", ["bad magic"])
        // Random bytes behind a valid magic are caught by the later checks.
        assertRejected(Array(Self.good.prefix(8)) + bytes, "random-magic.dico", [])
    }

    // MARK: - Graph JSON round trip

    /// A graph that uses every Op case, every attribute kind and fractional symbolic shapes.
    static func everyOpGraph() throws -> Graph {
        var g = Graph()
        func w(_ name: String, _ shape: [Int], _ seed: Float) -> ValueID {
            let n = shape.reduce(1, *)
            return g.addConstant(name, TensorData(shape: shape, floats: (0..<n).map { Float(($0 * 7 + Int(seed * 13)) % 17) / 17 - 0.5 }))
        }
        let x = g.addInput("x", TensorType(.f32, [.s(.N), .c(4), .s(.H), .s(.W)]))
        let t = g.addInput("t", TensorType(.f32, [.s(.N)]))
        let y = g.addInput("y", TensorType(.i64, [.s(.N)]))
        let u = g.addInput("u", TensorType(.f32, [Dim(symbol: .N, num: 3, den: 2), .c(5)]))
        let c = try g.add(.conv2d(stride: 1, padding: 1, groups: 1), [x, w("conv.weight", [8, 4, 3, 3], 1), w("conv.bias", [8], 2)], name: "conv")
        let dw = try g.add(.conv2d(stride: 1, padding: 1, groups: 8), [c, w("dw.weight", [8, 1, 3, 3], 3)], name: "dw")
        let d = try g.add(.pixelUnshuffle(factor: 2), [dw], name: "down")
        let n = try g.add(.channelLayerNorm(eps: 1e-6), [d], name: "norm")
        let e = try g.add(.timestepEmbedding(dim: 64, maxPeriod: 10_000), [t], name: "temb")
        let emb = try g.add(.embedding, [w("table", [11, 64], 4), y], name: "yemb")
        let s = try g.add(.add, [e, emb], name: "cond")
        let a = try g.add(.silu, [s], name: "act")
        let p = try g.add(.linear, [a, w("ada.weight", [96, 64], 5), w("ada.bias", [96], 6)], name: "ada")
        let shift = try g.add(.slice(axis: 1, start: 0, length: 32), [p], name: "shift")
        let scale = try g.add(.slice(axis: 1, start: 32, length: 32), [p], name: "scale")
        let gate = try g.add(.slice(axis: 1, start: 64, length: 32), [p], name: "gate")
        let m = try g.add(.modulate, [n, shift, scale], name: "mod")
        let ge = try g.add(.gelu, [m], name: "gelu")
        let pool = try g.add(.globalAvgPool, [ge], name: "pool")
        let sg = try g.add(.sigmoid, [pool], name: "sig")
        let mm = try g.add(.mul, [ge, sg], name: "ca")
        let r = try g.add(.gatedAdd, [n, gate, mm], name: "res")
        let up = try g.add(.pixelShuffle(factor: 2), [r], name: "up")
        let cat = try g.add(.concat(axis: 1), [up, c, dw], name: "cat")
        let out = try g.add(.conv2d(stride: 1, padding: 0, groups: 1), [cat, w("out.weight", [8, 24, 1, 1], 7)], name: "out")
        let lin = try g.add(.linear, [p, w("nobias.weight", [3, 96], 8)], name: "nobias")
        let us = try g.add(.sigmoid, [u], name: "u.sig")
        g.outputs = [out, lin, us]
        try g.verify()
        return g
    }

    /// Other attribute values: strided convolution on constant shapes, a non-integral
    /// max_period and eps, slices and concatenation on axis 0, factor 4.
    static func otherAttributesGraph() throws -> Graph {
        var g = Graph()
        let z = g.addInput("z", TensorType(.f32, [.c(2), .c(16), .c(8), .c(8)]))
        let t = g.addInput("t", TensorType(.f32, [.c(3)]))
        let k = g.addConstant("k", TensorData(shape: [4, 8, 3, 3], floats: [Float](repeating: 0.125, count: 4 * 8 * 9)))
        let c = try g.add(.conv2d(stride: 2, padding: 0, groups: 2), [z, k], name: "strided")
        let n = try g.add(.channelLayerNorm(eps: 1e-5), [c], name: "ln")
        let s = try g.add(.slice(axis: 0, start: 1, length: 1), [n], name: "s0")
        let cat = try g.add(.concat(axis: 0), [n, s, n], name: "c0")
        let ps = try g.add(.pixelUnshuffle(factor: 4), [z], name: "u4")
        let sh = try g.add(.pixelShuffle(factor: 4), [ps], name: "s4")
        let e = try g.add(.timestepEmbedding(dim: 6, maxPeriod: 100.5), [t], name: "emb")
        let v = try g.add(.slice(axis: 1, start: 0, length: 4), [try g.add(.slice(axis: 0, start: 0, length: 2), [e], name: "e2")], name: "v")
        let lm = try g.add(.layerNormModulate(eps: 1e-5), [c, v, v], name: "lnmod")
        let ca = try g.add(.conv2dActivation(stride: 2, padding: 1, groups: 2, activation: .sigmoid), [z, k], name: "conv_act")
        let kb = g.addConstant("kb", TensorData(shape: [4], floats: [0.5, -1, 2, 0]))
        let cg = try g.add(.conv2dGatedAdd(stride: 2, padding: 0, groups: 2), [z, k, kb, c, v], name: "conv_gated")
        let caw = g.addConstant("caw", TensorData(shape: [16, 16, 1, 1], floats: (0..<256).map { Float($0 % 7) * 0.25 - 0.75 }))
        let att = try g.add(.channelAttention, [z, caw], name: "attention")
        g.outputs = [cat, sh, e, lm, ca, cg, att]
        try g.verify()
        return g
    }

    /// Writes `graph` through DicoWriter and reads it back. Constants become jobs: the first
    /// two together in one job (as an int8 weight and its scales would be), the others one per
    /// job; constants named in `asF16` are stored as f16 (the graph still computes in f32).
    func roundTrip(_ graph: Graph, _ name: String, asF16: Set<String> = []) throws -> DicoFile {
        let path = "\(dir!)/\(name).dico"
        let ids = graph.constantIDs
        func output(_ id: ValueID) -> DicoTensorOutput {
            DicoTensorOutput(name: graph[id].name, dtype: asF16.contains(graph[id].name) ? .f16 : .f32, shape: graph.constant(id)!.shape)
        }
        func fill(_ id: ValueID, _ buf: UnsafeMutableRawBufferPointer) {
            let d = graph.constant(id)!
            if asF16.contains(graph[id].name) {
                for (i, v) in d.floats().enumerated() { buf.storeBytes(of: Float16(v).bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
            } else {
                buf.copyMemory(from: d.bytes)
            }
        }
        var jobs: [DicoTensorJob] = []
        var rest = ids[...]
        if ids.count >= 2 {
            let a = ids[0], b = ids[1]
            jobs.append(DicoTensorJob([output(a), output(b)]) { bufs in fill(a, bufs[0]); fill(b, bufs[1]) })
            rest = ids.dropFirst(2)
        }
        for id in rest { jobs.append(DicoTensorJob([output(id)]) { bufs in fill(id, bufs[0]) }) }
        try DicoWriter.write(to: path, overwrite: false, model: .object([("architecture", .string("test"))]), graph: graph,
                             provenance: .object([("tool", .string("FormatTests"))]), jobs: jobs, threads: 3)
        return try DicoFile(path: path)
    }

    func testGraphJSONRoundTripOfEveryOp() throws {
        let g = try Self.everyOpGraph()
        var seen = Set(g.nodes.map(\.op.name))
        let f = try roundTrip(g, "every-op", asF16: ["nobias.weight"])
        XCTAssertEqual(f.graph.textDump(), g.textDump())
        XCTAssertEqual(f.graph.nodes.map(\.op), g.nodes.map(\.op))
        XCTAssertEqual(f.graph.nodes.map(\.name), g.nodes.map(\.name))
        XCTAssertEqual(f.graph.inputs, g.inputs)
        XCTAssertEqual(f.graph.outputs, g.outputs)
        XCTAssertEqual(f.graph.values.map(\.type), g.values.map(\.type))
        for id in g.constantIDs {
            let d = try XCTUnwrap(f.graph.constant(id))
            if g[id].name == "nobias.weight" {
                XCTAssertEqual(d.dtype, .f16)
                XCTAssertEqual(d.floats(), g.constant(id)!.floats().map { Float(Float16($0)) })
            } else {
                XCTAssertEqual(d.dtype, .f32)
                XCTAssertTrue(d.bytes.elementsEqual(g.constant(id)!.bytes), g[id].name)
            }
        }
        XCTAssertEqual(f.tensors.map(\.name), g.constantIDs.map { g[$0].name }, "tensors in job order")
        XCTAssertEqual(DicoFile.hasMagic(f.path), true)
        XCTAssertEqual(FormatSupport.member(f.model, "architecture"), .string("test"))

        let g2 = try Self.otherAttributesGraph()
        seen.formUnion(g2.nodes.map(\.op.name))
        let f2 = try roundTrip(g2, "other-attrs")
        XCTAssertEqual(f2.graph.textDump(), g2.textDump())
        XCTAssertEqual(f2.graph.nodes.map(\.op), g2.nodes.map(\.op))

        // Every op of the closed set was exercised.
        let all: [Op] = [.conv2d(stride: 1, padding: 0, groups: 1), .linear, .channelLayerNorm(eps: 1), .modulate, .gatedAdd, .gelu, .silu,
                         .sigmoid, .globalAvgPool, .mul, .add, .slice(axis: 0, start: 0, length: 0), .concat(axis: 0),
                         .pixelShuffle(factor: 1), .pixelUnshuffle(factor: 1), .embedding, .timestepEmbedding(dim: 2, maxPeriod: 2),
                         .layerNormModulate(eps: 1), .conv2dActivation(stride: 1, padding: 0, groups: 1, activation: .gelu),
                         .conv2dGatedAdd(stride: 1, padding: 0, groups: 1), .channelAttention]
        XCTAssertEqual(seen, Set(all.map(\.name)))
        for op in all { exhaustive(op) }
    }

    /// Compile-time guard: a new Op case makes this switch (without default) fail to build,
    /// so the round-trip graphs above must learn it.
    private func exhaustive(_ op: Op) {
        switch op {
        case .conv2d, .linear, .channelLayerNorm, .modulate, .gatedAdd, .gelu, .silu, .sigmoid, .globalAvgPool, .mul, .add,
             .slice, .concat, .pixelShuffle, .pixelUnshuffle, .embedding, .timestepEmbedding, .layerNormModulate, .conv2dActivation,
             .conv2dGatedAdd, .channelAttention: break
        }
    }

    /// The real DiCo graph survives the round trip through conversion too: the file holds
    /// the imported graph after the default pipeline.
    func testConvertedGraphMatchesTheImportedOne() throws {
        let f = try DicoFile(path: Self.goodPath)
        let source = try LoadedModel.open(F.tiny)
        let (optimized, _) = try PassManager().run(source.graph)
        XCTAssertEqual(f.graph.textDump(), optimized.textDump())
    }
}
