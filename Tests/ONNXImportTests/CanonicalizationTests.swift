import DicoTestSupport
import DicoConversion
import DicoCore
import DicoIR
import DicoModel
import DicoONNX
import DicoRuntime
import DicoSafetensors
import DicoVerify
import Foundation
import XCTest

/// ONNX exports of the tiny fixture (Fixtures/make_onnx_fixtures.py: legacy exporter at opsets
/// 13 and 17, dynamo exporter with external data) must import into the very graph the
/// safetensors path builds from the same weights, and convert to `.dico` files that run at
/// other batch sizes.
final class CanonicalizationTests: XCTestCase {
    static let fixtures = fixturesDirectory
    static let exports = ["tiny_opset13.onnx", "tiny_opset17.onnx", "tiny_dynamo.onnx"]

    static func tempDir() throws -> String { try TempDir(prefix: "dico-onnx-import").path }

    /// Structural equality: same ops in the same order with the same attributes, the same
    /// value types, the same inputs and outputs, and constants with the same names, dtypes,
    /// shapes and bytes.
    func assertSameGraph(_ a: Graph, _ b: Graph, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.nodes.count, b.nodes.count, "\(label): node count", file: file, line: line)
        XCTAssertEqual(a.values.count, b.values.count, "\(label): value count", file: file, line: line)
        for (x, y) in zip(a.nodes, b.nodes) {
            XCTAssertEqual(x.op, y.op, "\(label): node '\(x.name)' vs '\(y.name)'", file: file, line: line)
            XCTAssertEqual(x.inputs, y.inputs, "\(label): inputs of '\(x.name)'", file: file, line: line)
            XCTAssertEqual(x.output, y.output, "\(label): output of '\(x.name)'", file: file, line: line)
        }
        XCTAssertEqual(a.inputs, b.inputs, file: file, line: line)
        XCTAssertEqual(a.outputs, b.outputs, file: file, line: line)
        for (i, (x, y)) in zip(a.values, b.values).enumerated() {
            XCTAssertEqual(x.name, y.name, "\(label): value %\(i)", file: file, line: line)
            XCTAssertEqual(x.type, y.type, "\(label): type of '\(x.name)'", file: file, line: line)
            let cx = a.constant(ValueID(i)), cy = b.constant(ValueID(i))
            XCTAssertEqual(cx == nil, cy == nil, "\(label): '\(x.name)' constant in one graph only", file: file, line: line)
            if let cx, let cy {
                XCTAssertEqual(cx.dtype, cy.dtype, "\(label): dtype of '\(x.name)'", file: file, line: line)
                XCTAssertEqual(cx.shape, cy.shape, "\(label): shape of '\(x.name)'", file: file, line: line)
                XCTAssertTrue(cx.byteCount == cy.byteCount && memcmp(cx.bytes.baseAddress!, cy.bytes.baseAddress!, cx.byteCount) == 0,
                              "\(label): values of '\(x.name)' differ", file: file, line: line)
            }
        }
    }

    func testEveryExportCanonicalizesToTheSafetensorsGraph() throws {
        let reference = try LoadedModel.open("\(Self.fixtures)/tiny.safetensors")
        for name in Self.exports {
            let m = try LoadedModel.open("\(Self.fixtures)/\(name)")
            XCTAssertEqual(m.format, .onnx, name)
            XCTAssertEqual(m.config, reference.config, name)
            XCTAssertEqual(m.config.parameterCount, 677_576, name)
            XCTAssertNotNil(m.onnx, name)
            assertSameGraph(m.graph, reference.graph, name)
            // The state-dict names survive: every canonical weight is an initializer of the export.
            let initNames = Set(m.onnx!.graph.initializers.map(\.name))
            XCTAssertTrue(m.graph.constantIDs.allSatisfy { initNames.contains(m.graph[$0].name) }, name)
        }
    }

    /// The canonical graph of each export against PyTorch's output at the exported shape.
    /// 1e-5 relative L2 as for the safetensors path: the executor's floor against PyTorch fp32
    /// is about 1e-6 (Fixtures/README.md).
    func testCanonicalGraphMatchesPyTorch() throws {
        let ref = try SafetensorsFile(path: "\(Self.fixtures)/tiny_onnx_ref.safetensors")
        let x = ref.tensor("x")!, t = ref.tensor("t")!, y = ref.tensor("y")!, out = ref.tensor("out")!.floats()
        for name in Self.exports {
            let m = try LoadedModel.open("\(Self.fixtures)/\(name)")
            let got = try Executor(graph: m.graph, threads: 2).run([
                "x": HostTensor(shape: x.shape, floats: x.floats()), "t": HostTensor(shape: t.shape, floats: t.floats()),
                "y": HostTensor(shape: y.shape, int64s: y.int64s()!),
            ])[0]
            XCTAssertEqual(got.shape, out.isEmpty ? [] : ref.tensor("out")!.shape)
            XCTAssertLessThan(relativeL2(got.floats!, out), 1e-5, name)
        }
    }

    /// Converted from ONNX, the `.dico` runs at batch 3 and 16x12 (the opset-13 export has a
    /// static batch of 2 and 8x8 baked in, the dynamo one 8x8) and gives exactly what the
    /// `.dico` converted from safetensors gives: the two files hold the same graph and weights.
    func testConvertedDicoRunsAtOtherBatch() throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        func convert(_ input: String, _ out: String) throws -> [Float] {
            _ = try Converter.convert(input: input, output: out, options: ConversionOptions(precision: .int8, threads: 2, overwrite: false, toolVersion: "test"))
            let m = try LoadedModel.open(out)
            var rng = UInt64(7)
            let n = 3 * 4 * 16 * 12
            let xs: [Float] = (0..<n).map { _ in rng = rng &* 6364136223846793005 &+ 1442695040888963407; return Float(Int64(rng >> 40) - (1 << 23)) / Float(1 << 23) }
            return try Executor(graph: m.graph, threads: 2).run([
                "x": HostTensor(shape: [3, 4, 16, 12], floats: xs), "t": HostTensor(shape: [3], floats: [0, 999, 421.5]),
                "y": HostTensor(shape: [3], int64s: [10, 2, 7]),
            ])[0].floats!
        }
        let expected = try convert("\(Self.fixtures)/tiny.safetensors", "\(dir)/st.dico")
        for name in Self.exports {
            let got = try convert("\(Self.fixtures)/\(name)", "\(dir)/\(name).dico")
            XCTAssertEqual(got, expected, name)
        }
    }

    /// A graph that names its weights like DiCo but computes something else is not DiCo: here
    /// the first LayerNormalization of the opset-17 export gets epsilon 0.5 instead of 1e-6.
    func testModifiedGraphFailsTheProof() throws {
        let m = try ONNXModel.load(path: "\(Self.fixtures)/tiny_opset17.onnx")
        var g = m.graph
        let i = try XCTUnwrap(g.nodes.firstIndex { $0.opType == "LayerNormalization" })
        let n = g.nodes[i]
        var attrs = n.attributes
        attrs["epsilon"] = .float(0.5)
        g.nodes[i] = ONNXNode(name: n.name, opType: n.opType, domain: n.domain, inputs: n.inputs, outputs: n.outputs, attributes: attrs)
        let modified = m.replacingGraph(g)
        assertNotDiCo(modified, because: "computes something else")
        // The unmodified model passes, with the probe difference at float rounding.
        let ok = try ONNXCanonicalizer.canonicalize(m, threads: 2)
        XCTAssertLessThan(try XCTUnwrap(ok.proofDifference), 1e-5)
        // Without the proof (inspect's quick look) the modified graph is recognized by its
        // weights alone, and the result says so instead of claiming the equality.
        let unproven = try ONNXCanonicalizer.canonicalize(modified, threads: 2, prove: false)
        XCTAssertNil(unproven.proofDifference)
        XCTAssertTrue(unproven.notes[0].contains("not proven to compute the DiCo forward pass"), unproven.notes[0])
    }

    /// A graph that ignores its timestep input (here: the sinusoid reads a constant 999 instead
    /// of `t`) must fail the proof, so the probe has to vary t; it probes t = 999 and t = 37.
    func testGraphIgnoringTheTimestepFailsTheProof() throws {
        let m = try ONNXModel.load(path: "\(Self.fixtures)/tiny_opset17.onnx")
        var g = m.graph
        let i = try XCTUnwrap(g.nodes.firstIndex { $0.inputs.contains("t") })
        let n = g.nodes[i]
        g.nodes[i] = ONNXNode(name: n.name, opType: n.opType, domain: n.domain, inputs: n.inputs.map { $0 == "t" ? "t_fixed" : $0 },
                              outputs: n.outputs, attributes: n.attributes)
        g.initializers.append(ONNXInitializer(name: "t_fixed", tensor: TensorData(shape: [2], floats: [999, 999])))
        let modified = m.replacingGraph(g)
        assertNotDiCo(modified, because: "computes something else")
    }

    /// A second graph output (here the first node's output, exported for debugging) would be
    /// lost in the canonical graph's single output, so such a graph is not taken as DiCo.
    func testExtraOutputIsNotDiCo() throws {
        let m = try ONNXModel.load(path: "\(Self.fixtures)/tiny_opset17.onnx")
        var g = m.graph
        g.outputs.append(ONNXValueInfo(name: g.nodes[0].outputs[0], elementType: nil, shape: nil))
        let modified = m.replacingGraph(g)
        assertNotDiCo(modified, because: "DiCo has one output; the graph has 2")
    }

    /// Asserts that canonicalizing `model` throws `NotDiCo` with a reason containing `reason`.
    func assertNotDiCo(_ model: ONNXModel, because reason: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ONNXCanonicalizer.canonicalize(model, threads: 2), file: file, line: line) { e in
            guard let e = e as? ONNXCanonicalizer.NotDiCo else { return XCTFail("\(e)", file: file, line: line) }
            XCTAssertTrue(e.reason.contains(reason), e.reason, file: file, line: line)
        }
    }

    func testNonDiCoModelIsNamedAsSuch() throws {
        XCTAssertThrowsError(try LoadedModel.open("\(Self.fixtures)/convnet.onnx")) { e in
            guard let e = e as? DicoError else { return XCTFail("\(e)") }
            XCTAssertEqual(e.kind, .invalidInput)
            XCTAssertTrue(e.message.contains("convnet.onnx: ONNX model is not a DiCo export"), e.message)
        }
    }
}

/// The verifier runs an ONNX original as written (the interpreter), so `verify model.onnx
/// converted.dico` compares the user's file, not our own canonical graph, with the result.
final class ONNXDenoiserTests: XCTestCase {
    /// Batch 3 on every export, including the opset-13 one whose batch of 2 is static (run in
    /// chunks of 2, the last padded). 1e-5 relative L2: the interpreter and the executor are
    /// each within about 1e-6 of PyTorch on these exports (3e-6 for dynamo's Gelu).
    func testONNXDenoiserAgreesWithTheCanonicalGraphAtAnotherBatch() throws {
        var rng = UInt64(11)
        let xs: [Float] = (0..<(3 * 4 * 8 * 8)).map { _ in
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(rng >> 40) - (1 << 23)) / Float(1 << 23)
        }
        let x = HostTensor(shape: [3, 4, 8, 8], floats: xs)
        for name in CanonicalizationTests.exports {
            let onnx = try VerifyModels.open("\(CanonicalizationTests.fixtures)/\(name)", threads: 2)
            XCTAssertTrue(onnx is ONNXDenoiser, name)
            let m = try LoadedModel.open("\(CanonicalizationTests.fixtures)/\(name)")
            let canonical = try GraphDenoiser(graph: m.graph, config: m.config, provenance: .null, threads: 2)
            let a = try onnx.predict(x: x, t: [999, 3, 250], y: [10, 0, 4])
            let b = try canonical.predict(x: x, t: [999, 3, 250], y: [10, 0, 4])
            XCTAssertEqual(a.shape, [3, 8, 8, 8], name)
            XCTAssertLessThan(relativeL2(a.floats!, b.floats!), 1e-5, name)
        }
    }
}

extension ONNXDenoiserTests {
    /// At a latent size the export cannot run (the opset-13 export fixes 8x8), the canonical graph
    /// runs instead, and the description says so.
    func testFixedSizeExportFallsBackToTheCanonicalGraph() throws {
        let path = "\(CanonicalizationTests.fixtures)/tiny_opset13.onnx"
        let onnx = try XCTUnwrap(try VerifyModels.open(path, threads: 2) as? ONNXDenoiser)
        let m = try LoadedModel.open(path)
        let canonical = try GraphDenoiser(graph: m.graph, config: m.config, provenance: .null, threads: 2)
        let x = HostTensor(shape: [1, 4, 16, 16], floats: (0..<1024).map { Float($0 % 17) / 8 - 1 })
        XCTAssertEqual(try onnx.predict(x: x, t: [500], y: [3]), try canonical.predict(x: x, t: [500], y: [3]))
        XCTAssertEqual(onnx.canonicalSizes, ["16x16"])
        XCTAssertTrue(onnx.provenance.serialized().contains("fixes the latent at 8x8"))
    }
}

/// Provenance of a conversion from ONNX: the format, and the external data file hashed too.
final class ONNXProvenanceTests: XCTestCase {
    func testExternalDataIsHashedIntoTheProvenance() throws {
        let dir = try CanonicalizationTests.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = "\(dir)/d.dico"
        let s = try Converter.convert(input: "\(CanonicalizationTests.fixtures)/tiny_dynamo.onnx", output: out,
                                      options: ConversionOptions(precision: .fp16, threads: 2, overwrite: false, toolVersion: "test"))
        let data = try MappedFile(path: "\(CanonicalizationTests.fixtures)/tiny_dynamo.onnx.data")
        let onnxSize = try MappedFile(path: "\(CanonicalizationTests.fixtures)/tiny_dynamo.onnx").size
        XCTAssertEqual(s.inputBytes, onnxSize + data.size)
        let m = try LoadedModel.open(out)
        let text = m.provenance.map { String(decoding: Array($0.serialized().utf8), as: UTF8.self) } ?? ""
        XCTAssertTrue(text.contains("\"format\":\"onnx\""), text)
        // The digest recorded in Fixtures/README.md for the data file (sha256sum).
        XCTAssertTrue(text.contains("{\"file\":\"tiny_dynamo.onnx.data\",\"size\":\(data.size),\"sha256\":\"477439e72047f6452b4ac1133820273d76fc150270e587a28cc84aa6dfdca310\"}"), text)
    }
}
