import DicoTestSupport
import CONNXProto
import DicoCore
import DicoONNX
import Foundation
import XCTest

/// One test per failure mode of the ONNX reader. Each bad model is made in the test, from
/// Fixtures/convnet.onnx edited with the generated protobuf-c API (ProtoEdit), so no Python is
/// needed; each asserts the error kind and the phrase that is unique to the failure.
/// Documented kinds: a missing or unreadable file (model or external data) is `.io`; anything
/// wrong inside a file, or a location that is not allowed, is `.invalidInput`.
final class ONNXFailureTests: XCTestCase {
    var dir: TempDir!

    override func setUpWithError() throws { dir = try TempDir() }
    override func tearDown() { dir.remove() }

    /// Writes `bytes` as `name` in the temp dir and asserts that loading it fails as `.invalidInput`.
    func expectRejected(_ name: String, _ bytes: [UInt8], _ phrases: [String],
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let path = try dir.write(name, bytes)
        assertDicoError(.invalidInput, contains: [path] + phrases, file: file, line: line) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func edited(_ edit: (ProtoEdit.Model) throws -> Void) throws -> [UInt8] { try ProtoEdit.edited("convnet.onnx", edit) }

    // MARK: not a model

    func testEmptyFile() throws {
        try expectRejected("empty.onnx", [], ["file is empty (0 bytes), not an ONNX model"])
    }

    func testTruncatedFile() throws {
        let full = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/tiny_opset17.onnx")))
        try expectRejected("truncated.onnx", Array(full[..<(full.count / 2)]), ["not an ONNX model: protobuf parse failed"])
        try expectRejected("truncated1.onnx", Array(full.dropLast()), ["not an ONNX model: protobuf parse failed"])
    }

    func testRandomBytes() throws {
        var state: UInt64 = 0x2545_F491_4F6C_DD1D  // xorshift64: fixed, well-spread bytes
        let bytes = (0..<4096).map { _ -> UInt8 in
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return UInt8(truncatingIfNeeded: state >> 24)
        }
        try expectRejected("random.onnx", bytes, ["not an ONNX model"])
    }

    func testValidProtobufWithoutGraph() throws {
        // ir_version = 8 and nothing else: a well-formed message that is not a model.
        try expectRejected("nograph.onnx", [0x08, 0x08], ["not an ONNX model: no graph"])
    }

    func testMissingModelFileIsIO() {
        assertDicoError(.io, contains: ["\(dir.path)/absent.onnx", "cannot open"]) {
            _ = try ONNXModel.load(path: "\(self.dir.path)/absent.onnx")
        }
    }

    // MARK: ops and opsets

    func testUnknownOp() throws {
        let bytes = try edited { ProtoEdit.node($0, 1).pointee.op_type = ProtoEdit.string("FancyRelu") }
        try expectRejected("unknown-op.onnx", bytes, ["node '/Relu': op 'FancyRelu' (ai.onnx opset 17) is not supported"])
        // parse() alone checks structure only and keeps the node.
        let m = try ONNXModel.parse(path: dir.file("unknown-op.onnx"))
        XCTAssertEqual(m.graph.nodes[1].opType, "FancyRelu")
    }

    func testNonDefaultDomain() throws {
        let bytes = try edited { ProtoEdit.node($0, 1).pointee.domain = ProtoEdit.string("com.microsoft") }
        try expectRejected("domain.onnx", bytes, ["node '/Relu': op 'Relu' is in domain 'com.microsoft' (opset not imported)"])
    }

    func testOpsetOutOfRange() throws {
        let old = try edited { $0.pointee.opset_import[0]!.pointee.version = 12 }
        try expectRejected("opset12.onnx", old, ["ai.onnx opset 12 is not supported (supported: 13 to 21)"])
        let new = try edited { $0.pointee.opset_import[0]!.pointee.version = 22 }
        try expectRejected("opset22.onnx", new, ["ai.onnx opset 22 is not supported"])
    }

    func testNoDefaultOpsetImport() throws {
        let bytes = try edited { $0.pointee.opset_import[0]!.pointee.domain = ProtoEdit.string("com.example") }
        try expectRejected("noopset.onnx", bytes, ["no opset_import for the default domain ai.onnx"])
    }

    func testGraphAttributeNamesNode() throws {
        let bytes = try edited { m in
            let a = ProtoEdit.node(m, 0).pointee.attribute[0]!
            a.pointee.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH
        }
        try expectRejected("graph-attr.onnx", bytes, ["node '/conv1/Conv' (Conv): attribute", "is a graph (GRAPH)"])
    }

    func testEmptyNodeNameIsSynthesized() throws {
        let bytes = try edited { ProtoEdit.node($0, 1).pointee.name = nil }
        let m = try ONNXModel.load(path: try dir.write("noname.onnx", bytes))
        XCTAssertEqual(m.graph.nodes[1].name, "Relu#1")
    }

    // MARK: names

    func testDuplicateInitializer() throws {
        let bytes = try edited { ProtoEdit.initializer($0, 1).pointee.name = ProtoEdit.string("proj") }
        try expectRejected("dup-init.onnx", bytes, ["duplicate initializer name 'proj'"])
    }

    func testValueProducedTwice() throws {
        let bytes = try edited { m in
            ProtoEdit.node(m, 3).pointee.output[0] = ProtoEdit.string("/Relu_output_0")
        }
        try expectRejected("dup-value.onnx", bytes, ["value '/Relu_output_0' is produced twice: by node '/Relu' and by node '/Relu_1' (Relu)"])
    }

    /// Appends a graph input named `name` (a ValueInfoProto without a type).
    func addGraphInput(_ m: ProtoEdit.Model, _ name: String) {
        typealias Info = UnsafeMutablePointer<Onnx__ValueInfoProto>
        let g = ProtoEdit.graph(m)
        let n = g.pointee.n_input
        let array = realloc(g.pointee.input, (n + 1) * MemoryLayout<Info?>.stride)!.bindMemory(to: Info?.self, capacity: n + 1)
        let v = malloc(MemoryLayout<Onnx__ValueInfoProto>.stride)!.bindMemory(to: Onnx__ValueInfoProto.self, capacity: 1)
        onnx__value_info_proto__init(v)
        v.pointee.name = ProtoEdit.string(name)
        array[n] = v
        g.pointee.input = array
        g.pointee.n_input = n + 1
    }

    func testInitializerListedAsInputIsNotAnInput() throws {
        // Files from before IR version 4 list initializers among the inputs, as defaults.
        let bytes = try edited { self.addGraphInput($0, "proj") }
        let m = try ONNXModel.load(path: try dir.write("init-input.onnx", bytes))
        XCTAssertEqual(m.graph.inputs.map(\.name), ["x"])
        XCTAssertNotNil(m.graph.initializer("proj"))
    }

    func testDuplicateGraphInput() throws {
        let bytes = try edited { self.addGraphInput($0, "x") }
        try expectRejected("dup-input.onnx", bytes, ["duplicate graph input 'x'"])
    }

    func testUndefinedInput() throws {
        let bytes = try edited { ProtoEdit.node($0, 1).pointee.input[0] = ProtoEdit.string("nowhere") }
        try expectRejected("undefined.onnx", bytes, ["node '/Relu' (Relu): input 'nowhere' is not a graph input, an initializer or the output of an earlier node"])
    }

    // MARK: tensors

    func testShortInitializer() throws {
        let bytes = try edited { ProtoEdit.initializer($0, 2).pointee.raw_data.len -= 4 }
        try expectRejected("short.onnx", bytes, ["initializer 'fc.bias': raw_data is 36 bytes but shape [10] x FLOAT needs 40"])
    }

    func testUnsupportedDataType() throws {
        let bytes = try edited { ProtoEdit.initializer($0, 2).pointee.data_type = 13 }
        try expectRejected("uint64.onnx", bytes, ["initializer 'fc.bias': data type UINT64 (13) is not supported"])
        let unknown = try edited { ProtoEdit.initializer($0, 2).pointee.data_type = 99 }
        try expectRejected("code99.onnx", unknown, ["initializer 'fc.bias': data type code 99 is not supported"])
    }

    func testNegativeDimension() throws {
        let bytes = try edited { ProtoEdit.initializer($0, 2).pointee.dims[0] = -10 }
        try expectRejected("negdim.onnx", bytes, ["initializer 'fc.bias': dimension 0 is negative (-10)"])
    }

    func testOverflowingShape() throws {
        let bytes = try edited { m in
            let t = ProtoEdit.initializer(m, 0)  // proj [10, 5]
            t.pointee.dims[0] = Int64(1) << 40
            t.pointee.dims[1] = Int64(1) << 40
        }
        try expectRejected("overflow.onnx", bytes, ["initializer 'proj': element count of shape [1099511627776, 1099511627776] overflows 64 bits"])
    }

    func testDataInTwoFields() throws {
        let bytes = try edited { m in
            let t = ProtoEdit.initializer(m, 2)
            let raw = ProtoEdit.rawData(t)
            ProtoEdit.makeFloatData(t)
            t.pointee.has_raw_data = 1
            let p = malloc(raw.count)!.bindMemory(to: UInt8.self, capacity: raw.count)
            for (i, b) in raw.enumerated() { p[i] = b }
            t.pointee.raw_data = ProtobufCBinaryData(len: raw.count, data: p)
        }
        try expectRejected("twofields.onnx", bytes, ["initializer 'fc.bias': has its data in more than one field (raw_data, float_data)"])
    }

    func testTypedFieldOfWrongType() throws {
        let bytes = try edited { m in
            let t = ProtoEdit.initializer(m, 2)
            ProtoEdit.makeFloatData(t)
            t.pointee.data_type = 7  // INT64, which uses int64_data
        }
        try expectRejected("wrongfield.onnx", bytes, ["initializer 'fc.bias': holds its data in float_data, which INT64 tensors do not use"])
    }

    func testInt32DataOutOfRange() throws {
        let bytes = try edited { ProtoEdit.setInt32Data(ProtoEdit.initializer($0, 2), dataType: 2, dims: [2], [7, 300]) }
        try expectRejected("u8range.onnx", bytes, ["initializer 'fc.bias': int32_data element 1 is 300, outside the range of UINT8 (0...255)"])
    }

    func testSparseInitializerRefused() throws {
        let bytes = try edited { m in
            let g = ProtoEdit.graph(m)
            let s = malloc(MemoryLayout<Onnx__SparseTensorProto>.stride)!.bindMemory(to: Onnx__SparseTensorProto.self, capacity: 1)
            onnx__sparse_tensor_proto__init(s)
            let arr = malloc(MemoryLayout<UnsafeMutablePointer<Onnx__SparseTensorProto>?>.stride)!
                .bindMemory(to: UnsafeMutablePointer<Onnx__SparseTensorProto>?.self, capacity: 1)
            arr[0] = s
            g.pointee.n_sparse_initializer = 1
            g.pointee.sparse_initializer = arr
        }
        try expectRejected("sparse.onnx", bytes, ["graph has 1 sparse initializers, which are not supported"])
    }

    // MARK: typed fields decode

    func testFloatDataDecodesLikeRawData() throws {
        let original = try ONNXModel.load(path: "\(fixtures)/convnet.onnx")
        let bytes = try edited { ProtoEdit.makeFloatData(ProtoEdit.initializer($0, 1)) }
        let m = try ONNXModel.load(path: try dir.write("floatdata.onnx", bytes))
        let a = try XCTUnwrap(m.graph.initializer("fc.weight")), b = try XCTUnwrap(original.graph.initializer("fc.weight"))
        XCTAssertEqual(a.shape, [10, 16])
        XCTAssertTrue(a.bytes.elementsEqual(b.bytes))
    }

    func testInt32DataHoldsFloat16Bits() throws {
        let bytes = try edited { ProtoEdit.setInt32Data(ProtoEdit.initializer($0, 2), dataType: 10, dims: [3], [0x3C00, 0xC000, 0]) }
        let m = try ONNXModel.parse(path: try dir.write("f16.onnx", bytes))
        let t = try XCTUnwrap(m.graph.initializer("fc.bias"))
        XCTAssertEqual(t.dtype, .f16)
        XCTAssertEqual(t.floats(), [1, -2, 0])
    }

    func testInt64AndDoubleData() throws {
        let bytes = try edited { m in
            let a = ProtoEdit.initializer(m, 2)  // fc.bias
            ProtoEdit.retype(a, dataType: 7, dims: [2, 2])
            a.pointee.n_int64_data = 4
            a.pointee.int64_data = ProtoEdit.array([Int64.min, -1, 0, Int64.max])
            let b = ProtoEdit.initializer(m, 4)  // onnx::Conv_30
            ProtoEdit.retype(b, dataType: 11, dims: [])
            b.pointee.n_double_data = 1
            b.pointee.double_data = ProtoEdit.array([0.1])
        }
        let m = try ONNXModel.parse(path: try dir.write("int64-double.onnx", bytes))
        let a = try XCTUnwrap(m.graph.initializer("fc.bias"))
        XCTAssertEqual(a.dtype, .i64)
        XCTAssertEqual(a.shape, [2, 2])
        XCTAssertEqual(a.int64s(), [Int64.min, -1, 0, Int64.max])
        let b = try XCTUnwrap(m.graph.initializer("onnx::Conv_30"))
        XCTAssertEqual(b.dtype, .f64)
        XCTAssertEqual(b.shape, [])
        XCTAssertEqual(b.bytes.loadUnaligned(as: Double.self), 0.1)
    }

    func testTypedFieldCountMismatch() throws {
        let bytes = try edited { m in
            let a = ProtoEdit.initializer(m, 2)
            ProtoEdit.retype(a, dataType: 7, dims: [3])
            a.pointee.n_int64_data = 2
            a.pointee.int64_data = ProtoEdit.array([Int64(1), 2])
        }
        try expectRejected("int64-short.onnx", bytes, ["initializer 'fc.bias': int64_data has 2 elements but shape [3] x INT64 needs 3"])
    }

    // MARK: external data

    /// convnet.onnx with initializer 'proj' (200 bytes) moved to external data with `entries`;
    /// `w.data` in the temp dir holds 16 junk bytes and then the tensor.
    func externalModel(_ name: String, _ entries: [(String, String)]) throws -> (path: String, bytes: [UInt8]) {
        var data: [UInt8] = []
        let bytes = try edited { m in
            let t = ProtoEdit.initializer(m, 0)
            data = ProtoEdit.rawData(t)
            ProtoEdit.makeExternal(t, entries)
        }
        try dir.write("w.data", [UInt8](repeating: 0xEE, count: 16) + data)
        return (try dir.write(name, bytes), data)
    }

    func testExternalDataResolvesAndIsMapped() throws {
        let (path, data) = try externalModel("ext.onnx", [("location", "w.data"), ("offset", "16"), ("length", "200"), ("checksum", "x")])
        let m = try ONNXModel.load(path: path)
        let t = try XCTUnwrap(m.graph.initializer("proj"))
        XCTAssertTrue(t.bytes.elementsEqual(data))
        guard case let .mapped(file, offset) = t.storage else { return XCTFail("expected a mapped view") }
        XCTAssertEqual(offset, 16)
        XCTAssertTrue(file.path.hasSuffix("/w.data"))
        // Without length, the tensor's byte size is taken (as onnxruntime does); ./ is fine.
        let (p2, _) = try externalModel("ext2.onnx", [("location", "./w.data"), ("offset", "16")])
        XCTAssertNoThrow(try ONNXModel.load(path: p2))
    }

    func testMissingExternalFile() throws {
        let (path, _) = try externalModel("missing.onnx", [("location", "nothere.data"), ("offset", "0"), ("length", "200")])
        assertDicoError(.io, contains: [path, "initializer 'proj': external data file 'nothere.data'", "cannot be opened"]) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func testExternalPathEscapingFolder() throws {
        let (path, _) = try externalModel("escape.onnx", [("location", "../w.data"), ("length", "200")])
        assertDicoError(.invalidInput, contains: [path, "initializer 'proj': external data location '../w.data' escapes the model's folder"]) {
            _ = try ONNXModel.load(path: path)
        }
        let (p2, _) = try externalModel("escape2.onnx", [("location", "sub/../../w.data")])
        assertDicoError(.invalidInput, contains: ["'sub/../../w.data' escapes the model's folder"]) { _ = try ONNXModel.load(path: p2) }
    }

    func testExternalAbsolutePath() throws {
        let (path, _) = try externalModel("absolute.onnx", [("location", dir.file("w.data"))])
        assertDicoError(.invalidInput, contains: [path, "initializer 'proj': external data location '\(dir.file("w.data"))' is an absolute path"]) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func testExternalSymlinkOutOfFolder() throws {
        let outside = try TempDir()
        defer { outside.remove() }
        try outside.write("secret.data", [UInt8](repeating: 0, count: 400))
        let (path, _) = try externalModel("symlink.onnx", [("location", "link.data")])
        try FileManager.default.createSymbolicLink(atPath: dir.file("link.data"), withDestinationPath: outside.file("secret.data"))
        assertDicoError(.invalidInput, contains: [path, "external data location 'link.data' resolves to", "outside the model's folder"]) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func testExternalRangePastEndOfFile() throws {
        let (path, _) = try externalModel("pastend.onnx", [("location", "w.data"), ("offset", "100"), ("length", "200")])
        assertDicoError(.invalidInput, contains: [path, "initializer 'proj': external data range [100, 300) runs past the end of 'w.data' (216 bytes)"]) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func testExternalLengthMismatch() throws {
        let (path, _) = try externalModel("badlength.onnx", [("location", "w.data"), ("length", "196")])
        assertDicoError(.invalidInput, contains: [path, "initializer 'proj': external data length 196 does not match shape [10, 5] x FLOAT (200 bytes)"]) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func testExternalBadKeysAndNumbers() throws {
        let (p1, _) = try externalModel("badkey.onnx", [("location", "w.data"), ("basepath", "/")])
        assertDicoError(.invalidInput, contains: ["unknown external_data key 'basepath'"]) { _ = try ONNXModel.load(path: p1) }
        let (p2, _) = try externalModel("badoffset.onnx", [("location", "w.data"), ("offset", "-16")])
        assertDicoError(.invalidInput, contains: ["external_data offset '-16' is not a non-negative decimal integer"]) { _ = try ONNXModel.load(path: p2) }
        let (p3, _) = try externalModel("noloc.onnx", [("offset", "16")])
        assertDicoError(.invalidInput, contains: ["data_location is EXTERNAL but external_data has no location"]) { _ = try ONNXModel.load(path: p3) }
        let (p4, _) = try externalModel("dupkey.onnx", [("location", "w.data"), ("location", "w.data")])
        assertDicoError(.invalidInput, contains: ["duplicate external_data key 'location'"]) { _ = try ONNXModel.load(path: p4) }
    }
}

/// Bad input never crashes: seeded byte flips and truncations of two fixtures each end in a
/// model or a DicoError.
final class ONNXMutationTests: XCTestCase {
    func testMutatedFilesNeverCrash() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Int(truncatingIfNeeded: state >> 1)
        }
        var outcomes = [String: Int]()
        // The dynamo fixture is 60 times the size: fewer rounds keep this test at a few seconds.
        for (fixture, rounds) in [("convnet.onnx", 400), ("tiny_dynamo.onnx", 24)] {
            let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/\(fixture)")))
            // The dynamo fixture's external data file, so that mutations reach its checks too.
            if fixture == "tiny_dynamo.onnx" {
                try FileManager.default.copyItem(atPath: "\(fixtures)/tiny_dynamo.onnx.data", toPath: dir.file("tiny_dynamo.onnx.data"))
            }
            for round in 0..<rounds {
                var bytes = original
                if round % 4 == 3 {
                    bytes = Array(bytes[..<(next() % bytes.count)])
                } else {
                    for _ in 0..<(1 + round % 3) { bytes[next() % bytes.count] = UInt8(truncatingIfNeeded: next()) }
                }
                let path = try dir.write(fixture, bytes)
                do {
                    _ = try ONNXModel.load(path: path)
                    outcomes["loaded", default: 0] += 1
                } catch let e as DicoError {
                    outcomes[e.kind == .io ? "io" : "invalid", default: 0] += 1
                }
            }
        }
        XCTAssertEqual(outcomes.values.reduce(0, +), 424)
        XCTAssertGreaterThan(outcomes["invalid", default: 0], 100, "\(outcomes)")
        print("mutation outcomes: \(outcomes.sorted { $0.key < $1.key })")
    }
}
