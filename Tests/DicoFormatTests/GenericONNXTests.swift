import DicoTestSupport
import DicoConversion
import DicoCore
import DicoFormat
import DicoONNX
import DicoQuant
import DicoSafetensors
import Foundation
import XCTest

/// A generic (non-DiCo) ONNX graph through `.dico`: Fixtures/convnet.onnx converted at every
/// precision, against Fixtures/convnet_generic_ref.safetensors (Fixtures/make_generic_fixtures.py:
/// numpy's int8 quantization by the rule of Formats/DICO.md and onnxruntime's outputs with those
/// weights, computed without any of this code).
final class GenericONNXTests: XCTestCase {
    typealias F = FormatSupport
    static let fixtures = fixturesDirectory
    static let convnet = "\(fixtures)/convnet.onnx"

    var dir: String!
    var ref: SafetensorsFile!

    override func setUpWithError() throws {
        dir = try TempDir(prefix: "generic-onnx").path
        ref = try SafetensorsFile(path: "\(Self.fixtures)/convnet_generic_ref.safetensors")
    }

    override func tearDownWithError() throws {
        if let dir { try? FileManager.default.removeItem(atPath: dir) }
    }

    @discardableResult
    func convert(_ precision: Precision, _ name: String? = nil, input: String = convnet, threads: Int = 2,
                 keep: [String] = []) throws -> (path: String, summary: ConversionSummary) {
        let out = "\(dir!)/\(name ?? precision.rawValue).dico"
        let s = try Converter.convert(input: input, output: out,
                                      options: ConversionOptions(precision: precision, keep: try keep.map(NamePattern.init), threads: threads,
                                                                 overwrite: false, toolVersion: "test"))
        return (out, s)
    }

    /// The converted graph run in the interpreter on the reference input.
    func run(_ path: String, threads: Int? = nil) throws -> [Float] {
        let model = try XCTUnwrap(try DicoFile(path: path).onnxModel)
        let x = ref.tensor("x")!
        return try XCTUnwrap(ONNXInterpreter(model: model, threads: threads).runOrdered(["x": try ONNXValue(x)])[0].floats)
    }

    // MARK: - int8 against numpy and onnxruntime

    /// The stored int8 values and scales are numpy's bit for bit, on the documented axis, and
    /// only the Conv, Gemm and MatMul weights are quantized.
    func testInt8ValuesAndScalesEqualNumpyBitForBit() throws {
        let f = try DicoFile(path: try convert(.int8).path)
        let axesJSON = try XCTUnwrap(ref.metadata?["axes"])
        let axes = try XCTUnwrap(try Array(axesJSON.utf8).withUnsafeBytes { try StrictJSON.parse($0) }.objectMembers)
        XCTAssertEqual(axes.map(\.key).sorted(), ["fc.weight", "onnx::Conv_29", "onnx::Conv_32", "proj"])
        for (name, axisValue) in axes {
            let e = try XCTUnwrap(f.tensors.first { $0.name == name }, name)
            let q = try XCTUnwrap(e.quantization, name)
            XCTAssertEqual(e.dtype, .i8, name)
            XCTAssertEqual(q.scheme, .int8SymmetricPerChannel)
            XCTAssertEqual(q.axis, axisValue.exactNonNegativeInt, name)
            let want = try XCTUnwrap(ref.tensor("q/\(name)")), got = try XCTUnwrap(f.tensor(name))
            XCTAssertEqual(Array(got.bytes), Array(want.bytes), "int8 values of \(name)")
            let wantScales = try XCTUnwrap(ref.tensor("scale/\(name)")), gotScales = try XCTUnwrap(f.tensor(q.scales))
            XCTAssertEqual(Array(gotScales.bytes), Array(wantScales.bytes), "scales of \(name)")
        }
        // Biases (read by Conv input 2, Gemm input 2) stay float32.
        for name in ["onnx::Conv_30", "onnx::Conv_33", "fc.bias"] {
            let e = try XCTUnwrap(f.tensors.first { $0.name == name })
            XCTAssertEqual(e.dtype, .f32, name)
            XCTAssertNil(e.quantization, name)
        }
    }

    /// The int8, fp16 and bf16 files run on the reference input as onnxruntime runs the model
    /// with the same rounded weights. Tolerance 1e-5 relative L2: the weights are the same
    /// float32 values on both sides (the int8 ones checked bit for bit above; fp16 and bf16 are
    /// round-to-nearest-even, exact), so only the float32 summation order differs (onnxruntime's
    /// conv and GEMM against im2col + sgemm), about 1e-7 here; a wrong scale or axis moves the
    /// output by 1e-3 or more.
    func testLowPrecisionRunsMatchOnnxruntimeWithRoundedWeights() throws {
        for p in [Precision.int8, .fp16, .bf16] {
            let got = try run(try convert(p).path)
            let want = ref.tensor("out_\(p.rawValue)")!.floats()
            XCTAssertEqual(got.count, want.count)
            XCTAssertLessThan(relativeL2(got, want), 1e-5, p.rawValue)
        }
    }

    /// The summary carries the drift the conversion measured and the note; the provenance says
    /// what applied and why, and its counts add up.
    func testProvenanceNoteAndDrift() throws {
        let (path, summary) = try convert(.int8)
        let drift = try XCTUnwrap(summary.drift)
        XCTAssertEqual(drift.outputs.map(\.name), ["out"])
        // int8 against fp32 measures 3.5e-3 on the reference input (make_generic_fixtures.py);
        // on the seeded input it is of the same order, and it cannot be 0.
        XCTAssertGreaterThan(drift.outputs[0].relativeL2, 1e-4)
        XCTAssertLessThan(drift.outputs[0].relativeL2, 2e-2)
        XCTAssertEqual(drift.symbols, ["x.N"])
        XCTAssertTrue(summary.notes.first?.hasPrefix("DiCo recognition and graph passes did not apply: ") ?? false, "\(summary.notes)")
        XCTAssertEqual(summary.converted, 4)
        XCTAssertEqual(summary.kept, 3)

        let f = try DicoFile(path: path)
        XCTAssertEqual(f.minor, 1)
        XCTAssertEqual(F.member(f.model, "architecture"), .string("onnx"))
        let source = try XCTUnwrap(F.member(f.provenance, "source"))
        XCTAssertEqual(F.member(source, "format"), .string("onnx"))
        XCTAssertEqual(F.member(source, "sha256")?.stringValue?.count, 64)
        XCTAssertNotEqual(F.member(source, "sha256"), .string(String(repeating: "0", count: 64)))
        XCTAssertEqual(F.member(f.provenance, "passes"), .array([]))
        XCTAssertNotNil(F.member(f.provenance, "not_dico")?.stringValue)
        let q = try XCTUnwrap(F.member(f.provenance, "quantization"))
        XCTAssertEqual(F.member(q, "converted_tensors"), .integer(4))
        XCTAssertEqual(F.member(q, "float32_tensors"), .integer(3))
        XCTAssertEqual(F.member(q, "stored_as_is_tensors"), .integer(0))
        XCTAssertEqual(F.member(q, "float32_reasons"), .object([("keep", .integer(0)), ("not_a_weight", .integer(3)), ("axis_conflict", .integer(0))]))
        XCTAssertNil(F.member(q, "default_keep"))
        // 4 int8 weights + their 4 scales + 3 float32 biases.
        XCTAssertEqual(f.tensors.count, 11)
    }

    /// `--keep` keeps a weight in float32 and says so.
    func testKeepPatternKeepsAnInitializer() throws {
        let (path, summary) = try convert(.int8, keep: ["proj"])
        let f = try DicoFile(path: path)
        XCTAssertEqual(f.tensors.first { $0.name == "proj" }?.dtype, .f32)
        XCTAssertEqual(summary.converted, 3)
        let q = try XCTUnwrap(F.member(f.provenance, "quantization"))
        XCTAssertEqual(F.member(F.member(q, "float32_reasons")!, "keep"), .integer(1))
    }

    /// The int8 rule by consumer op on a graph made for it, each decision worked out by hand
    /// from the table in Formats/DICO.md.
    func testInt8DecisionsFollowTheReaders() throws {
        func t(_ shape: [Int], _ dtype: DType = .f32) -> TensorData {
            let n = shape.reduce(1, *)
            return dtype == .i64 ? TensorData(shape: shape, int64s: [Int64](repeating: 1, count: n))
                                 : TensorData(shape: shape, floats: [Float](repeating: 0.5, count: n))
        }
        let inits: [(String, TensorData)] = [
            ("shared", t([4, 4])), ("left", t([4, 4])), ("gemmB", t([4, 6])), ("added", t([4, 4])), ("conv", t([4, 4, 3, 3])),
            ("bias", t([4])), ("ints", t([2], .i64)), ("unused", t([4, 4])), ("asOutput", t([4, 4])), ("batched", t([2, 4, 4])),
            ("gemmBT", t([6, 4])),
        ]
        func n(_ op: String, _ inputs: [String], _ out: String, _ attrs: [String: ONNXAttribute] = [:]) -> ONNXNode {
            ONNXNode(name: out, opType: op, domain: "", inputs: inputs, outputs: [out], attributes: attrs)
        }
        let nodes = [
            n("MatMul", ["x", "shared"], "a"), n("Gemm", ["x", "shared"], "b", ["transB": .int(1)]),
            n("MatMul", ["left", "x"], "c"), n("Gemm", ["x", "gemmB"], "d"), n("Gemm", ["x", "gemmBT"], "d2", ["transB": .int(1)]),
            n("Add", ["x", "added"], "e"), n("MatMul", ["x", "added"], "e2"),
            n("Conv", ["img", "conv", "bias"], "f"), n("Reshape", ["x", "ints"], "g"), n("MatMul", ["x", "batched"], "h"),
        ]
        let graph = ONNXGraph(name: "g", nodes: nodes, initializers: inits.map { ONNXInitializer(name: $0.0, tensor: $0.1) },
                              inputs: [], outputs: [ONNXValueInfo(name: "asOutput", elementType: .f32, shape: nil)])
        let d = GenericONNXPolicy.decide(graph, policy: QuantPolicy(precision: .int8))
        XCTAssertEqual(d["shared"], .float32(.axisConflict), "MatMul wants axis 1, Gemm with transB axis 0")
        XCTAssertEqual(d["left"], .int8(axis: 0), "MatMul's A: the output rows")
        XCTAssertEqual(d["gemmB"], .int8(axis: 1), "Gemm's B without transB: [K, N]")
        XCTAssertEqual(d["gemmBT"], .int8(axis: 0), "Gemm's B with transB: [N, K]")
        XCTAssertEqual(d["added"], .float32(.notAWeight), "also read by Add")
        XCTAssertEqual(d["conv"], .int8(axis: 0))
        XCTAssertEqual(d["bias"], .float32(.notAWeight))
        XCTAssertEqual(d["ints"], .asStored)
        XCTAssertEqual(d["unused"], .float32(.notAWeight))
        XCTAssertEqual(d["asOutput"], .float32(.notAWeight))
        XCTAssertEqual(d["batched"], .float32(.notAWeight), "MatMul takes rank-2 weights only")
        let half = GenericONNXPolicy.decide(graph, policy: QuantPolicy(precision: .fp16, keep: [try NamePattern("gemm*")]))
        XCTAssertEqual(half["added"], .f16)
        XCTAssertEqual(half["gemmB"], .float32(.keep))
        XCTAssertEqual(half["ints"], .asStored)
    }

    /// A graph the interpreter cannot run on the seeded input (its Reshape needs batch 2, the
    /// drift input has batch 1) cannot be measured: int8 is an error naming the node and
    /// nothing is written; fp32, which needs no measurement, converts.
    func testDriftCheckThatCannotRunIsAnError() throws {
        let model = "\(Self.fixtures)/reshape_batch2.onnx"
        XCTAssertThrowsError(try convert(.int8, input: model)) { e in
            XCTAssertEqual((e as? DicoError)?.kind, .invalidInput)
            XCTAssertTrue("\(e)".contains("cannot measure the int8 drift: the original graph does not run on the seeded input")
                          && "\(e)".contains("node 'reshape' (Reshape)"), "\(e)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
        XCTAssertNil(try convert(.fp32, input: model).summary.drift)
    }

    // MARK: - fp32 round trip

    /// The fp32 file reads back as the ONNX file's graph: opsets, inputs, outputs, nodes with
    /// every attribute, and initializer bytes.
    func testFP32RoundTripGivesTheSameGraph() throws {
        let original = try ONNXModel.load(path: Self.convnet)
        let back = try XCTUnwrap(try DicoFile(path: try convert(.fp32).path).onnxModel)
        XCTAssertEqual(back.irVersion, original.irVersion)
        XCTAssertEqual(back.opsetImports, original.opsetImports)
        XCTAssertEqual(back.producerName, original.producerName)
        XCTAssertEqual(back.producerVersion, original.producerVersion)
        XCTAssertEqual(back.graph.name, original.graph.name)
        XCTAssertEqual(back.graph.inputs, original.graph.inputs)
        XCTAssertEqual(back.graph.outputs, original.graph.outputs)
        XCTAssertEqual(back.graph.nodes.count, original.graph.nodes.count)
        for (a, b) in zip(back.graph.nodes, original.graph.nodes) {
            XCTAssertEqual([a.name, a.opType, a.domain], [b.name, b.opType, b.domain])
            XCTAssertEqual(a.inputs, b.inputs, a.name)
            XCTAssertEqual(a.outputs, b.outputs, a.name)
            XCTAssertEqual(a.attributes.keys.sorted(), b.attributes.keys.sorted(), a.name)
            for (k, v) in b.attributes { XCTAssertEqual(describe(a.attributes[k]!), describe(v), "\(a.name).\(k)") }
        }
        XCTAssertEqual(back.graph.initializers.map(\.name), original.graph.initializers.map(\.name))
        for (a, b) in zip(back.graph.initializers, original.graph.initializers) {
            XCTAssertEqual(a.tensor.dtype, b.tensor.dtype, a.name)
            XCTAssertEqual(a.tensor.shape, b.tensor.shape, a.name)
            XCTAssertEqual(Array(a.tensor.bytes), Array(b.tensor.bytes), a.name)
        }
    }

    /// An attribute as comparable text (floats by bit pattern, tensors by dtype, shape, bytes).
    func describe(_ a: ONNXAttribute) -> String {
        switch a {
        case let .float(f): return "float \(f.bitPattern)"
        case let .int(i): return "int \(i)"
        case let .string(s): return "string \(s)"
        case let .tensor(t): return "tensor \(t.dtype) \(t.shape) \(Array(t.bytes))"
        case let .floats(v): return "floats \(v.map(\.bitPattern))"
        case let .ints(v): return "ints \(v)"
        case let .strings(v): return "strings \(v)"
        }
    }

    /// The fp32 file runs bit-identically to the ONNX file in the interpreter (the same
    /// float32 weights, the same kernels in the same order), whatever the thread count.
    func testFP32RunsBitIdenticallyToTheONNXFile() throws {
        let path = try convert(.fp32).path
        let x = try ONNXValue(ref.tensor("x")!)
        let want = try ONNXInterpreter(model: try ONNXModel.load(path: Self.convnet)).runOrdered(["x": x])[0].floats!
        for threads in [1, 2] {
            XCTAssertEqual(try run(path, threads: threads).map(\.bitPattern), want.map(\.bitPattern), "threads \(threads)")
        }
        // And it is onnxruntime's output of the unchanged model within the fp32 bound (as above).
        XCTAssertLessThan(relativeL2(want, ref.tensor("out_fp32")!.floats()), 1e-5)
    }

    /// Same input and options, same bytes, whatever the thread count.
    func testOutputIsByteIdentical() throws {
        let a = try convert(.int8, "a", threads: 1).path, b = try convert(.int8, "b", threads: 2).path
        XCTAssertEqual(FileManager.default.contents(atPath: a), FileManager.default.contents(atPath: b))
    }

    // MARK: - Failures

    /// int8 refuses a weight holding NaN, naming it; fp16 converts it but the drift check sees
    /// the NaN output: an error, and nothing is written in either case.
    func testNaNWeightIsRefused() throws {
        let nan = "\(Self.fixtures)/convnet_nan_weight.onnx"
        XCTAssertThrowsError(try convert(.int8, input: nan)) { e in
            XCTAssertEqual((e as? DicoError)?.kind, .invalidInput)
            XCTAssertTrue("\(e)".contains("'proj'") && "\(e)".contains("NaN"), "\(e)")
        }
        XCTAssertThrowsError(try convert(.fp16, input: nan)) { e in
            XCTAssertEqual((e as? DicoError)?.kind, .invalidInput)
            XCTAssertTrue("\(e)".contains("output 'out'") && "\(e)".contains("NaN"), "\(e)")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
    }

    /// The good int8 file with `edit` applied to its header.
    func edited(_ edit: (JSONValue) throws -> JSONValue) throws -> [UInt8] {
        var b = Array(FileManager.default.contents(atPath: try convert(.int8, UUID().uuidString).path)!)
        try F.editHeader(&b, edit)
        return b
    }

    func assertRejected(_ bytes: [UInt8], _ phrases: [String], file: StaticString = #filePath, line: UInt = #line) {
        let path = "\(dir!)/bad-\(UUID().uuidString).dico"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(bytes)), file: file, line: line)
        XCTAssertThrowsError(try DicoFile(path: path), file: file, line: line) { e in
            let m = (e as? DicoError)?.message ?? "\(e)"
            XCTAssertEqual((e as? DicoError)?.kind, .invalidInput, m, file: file, line: line)
            XCTAssertTrue(m.hasPrefix("\(path): "), m, file: file, line: line)
            for p in phrases { XCTAssertTrue(m.contains(p), "'\(p)' not in: \(m)", file: file, line: line) }
        }
    }

    /// `edit` on the onnx_graph's node named `node`.
    func editNode(_ node: String, _ edit: @escaping (JSONValue) -> JSONValue) throws -> [UInt8] {
        try edited { root in
            let g = F.member(root, "onnx_graph")!
            let nodes = F.member(g, "nodes")!.arrayValue!.map { F.member($0, "name") == .string(node) ? edit($0) : $0 }
            return F.replacing(root, "onnx_graph", with: F.replacing(g, "nodes", with: .array(nodes)))
        }
    }

    func testNodeReadingAnUnknownTensorIsRefused() throws {
        let b = try editNode("/MatMul") { F.replacing($0, "inputs", with: .array([.string("/fc/Gemm_output_0"), .string("nope")])) }
        assertRejected(b, ["node '/MatMul' (MatMul): input 1 'nope' is not an initializer"])
    }

    func testCorruptedONNXGraphIsRefused() throws {
        assertRejected(try editNode("/Flatten") { F.replacing($0, "attributes", with: .object([("axis", .object([("integer", .integer(1))]))])) },
                       ["node '/Flatten' (Flatten): attribute 'axis' has the unknown kind 'integer'"])
        assertRejected(try edited { root in
            F.replacing(root, "onnx_graph", with: .object(F.member(root, "onnx_graph")!.objectMembers!.filter { $0.key != "nodes" }))
        }, ["the onnx_graph needs"])
        assertRejected(try edited { root in
            let g = F.member(root, "onnx_graph")!
            return F.replacing(root, "onnx_graph", with: F.replacing(g, "initializers", with: .array([.object([("name", .string("missing")), ("dtype", .string("f32"))])])))
        }, ["initializer 'missing' names no tensor of the table"])
        // An int8 tensor declared as int64 in the graph.
        assertRejected(try edited { root in
            let g = F.member(root, "onnx_graph")!
            let inits = F.member(g, "initializers")!.arrayValue!.map { F.member($0, "name") == .string("proj") ? F.replacing($0, "dtype", with: .string("i64")) : $0 }
            return F.replacing(root, "onnx_graph", with: F.replacing(g, "initializers", with: .array(inits)))
        }, ["initializer 'proj' is declared i64"])
    }

    /// Flag bits: one a 1.1 reader does not know; bit 0 cleared under an onnx_graph; a graph
    /// and an onnx_graph together.
    func testFlagsAndGraphSectionMustAgree() throws {
        let good = Array(FileManager.default.contents(atPath: try convert(.int8).path)!)
        XCTAssertEqual(F.u64(good, 12) & 0xFFFF_FFFF, 1, "flag bit 0 is set")
        var b = good
        F.put(&b, 12, 3, 4)
        F.fixPrefixCRC(&b)
        assertRejected(b, ["unknown flags 0x3"])
        b = good
        F.put(&b, 12, 0, 4)
        F.fixPrefixCRC(&b)
        assertRejected(b, ["'onnx_graph' but flag bit 0 (an ONNX graph) is not set"])
        b = good
        F.put(&b, 10, 0, 2)
        F.fixPrefixCRC(&b)
        assertRejected(b, ["unknown flags 0x1", "version 1.0"])
    }
}
