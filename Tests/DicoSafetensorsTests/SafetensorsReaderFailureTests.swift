import DicoTestSupport
import DicoCore
import DicoSafetensors
import XCTest

/// One test per rule the reader enforces: each crafts a bad file by hand and checks the error
/// is `.invalidInput` and names the file, the tensor (when there is one) and the rule.
final class SafetensorsReaderFailureTests: XCTestCase {
    var dir: TempDir!

    override func setUpWithError() throws { dir = try TempDir() }
    override func tearDown() { dir.remove() }

    /// Writes `bytes` as `name` and asserts that opening it fails with `phrase` (and `tensor`).
    func expectRejected(_ name: String, _ bytes: [UInt8], tensor: String? = nil, _ phrase: String,
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try dir.write(name, bytes)
        var needles = [name, phrase]
        if let tensor { needles.append("tensor '\(tensor)'") }
        assertDicoError(.invalidInput, contains: needles, file: file, line: line) {
            _ = try SafetensorsFile(path: path)
        }
    }

    let f32x1 = #"{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#

    func testFileShorterThan8Bytes() throws {
        try expectRejected("short.safetensors", [1, 2, 3], "shorter than the 8-byte header length prefix")
        try expectRejected("empty.safetensors", [], "shorter than the 8-byte header length prefix")
    }

    func testHeaderLengthOverCap() throws {
        var bytes = safetensorsBytes(header: "{}")
        let n = UInt64(SafetensorsFile.maxHeaderLength + 1)
        for i in 0..<8 { bytes[i] = UInt8((n >> (8 * UInt64(i))) & 0xFF) }
        try expectRejected("cap.safetensors", bytes, "exceeds the limit of 100000000 bytes")
        // A u64 above Int.max must not trap.
        for i in 0..<8 { bytes[i] = 0xFF }
        try expectRejected("huge.safetensors", bytes, "exceeds the limit")
    }

    func testHeaderLengthPastEndOfFile() throws {
        var bytes = safetensorsBytes(header: "{}      ")
        bytes[0] = 9 // one byte more than there is
        try expectRejected("pasteof.safetensors", bytes, "runs past the end of the file")
    }

    func testInvalidUTF8InHeader() throws {
        // 0xFF never occurs in UTF-8; C0 AF is an overlong '/'; ED A0 80 encodes a surrogate.
        for (i, bad) in [[0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x82]].enumerated() {
            let header = Array(#"{"a"#.utf8) + bad.map(UInt8.init) + Array(#"":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#.utf8)
            try expectRejected("utf8-\(i).safetensors", safetensorsBytes(headerBytes: header), "header is not valid UTF-8")
        }
    }

    func testHeaderNotJSON() throws {
        try expectRejected("notjson.safetensors", safetensorsBytes(header: "{not json}"), "header is not valid JSON")
        try expectRejected("truncated.safetensors", safetensorsBytes(header: #"{"a":{"dtype":"#), "header is not valid JSON")
        try expectRejected("emptyheader.safetensors", safetensorsBytes(header: ""), "header is not valid JSON")
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        try expectRejected("deep.safetensors", safetensorsBytes(header: #"{"__metadata__":"# + deep + "}"), "header is not valid JSON")
    }

    func testHeaderNotAnObject() throws {
        try expectRejected("array.safetensors", safetensorsBytes(header: "[1, 2]  "), "header JSON must be an object, found array")
        try expectRejected("string.safetensors", safetensorsBytes(header: #""x""#), "header JSON must be an object, found string")
    }

    func testNonSpaceTrailingBytesAfterJSON() throws {
        // RFC whitespace other than space is still rejected: the reference writer pads with spaces only.
        try expectRejected("newline.safetensors", safetensorsBytes(header: "{}\n     "), "non-space bytes after the JSON object")
        try expectRejected("garbage.safetensors", safetensorsBytes(header: "{}xyz   "), "non-space bytes after the JSON object")
        try expectRejected("nul.safetensors", safetensorsBytes(header: "{}\0\0\0\0\0\0"), "non-space bytes after the JSON object")
        try expectRejected("twoobjects.safetensors", safetensorsBytes(header: "{}{}    "), "non-space bytes after the JSON object")
    }

    func testEntryNotAnObject() throws {
        try expectRejected("entry.safetensors", safetensorsBytes(header: #"{"conv.w":[0,4]}"#, dataCount: 4),
                           tensor: "conv.w", "entry must be an object")
    }

    func testMissingKey() throws {
        try expectRejected("missing.safetensors", safetensorsBytes(header: #"{"w":{"dtype":"F32","shape":[1]}}"#, dataCount: 4),
                           tensor: "w", "missing key 'data_offsets'")
        try expectRejected("missing2.safetensors", safetensorsBytes(header: #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, dataCount: 4),
                           tensor: "w", "missing key 'dtype'")
    }

    func testUnknownKey() throws {
        let h = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"offsets":[0,4]}}"#
        try expectRejected("unknownkey.safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w", "unknown key 'offsets'")
    }

    func testDuplicateKeyInEntry() throws {
        let h = #"{"w":{"dtype":"F32","dtype":"F16","shape":[1],"data_offsets":[0,4]}}"#
        try expectRejected("dupkey.safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w", "duplicate key 'dtype'")
    }

    func testUnknownDtype() throws {
        for (i, dtype) in ["F8_E4M3", "f32", "U16", ""].enumerated() {
            let h = #"{"w":{"dtype":"\#(dtype)","shape":[4],"data_offsets":[0,4]}}"#
            try expectRejected("dtype-\(i).safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w", "unknown dtype '\(dtype)'")
        }
    }

    func testDtypeNotAString() throws {
        let h = #"{"w":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}"#
        try expectRejected("dtypenum.safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w", "dtype must be a string")
    }

    func testShapeNotNonNegativeIntegers() throws {
        for (i, shape) in ["[-1]", "[1.5]", "[\"2\"]", "[1e0]", "[-0]", "[99999999999999999999]", "4", "null", "[[1]]"].enumerated() {
            let h = #"{"w":{"dtype":"U8","shape":\#(shape),"data_offsets":[0,1]}}"#
            try expectRejected("shape-\(i).safetensors", safetensorsBytes(header: h, dataCount: 1), tensor: "w",
                               "shape must be an array of non-negative integers")
        }
    }

    func testDataOffsetsWrongArity() throws {
        for (i, offsets) in ["[]", "[0]", "[0,4,8]"].enumerated() {
            let h = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":\#(offsets)}}"#
            try expectRejected("arity-\(i).safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w",
                               "data_offsets must have exactly 2 elements")
        }
    }

    func testDataOffsetsNotIntegers() throws {
        for (i, offsets) in ["[0,4.0]", "[-4,0]", "[\"0\",4]", "[0,18446744073709551616]"].enumerated() {
            let h = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":\#(offsets)}}"#
            try expectRejected("offsets-\(i).safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w",
                               "data_offsets must be non-negative integers")
        }
        let h = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":{"begin":0}}}"#
        try expectRejected("offsets-obj.safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w",
                           "data_offsets must be an array")
    }

    func testBeginGreaterThanEnd() throws {
        let h = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}"#
        try expectRejected("reversed.safetensors", safetensorsBytes(header: h, dataCount: 8), tensor: "w",
                           "data_offsets [8, 4] have begin greater than end")
    }

    func testSizeMismatch() throws {
        let h = #"{"conv1.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,40]}}"#
        let path = try dir.write("model.safetensors", safetensorsBytes(header: h, dataCount: 40))
        let e = assertDicoError(.invalidInput, contains: []) { _ = try SafetensorsFile(path: path) }
        XCTAssertEqual(e?.message, "\(path): tensor 'conv1.weight': shape [3, 4] x F32 is 48 bytes but data_offsets span 40")
    }

    func testElementCountOverflow() throws {
        let h = #"{"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#
        try expectRejected("overflow.safetensors", safetensorsBytes(header: h, dataCount: 4), tensor: "w", "overflows 64 bits")
        let h2 = #"{"w":{"dtype":"F64","shape":[3037000500,3037000500],"data_offsets":[0,8]}}"#
        try expectRejected("overflow2.safetensors", safetensorsBytes(header: h2, dataCount: 8), tensor: "w", "overflows 64 bits")
    }

    func testOffsetsPastEndOfFile() throws {
        let h = #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#
        try expectRejected("pastdata.safetensors", safetensorsBytes(header: h, dataCount: 8), tensor: "w",
                           "extend past the end of the data section")
    }

    func testOverlap() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        try expectRejected("overlap.safetensors", safetensorsBytes(header: h, dataCount: 12), tensor: "b", "overlap tensor 'a'")
        // Two tensors aliasing the same bytes are an overlap too.
        let h2 = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}"#
        try expectRejected("alias.safetensors", safetensorsBytes(header: h2, dataCount: 4), "overlap tensor")
    }

    func testGap() throws {
        let h = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        try expectRejected("gap.safetensors", safetensorsBytes(header: h, dataCount: 12), tensor: "b", "leave a gap of 4 bytes after tensor 'a'")
        let h2 = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        try expectRejected("gapstart.safetensors", safetensorsBytes(header: h2, dataCount: 8), tensor: "a",
                           "leave a gap of 4 bytes at the start of the data section")
    }

    func testTrailingBytesAfterLastTensor() throws {
        let h = #"{"a":\#(f32x1)}"#
        try expectRejected("trailing.safetensors", safetensorsBytes(header: h, dataCount: 6), "2 trailing bytes after the last tensor")
        try expectRejected("trailing-empty.safetensors", safetensorsBytes(header: "{}", dataCount: 3), "3 trailing bytes after the last tensor")
    }

    func testDuplicateTensorName() throws {
        let h = #"{"a":\#(f32x1),"a":\#(f32x1)}"#
        try expectRejected("dupname.safetensors", safetensorsBytes(header: h, dataCount: 4), "duplicate tensor name 'a'")
    }

    func testMetadataNotStringToString() throws {
        for (i, meta) in [#"{"k":1}"#, #"{"k":{"x":"y"}}"#, #"["k","v"]"#, #""k=v""#, "null"].enumerated() {
            let h = #"{"__metadata__":\#(meta),"a":\#(f32x1)}"#
            try expectRejected("meta-\(i).safetensors", safetensorsBytes(header: h, dataCount: 4), "__metadata__ must map strings to strings")
        }
    }

    func testDuplicateMetadata() throws {
        let h = #"{"__metadata__":{},"__metadata__":{}}"#
        try expectRejected("dupmeta.safetensors", safetensorsBytes(header: h), "duplicate __metadata__ entry")
        let h2 = #"{"__metadata__":{"k":"1","k":"2"}}"#
        try expectRejected("dupmetakey.safetensors", safetensorsBytes(header: h2), "duplicate __metadata__ key 'k'")
    }

    /// Every phrase above is distinct, so a grep for one never matches another failure.
    func testPhrasesAreDistinct() {
        let phrases = [
            "shorter than the 8-byte header length prefix", "exceeds the limit", "runs past the end of the file",
            "header is not valid UTF-8", "header is not valid JSON", "header JSON must be an object",
            "non-space bytes after the JSON object", "entry must be an object", "missing key", "unknown key",
            "duplicate key", "unknown dtype", "dtype must be a string", "shape must be an array of non-negative integers",
            "data_offsets must have exactly 2 elements", "data_offsets must be non-negative integers",
            "data_offsets must be an array", "have begin greater than end", "bytes but data_offsets span",
            "overflows 64 bits", "extend past the end of the data section", "overlap tensor", "leave a gap",
            "trailing bytes after the last tensor", "duplicate tensor name", "__metadata__ must map strings to strings",
            "duplicate __metadata__ entry", "duplicate __metadata__ key",
        ]
        for a in phrases { for b in phrases where a != b { XCTAssertFalse(a.contains(b), "'\(a)' contains '\(b)'") } }
    }
}
