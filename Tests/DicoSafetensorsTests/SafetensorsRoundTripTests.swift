import DicoTestSupport
import DicoCore
@testable import DicoSafetensors
import XCTest

final class SafetensorsRoundTripTests: XCTestCase {
    var dir: TempDir!

    override func setUpWithError() throws { dir = try TempDir() }
    override func tearDown() { dir.remove() }

    /// An owned tensor whose bytes are a recognizable pattern.
    func patterned(_ dtype: DType, _ shape: [Int], seed: UInt8) -> TensorData {
        let count = shape.reduce(1, *) * dtype.byteSize
        let owned = OwnedBytes(count: count)
        for i in 0..<count { owned.pointer.storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed)), toByteOffset: i, as: UInt8.self) }
        return TensorData(dtype: dtype, shape: shape, storage: .owned(owned), byteCount: count)
    }

    func testRoundTripEveryDtypeWithZeroSizeAndScalarTensors() throws {
        var tensors: [(name: String, data: TensorData)] = []
        for (i, dtype) in DType.allCases.enumerated() {
            tensors.append(("\(dtype.safetensorsName).matrix", patterned(dtype, [3, 5], seed: UInt8(i))))
            tensors.append(("\(dtype.safetensorsName).scalar", patterned(dtype, [], seed: UInt8(i + 100))))
            tensors.append(("\(dtype.safetensorsName).empty", patterned(dtype, [2, 0, 3], seed: 0)))
        }
        tensors.append(("unicode.é/\"quoted\"\\", patterned(.f32, [1, 1, 1, 2], seed: 7)))
        let metadata = ["format": "pt", "note": "line1\nline2 \"q\" é 😀", "": "empty key", "ctrl": "\u{01}\t"]
        let path = dir.file("all.safetensors")
        try SafetensorsWriter.write(tensors, metadata: metadata, to: path, overwrite: false)

        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.names, tensors.map(\.name), "header order is the order given")
        XCTAssertEqual(f.metadata, metadata)
        XCTAssertEqual(f.dataStart % 8, 0, "header padded to a multiple of 8")
        var expectedBegin = 0
        for (name, data) in tensors {
            let info = try XCTUnwrap(f.info(name))
            XCTAssertEqual(info.dtype, data.dtype, name)
            XCTAssertEqual(info.shape, data.shape, name)
            XCTAssertEqual(info.begin, expectedBegin, "offsets contiguous in the order given")
            XCTAssertEqual(info.byteCount, data.byteCount, name)
            expectedBegin = info.end
            let t = try XCTUnwrap(f.tensor(name))
            XCTAssertEqual(Array(t.bytes), Array(data.bytes), name)
            guard case let .mapped(file, offset) = t.storage else { return XCTFail("\(name) is not zero-copy") }
            XCTAssertTrue(file === f.file)
            XCTAssertEqual(offset, f.dataStart + info.begin)
        }
        XCTAssertEqual(f.file.size, f.dataStart + expectedBegin)
        XCTAssertNil(f.info("missing"))
        XCTAssertNil(f.tensor("missing"))
        XCTAssertEqual(dir.contents(), ["all.safetensors"], "no temporary left behind")
    }

    func testWrittenHeaderParsesBack() throws {
        let entries = [SafetensorsEntry(name: "b", dtype: .bf16, shape: [2, 3]),
                       SafetensorsEntry(name: "a", dtype: .i64, shape: [])]
        let header = SafetensorsWriter.headerBytes(entries, [12, 8], ["k": "v"])
        XCTAssertEqual(header.count % 8, 0)
        let json = try header.withUnsafeBytes { try StrictJSON.parse($0) } // trailing spaces are JSON whitespace
        let expected: JSONValue = .object([
            (key: "__metadata__", value: .object([(key: "k", value: .string("v"))])),
            (key: "b", value: .object([(key: "dtype", value: .string("BF16")),
                                       (key: "shape", value: .array([.integer(2), .integer(3)])),
                                       (key: "data_offsets", value: .array([.integer(0), .integer(12)]))])),
            (key: "a", value: .object([(key: "dtype", value: .string("I64")),
                                       (key: "shape", value: .array([])),
                                       (key: "data_offsets", value: .array([.integer(12), .integer(20)]))])),
        ])
        XCTAssertEqual(json, expected)
    }

    /// Byte-for-byte the outputs of the reference implementation's serialization tests
    /// (safetensors/src/tensor.rs `test_serialization`, `test_empty`).
    func testOutputMatchesReferenceBytes() throws {
        let floats: [Float] = [0, 1, 2, 3, 4, 5]
        let p1 = dir.file("ref1.safetensors")
        try SafetensorsWriter.write([("attn.0", TensorData(shape: [1, 2, 3], floats: floats))], metadata: nil, to: p1, overwrite: false)
        let json1 = #"{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}"#
        var expected1 = safetensorsBytes(header: json1)
        floats.withUnsafeBytes { expected1 += $0 }
        XCTAssertEqual(dir.read("ref1.safetensors"), expected1)

        let p2 = dir.file("ref2.safetensors")
        try SafetensorsWriter.write([], metadata: nil, to: p2, overwrite: false)
        XCTAssertEqual(dir.read("ref2.safetensors"), [8, 0, 0, 0, 0, 0, 0, 0, 123, 125, 32, 32, 32, 32, 32, 32])

        let p3 = dir.file("ref3.safetensors")
        try SafetensorsWriter.write([], metadata: ["framework": "pt"], to: p3, overwrite: false)
        XCTAssertEqual(dir.read("ref3.safetensors"), safetensorsBytes(header: #"{"__metadata__":{"framework":"pt"}}     "#))
        XCTAssertEqual(try SafetensorsFile(path: p3).metadata, ["framework": "pt"])
        XCTAssertEqual(try SafetensorsFile(path: p2).metadata, nil)
    }

    func testOutputIsDeterministic() throws {
        let meta = Dictionary(uniqueKeysWithValues: (0..<50).map { ("key\($0)", "v\($0)") })
        let tensors = [("x", patterned(.f16, [4, 4], seed: 1)), ("y", patterned(.u8, [3], seed: 2))]
        try SafetensorsWriter.write(tensors, metadata: meta, to: dir.file("d1"), overwrite: false)
        try SafetensorsWriter.write(tensors, metadata: meta, to: dir.file("d2"), overwrite: false)
        XCTAssertEqual(dir.read("d1"), dir.read("d2"))
    }

    func testStreamingFillCalledInOrderWithExactSizes() throws {
        let entries = [SafetensorsEntry(name: "w", dtype: .f32, shape: [2, 3]),
                       SafetensorsEntry(name: "z", dtype: .f64, shape: [0]),
                       SafetensorsEntry(name: "s", dtype: .i16, shape: [])]
        var calls: [(Int, Int)] = []
        let path = dir.file("stream.safetensors")
        try SafetensorsWriter.write(entries: entries, metadata: nil, to: path, overwrite: false) { i, buf in
            calls.append((i, buf.count))
            XCTAssertTrue(buf.allSatisfy { $0 == 0 }, "buffer handed over zeroed")
            for k in 0..<buf.count { buf[k] = UInt8(i * 16 + k) }
        }
        XCTAssertEqual(calls.map(\.0), [0, 1, 2])
        XCTAssertEqual(calls.map(\.1), [24, 0, 2])
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(Array(f.tensor("w")!.bytes), (0..<24).map { UInt8($0) })
        XCTAssertEqual(Array(f.tensor("s")!.bytes), [32, 33])
        XCTAssertEqual(f.info("z")?.byteCount, 0)
    }

    func testWriterRejectsBadNamesAndLeavesNoFile() throws {
        let path = dir.file("bad.safetensors")
        let t = TensorData(shape: [1], floats: [1])
        assertDicoError(.invalidInput, contains: ["bad.safetensors", "empty name"]) {
            try SafetensorsWriter.write([("", t)], metadata: nil, to: path, overwrite: false)
        }
        assertDicoError(.invalidInput, contains: ["bad.safetensors", "'a'", "duplicate tensor name"]) {
            try SafetensorsWriter.write([("a", t), ("a", t)], metadata: nil, to: path, overwrite: false)
        }
        assertDicoError(.invalidInput, contains: ["reserved for metadata"]) {
            try SafetensorsWriter.write([("__metadata__", t)], metadata: nil, to: path, overwrite: false)
        }
        assertDicoError(.invalidInput, contains: ["negative dimension"]) {
            try SafetensorsWriter.write(entries: [SafetensorsEntry(name: "n", dtype: .u8, shape: [-1])], metadata: nil,
                                        to: path, overwrite: false) { _, _ in }
        }
        let lying = TensorData(dtype: .f32, shape: [2], storage: t.storage, byteCount: 4)
        assertDicoError(.invalidInput, contains: ["'l'", "holds 4 bytes"]) {
            try SafetensorsWriter.write([("l", lying)], metadata: nil, to: path, overwrite: false)
        }
        XCTAssertEqual(dir.contents(), [])
    }

    func testWriterFillErrorRemovesTemporary() throws {
        struct Boom: Error {}
        let path = dir.file("boom.safetensors")
        XCTAssertThrowsError(try SafetensorsWriter.write(entries: [SafetensorsEntry(name: "a", dtype: .u8, shape: [4])],
                                                         metadata: nil, to: path, overwrite: false) { _, _ in throw Boom() }) {
            XCTAssertTrue($0 is Boom)
        }
        XCTAssertEqual(dir.contents(), [])
    }

    func testWriterRespectsOverwrite() throws {
        let path = try dir.write("exists.safetensors", [1, 2, 3])
        let t = TensorData(shape: [1], floats: [1])
        assertDicoError(.usage, contains: ["exists.safetensors", "already exists; pass --force to overwrite"]) {
            try SafetensorsWriter.write([("a", t)], metadata: nil, to: path, overwrite: false)
        }
        XCTAssertEqual(dir.read("exists.safetensors"), [1, 2, 3])
        try SafetensorsWriter.write([("a", t)], metadata: nil, to: path, overwrite: true)
        XCTAssertEqual(try SafetensorsFile(path: path).names, ["a"])
    }

    /// Reader acceptance beyond what the writer produces: offsets in any header order,
    /// zero-size tensors sharing an offset, no padding, an empty metadata map.
    func testReaderAcceptsUnsortedHeaderAndZeroSizeTensors() throws {
        let h = #"{"late":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},"__metadata__":{},"#
            + #""z1":{"dtype":"F32","shape":[0,7],"data_offsets":[4,4]},"early":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},"#
            + #""z2":{"dtype":"BOOL","shape":[0],"data_offsets":[6,6]}}"#
        let path = try dir.write("unsorted.safetensors", safetensorsBytes(header: h, dataCount: 6))
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.names, ["late", "z1", "early", "z2"])
        XCTAssertEqual(f.metadata, [:])
        XCTAssertEqual(f.dataStart, 8 + h.utf8.count)
        XCTAssertEqual(Array(f.tensor("late")!.bytes), [4, 5])
        XCTAssertEqual(f.tensor("early")!.int64s(), [0x0100, 0x0302])
        XCTAssertEqual(f.tensor("z2")!.byteCount, 0)
        XCTAssertEqual(f.info("z1"), SafetensorsTensorInfo(name: "z1", dtype: .f32, shape: [0, 7], begin: 4, end: 4))
    }

    func testReaderAcceptsEmptyFileHeader() throws {
        let path = try dir.write("empty.safetensors", safetensorsBytes(header: "{}      "))
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.tensors, [])
        XCTAssertNil(f.metadata)
    }

    func testMissingFileIsIOError() {
        assertDicoError(.io, contains: ["nope.safetensors"]) { _ = try SafetensorsFile(path: dir.file("nope.safetensors")) }
    }
}
