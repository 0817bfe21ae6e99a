import DicoTestSupport
import DicoCore
import DicoONNX
import DicoSafetensors
import XCTest

/// The fixture exports of Fixtures/make_onnx_fixtures.py parse completely, with the numbers
/// Fixtures/README.md records, and their weights are exactly those of tiny.safetensors.
final class ONNXFixtureTests: XCTestCase {
    func load(_ name: String) throws -> ONNXModel { try ONNXModel.load(path: "\(fixtures)/\(name)") }

    /// Every initializer with an official state-dict name equals that tensor of tiny.safetensors
    /// byte for byte; returns how many were compared.
    func assertWeightsEqualSafetensors(_ model: ONNXModel, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        let st = try SafetensorsFile(path: "\(fixtures)/tiny.safetensors")
        var compared = 0
        for name in st.names {
            guard let a = model.graph.initializer(name), let b = st.tensor(name) else {
                XCTFail("initializer '\(name)' is missing", file: file, line: line)
                continue
            }
            XCTAssertEqual(a.dtype, b.dtype, name, file: file, line: line)
            XCTAssertEqual(a.shape, b.shape, name, file: file, line: line)
            XCTAssertTrue(a.bytes.elementsEqual(b.bytes), "\(name): bytes differ", file: file, line: line)
            compared += 1
        }
        return compared
    }

    func histogram(_ model: ONNXModel) -> [String: Int] {
        model.graph.nodes.reduce(into: [:]) { $0[$1.opType, default: 0] += 1 }
    }

    func testLegacyOpset13StaticBatch() throws {
        let m = try load("tiny_opset13.onnx")
        XCTAssertEqual(m.opsetImports, ["": 13])
        XCTAssertEqual(m.defaultOpset, 13)
        XCTAssertEqual(m.irVersion, 7)
        XCTAssertEqual(m.producerName, "pytorch")
        XCTAssertEqual(m.producerVersion, "2.15.0")
        XCTAssertEqual(m.graph.nodes.count, 972)
        XCTAssertEqual(m.graph.initializers.count, 141)
        XCTAssertEqual(m.graph.inputs.map(\.name), ["x", "t", "y"])
        XCTAssertEqual(m.graph.inputs[0].shape, [.value(2), .value(4), .value(8), .value(8)])
        XCTAssertEqual(m.graph.inputs[0].elementType, .f32)
        XCTAssertEqual(m.graph.inputs[2].elementType, .i64)
        XCTAssertEqual(m.graph.outputs.map(\.name), ["out"])
        XCTAssertEqual(m.graph.outputs[0].shape, [.value(2), .value(8), .value(8), .value(8)])
        XCTAssertEqual(histogram(m)["Constant"], 291)
        XCTAssertEqual(histogram(m)["Conv"], 56)
        XCTAssertNil(histogram(m)["LayerNormalization"])
        XCTAssertEqual(try assertWeightsEqualSafetensors(m), 141)
        XCTAssertEqual(m.graph.initializers.first?.name, "x_embedder.proj.weight")
        XCTAssertEqual(m.graph.initializer("x_embedder.proj.weight")?.shape, [24, 4, 3, 3])

        // Constant nodes keep their tensor attributes, fully decoded.
        let c0 = try XCTUnwrap(m.graph.nodes.first { $0.name == "/t_embedder_1/Constant" })
        let v0 = try XCTUnwrap(c0.attributes["value"]?.tensor)
        XCTAssertEqual(v0.dtype, .i64)
        XCTAssertEqual(v0.shape, [1])
        XCTAssertEqual(v0.int64s(), [1])
        let c1 = try XCTUnwrap(m.graph.nodes.first { $0.name == "/t_embedder_1/Constant_1" })
        let freqs = try XCTUnwrap(c1.attributes["value"]?.tensor)
        XCTAssertEqual(freqs.shape, [1, 128])
        XCTAssertEqual(freqs.floats()[0], 1)
        XCTAssertEqual(freqs.floats()[1], 0.93057203, accuracy: 1e-7)
    }

    func testLegacyOpset17DynamicAxes() throws {
        let m = try load("tiny_opset17.onnx")
        XCTAssertEqual(m.opsetImports, ["": 17])
        XCTAssertEqual(m.graph.nodes.count, 882)
        XCTAssertEqual(m.graph.initializers.count, 141)
        XCTAssertEqual(m.graph.inputs[0].shape, [.param("N"), .value(4), .param("H"), .param("W")])
        XCTAssertEqual(m.graph.inputs[1].shape, [.param("N")])
        XCTAssertEqual(histogram(m)["LayerNormalization"], 17)
        let ln = try XCTUnwrap(m.graph.nodes.first { $0.opType == "LayerNormalization" })
        XCTAssertEqual(ln.attributes["axis"]?.int, -1)
        XCTAssertEqual(Double(try XCTUnwrap(ln.attributes["epsilon"]?.float)), 1e-6, accuracy: 1e-12)
        let d2s = try XCTUnwrap(m.graph.nodes.first { $0.opType == "DepthToSpace" })
        XCTAssertEqual(d2s.attributes["mode"]?.string, "CRD")
        XCTAssertEqual(d2s.attributes["blocksize"]?.int, 2)
        XCTAssertEqual(try assertWeightsEqualSafetensors(m), 141)
    }

    func testDynamoExternalDataIsMappedNotCopied() throws {
        let m = try load("tiny_dynamo.onnx")
        XCTAssertEqual(m.opsetImports[""], 20)
        XCTAssertEqual(m.irVersion, 10)
        XCTAssertEqual(m.graph.nodes.count, 371)
        XCTAssertEqual(m.graph.initializers.count, 164)
        XCTAssertEqual(m.graph.inputs[0].shape, [.param("batch"), .value(4), .value(8), .value(8)])
        XCTAssertNil(histogram(m)["Constant"])
        XCTAssertEqual(histogram(m)["Gelu"], 16)
        XCTAssertEqual(try assertWeightsEqualSafetensors(m), 141)
        // One mapping of tiny_dynamo.onnx.data, shared by every initializer.
        var files = Set<ObjectIdentifier>()
        for i in m.graph.initializers {
            guard case let .mapped(file, _) = i.tensor.storage else {
                XCTFail("initializer '\(i.name)' is not a mapped view")
                continue
            }
            XCTAssertTrue(file.path.hasSuffix("/tiny_dynamo.onnx.data"), file.path)
            files.insert(ObjectIdentifier(file))
        }
        XCTAssertEqual(files.count, 1)
        // Small exporter constants live there too, scalars included.
        XCTAssertEqual(m.graph.initializer("val_44")?.shape, [])
        XCTAssertEqual(m.graph.initializer("val_44")?.int64s(), [24])
        XCTAssertEqual(m.graph.initializer("pixel_unshuffle/shape")?.int64s(), [-1, 48, 4, 4])
        let split = try XCTUnwrap(m.graph.nodes.first { $0.opType == "Split" })
        XCTAssertEqual(split.attributes["num_outputs"]?.int, 6)
    }

    func testSmallConvNet() throws {
        let m = try load("convnet.onnx")
        XCTAssertEqual(m.opsetImports, ["": 17])
        XCTAssertEqual(m.graph.nodes.map(\.opType), ["Conv", "Relu", "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "MatMul"])
        XCTAssertEqual(m.graph.initializers.map(\.name),
                       ["proj", "fc.weight", "fc.bias", "onnx::Conv_29", "onnx::Conv_30", "onnx::Conv_32", "onnx::Conv_33"])
        XCTAssertEqual(m.graph.initializers.map(\.tensor.shape), [[10, 5], [10, 16], [10], [8, 3, 3, 3], [8], [16, 8, 3, 3], [16]])
        XCTAssertEqual(m.graph.nodes[0].inputs, ["x", "onnx::Conv_29", "onnx::Conv_30"])
        XCTAssertEqual(m.graph.nodes[0].attributes["pads"]?.ints, [1, 1, 1, 1])
        XCTAssertEqual(m.graph.nodes[2].attributes["strides"]?.ints, [2, 2])
        XCTAssertEqual(m.graph.outputs.first?.shape, [.param("N"), .value(5)])
        // Embedded raw_data is a view into the mapped model file (RawDataStripper).
        for i in m.graph.initializers {
            guard case let .mapped(file, _) = i.tensor.storage else { return XCTFail("\(i.name): expected a mapped view") }
            XCTAssertTrue(file.path.hasSuffix("/convnet.onnx"))
        }
    }

    func testSupportedOpsAreTheDiCoExportOps() {
        // The list of issue 5 plus what the fixture exports add (Range: dynamo; Flatten, Relu:
        // convnet). The interpreter implements exactly this set.
        let issue: Set<String> = [
            "Conv", "Gemm", "MatMul", "Gather", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Erf", "Gelu", "Sigmoid",
            "Sin", "Cos", "Exp", "Cast", "Constant", "Shape", "Reshape", "Transpose", "Unsqueeze", "Squeeze", "Slice",
            "Split", "Concat", "ReduceMean", "GlobalAveragePool", "LayerNormalization", "DepthToSpace", "SpaceToDepth",
            "Identity", "Expand",
        ]
        XCTAssertEqual(ONNXModel.supportedOps, issue.union(["Range", "Flatten", "Relu"]))
    }

    func testEveryFixtureOpIsSupported() throws {
        for name in ["tiny_opset13.onnx", "tiny_opset17.onnx", "tiny_dynamo.onnx", "convnet.onnx"] {
            let m = try ONNXModel.parse(path: "\(fixtures)/\(name)")
            for node in m.graph.nodes {
                XCTAssertTrue(ONNXModel.supportedOps.contains(node.opType), "\(name): \(node.opType)")
            }
            XCTAssertNoThrow(try m.validate())
        }
    }
}
