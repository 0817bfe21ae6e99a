import DicoConversion
import DicoCore
import DicoONNX
import Foundation
import XCTest

/// Where the DiCo path ends and the generic one begins: a DiCo-named export whose weights show
/// it is not DiCo imports generically, with the reason; a DiCo whose weights are broken is an
/// error naming the tensor; a generic graph's provenance covers every file it reads.
final class GenericImportTests: XCTestCase {
    typealias C = CanonicalizationTests

    /// tiny_opset17.onnx with initializer `name` replaced by `tensor`.
    func replacing(_ name: String, with tensor: (TensorData) -> TensorData) throws -> ONNXModel {
        let m = try ONNXModel.load(path: "\(C.fixtures)/tiny_opset17.onnx")
        var g = m.graph
        let i = try XCTUnwrap(g.initializers.firstIndex { $0.name == name })
        g.initializers[i] = ONNXInitializer(name: name, tensor: tensor(g.initializers[i].tensor))
        return m.replacingGraph(g)
    }

    /// One DiCo weight of the wrong shape: not DiCo (the recognizer's problem is the reason),
    /// so `inspect`, `run` and conversion take the graph generically instead of failing.
    func testWrongShapeWeightMeansNotDiCo() throws {
        let m = try replacing("x_embedder.proj.bias") { t in TensorData(shape: [t.elementCount + 1], floats: [Float](repeating: 0.5, count: t.elementCount + 1)) }
        XCTAssertThrowsError(try ONNXCanonicalizer.canonicalize(m, threads: 2)) { e in
            guard let e = e as? ONNXCanonicalizer.NotDiCo else { return XCTFail("not NotDiCo: \(e)") }
            XCTAssertTrue(e.reason.contains("tensor 'x_embedder.proj.bias' has shape"), e.reason)
            XCTAssertFalse(e.reason.contains("\n"), "one line: \(e.reason)")
        }
    }

    /// A DiCo weight holding NaN (right name, right shape): still DiCo, and an error naming it.
    func testNaNWeightIsAnErrorNamingIt() throws {
        let m = try replacing("x_embedder.proj.bias") { t in
            var v = t.floats()
            v[0] = .nan
            return TensorData(shape: t.shape, floats: v)
        }
        XCTAssertThrowsError(try ONNXCanonicalizer.canonicalize(m, threads: 2)) { e in
            guard let e = e as? DicoError else { return XCTFail("not a DicoError: \(e)") }
            XCTAssertEqual(e.kind, .invalidInput)
            XCTAssertTrue(e.message.contains("tensor 'x_embedder.proj.bias' holds NaN or Inf"), e.message)
        }
    }

    /// A graph whose only external data is a Constant node's tensor (no initializer): that file
    /// is hashed into the provenance too. The digest is `sha256sum Fixtures/const_external.onnx.data`.
    func testConstantExternalDataIsHashed() throws {
        let dir = try C.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = "\(dir)/c.dico"
        let s = try Converter.convert(input: "\(C.fixtures)/const_external.onnx", output: out,
                                      options: ConversionOptions(precision: .fp16, threads: 2, overwrite: false, toolVersion: "test"))
        XCTAssertEqual(s.inputBytes, try MappedFile(path: "\(C.fixtures)/const_external.onnx").size + 16)
        guard case let .genericONNX(g) = try LoadedModel.openAny(out) else { return XCTFail("not generic") }
        let text = try XCTUnwrap(g.provenance).serialized()
        XCTAssertTrue(text.contains(#""external_data":[{"file":"const_external.onnx.data","size":16,"sha256":"26b28abaf918b792f3dd528109fb542d0dd0945755ba5e461d41e4c633c34499"}]"#), text)
        // The Constant's tensor is stored as is (not converted to fp16), under its attribute name.
        XCTAssertEqual(g.tensorsByDType, ["F32": 1])
        XCTAssertEqual(g.onnx.graph.nodes[0].attributes["value"]?.tensor?.floats(), [1.5, -2.0, 0.25, 8.0])
    }
}
