import DicoTestSupport
import XCTest
import DicoCore
import DicoModel
@testable import DicoONNX
import DicoRuntime
import DicoSafetensors

/// The tiny DiCo's torch exports (Fixtures/make_onnx_fixtures.py) run by the interpreter, against
/// the PyTorch float32 forward.
final class ONNXExportTests: XCTestCase {
    /// The issue's whole-model bound. PyTorch's own fp32-vs-fp64 floor on these inputs is about
    /// 1e-6 (Fixtures/README.md) and onnxruntime lands at 6e-7 to 3e-6, so 1e-5 leaves room
    /// for a different summation order and still catches any wrong op (> 1e-3).
    let tolerance = 1e-5

    /// x, t, y and the PyTorch output, as interpreter values.
    struct Reference {
        var x: ONNXValue, t: ONNXValue, y: ONNXValue
        var out: [Float], outShape: [Int]
        /// onnxruntime's output per export file name, where the reference file has one.
        var ort: [String: [Float]] = [:]

        var inputs: [String: ONNXValue] { ["x": x, "t": t, "y": y] }

        /// The samples `rows` (in that order) of every tensor: DiCo computes each sample on
        /// its own, so selected rows of a PyTorch output are the PyTorch output of the
        /// selected inputs (the way to get a reference at another batch).
        func rows(_ rows: [Int]) -> Reference {
            func pick<T>(_ v: [T], _ shape: [Int]) -> ([T], [Int]) {
                let per = v.count / shape[0]
                return (rows.flatMap { v[($0 * per)..<(($0 + 1) * per)] }, [rows.count] + shape.dropFirst())
            }
            let (xv, xs) = pick(x.floats!, x.shape), (tv, ts) = pick(t.floats!, t.shape)
            let (yv, ys) = pick(y.int64s!, y.shape), (ov, os) = pick(out, outShape)
            return Reference(x: ONNXValue(shape: xs, floats: xv)!, t: ONNXValue(shape: ts, floats: tv)!,
                             y: ONNXValue(shape: ys, int64s: yv)!, out: ov, outShape: os)
        }
    }

    /// A reference file's inputs (t as float32, as the exports declare it) and output.
    func reference(_ name: String) throws -> Reference {
        let f = try SafetensorsFile(path: "\(fixtures)/\(name)")
        func t(_ k: String) throws -> TensorData { try XCTUnwrap(f.tensor(k), "\(name): \(k)") }
        let out = try t("out")
        var r = Reference(x: try ONNXValue(try t("x")), t: ONNXValue(shape: try t("t").shape, floats: try t("t").floats())!,
                          y: try ONNXValue(try t("y")), out: out.floats(), outShape: out.shape)
        for k in f.names where k.hasPrefix("out_ort_") { r.ort[k.dropFirst(8) + ".onnx"] = f.tensor(k)!.floats() }
        return r
    }

    func check(_ export: String, _ ref: Reference, file: StaticString = #filePath, line: UInt = #line) throws {
        let model = try ONNXModel.load(path: "\(fixtures)/\(export)")
        let out = try ONNXInterpreter(model: model).run(ref.inputs)
        let y = try XCTUnwrap(out["out"], file: file, line: line)
        XCTAssertEqual(y.shape, ref.outShape, "\(export) at x \(ref.x.shape)", file: file, line: line)
        guard y.shape == ref.outShape else { return }
        let err = relativeL2(y.floats!, ref.out)
        var ortNote = ""
        if let ort = ref.ort[export] {
            // onnxruntime on the same graph and inputs: the interpreter should be closer to it
            // than either is to PyTorch eager (what differs is the export, not the kernels).
            let e = relativeL2(y.floats!, ort)
            ortNote = ", vs onnxruntime \(String(format: "%.2e", e))"
            XCTAssertLessThanOrEqual(e, tolerance, "\(export) vs onnxruntime", file: file, line: line)
        }
        print("\(export) at x \(ref.x.shape): relative L2 vs PyTorch \(String(format: "%.2e", err))\(ortNote)")
        XCTAssertLessThanOrEqual(err, tolerance, "\(export) at x \(ref.x.shape)", file: file, line: line)
    }

    /// Each export at the batch and size it was exported with.
    func testExportsMatchPyTorchAtExportedShape() throws {
        let ref = try reference("tiny_onnx_ref.safetensors")
        for export in ["tiny_opset13.onnx", "tiny_opset17.onnx", "tiny_dynamo.onnx"] {
            try check(export, ref)
        }
    }

    /// The dynamic-batch exports at batches 1 and 3 (rows of the PyTorch reference).
    func testDynamicBatchExportsRunAtOtherBatches() throws {
        let ref = try reference("tiny_onnx_ref.safetensors")
        for export in ["tiny_opset17.onnx", "tiny_dynamo.onnx"] {
            try check(export, ref.rows([1]))
            try check(export, ref.rows([1, 0, 1]))
        }
    }

    /// The opset 17 export has dynamic N, H and W: batch 4 at 16x16 (t fractional, the null
    /// class) and the non-square 8x12, against the PyTorch references of the safetensors model.
    func testDynamicSpatialExportRunsOtherSizes() throws {
        try check("tiny_opset17.onnx", try reference("tiny_ref_a.safetensors"))
        try check("tiny_opset17.onnx", try reference("tiny_ref_b.safetensors"))
    }

    /// The static opset 13 export fed batch 3: refused, as onnxruntime refuses it (its graph
    /// would even compute batch 3, the exporter wrote -1 batches into its Reshape targets, but
    /// the model declares batch 2), naming the input, both shapes and the node that reads it.
    func testStaticExportAtAnotherBatchFailsNamingTheNode() throws {
        let ref = try reference("tiny_onnx_ref.safetensors").rows([0, 1, 0])
        let path = "\(fixtures)/tiny_opset13.onnx"
        let interp = try ONNXInterpreter(model: try ONNXModel.load(path: path))
        XCTAssertThrowsError(try interp.run(ref.inputs)) { error in
            guard let e = error as? DicoError else { return XCTFail("\(error)") }
            XCTAssertEqual(e.kind, .invalidInput)
            XCTAssertTrue(e.message.hasPrefix("\(path): input 'x' has shape [3, 4, 8, 8], the graph declares [2, 4, 8, 8]; first read by node '"),
                          e.message)
        }
    }

    /// The small conv net export (Relu, Flatten, MatMul, folded BatchNorm) against PyTorch.
    func testConvNetExportMatchesPyTorch() throws {
        let f = try SafetensorsFile(path: "\(fixtures)/convnet_ref.safetensors")
        let x = try ONNXValue(try XCTUnwrap(f.tensor("x"))), ref = try XCTUnwrap(f.tensor("out"))
        let out = try ONNXInterpreter(model: try ONNXModel.load(path: "\(fixtures)/convnet.onnx")).runOrdered(["x": x])
        XCTAssertEqual(out[0].shape, ref.shape)
        XCTAssertLessThanOrEqual(relativeL2(out[0].floats!, ref.floats()), tolerance)
    }

    /// The interpreter on the opset 17 export agrees with the IR executor on the safetensors
    /// model (what the verifier relies on), and is timed against it.
    func testAgreesWithIRExecutor() throws {
        let ref = try reference("tiny_ref_a.safetensors")
        let interp = try ONNXInterpreter(model: try ONNXModel.load(path: "\(fixtures)/tiny_opset17.onnx"))
        let m = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        let exec = try Executor(graph: m.graph, threads: 2)
        let host = ["x": ref.x.hostTensor!, "t": ref.t.hostTensor!, "y": ref.y.hostTensor!]
        var start = monotonicSeconds()
        let a = try interp.run(ref.inputs)["out"]!.floats!
        let tInterp = monotonicSeconds() - start
        start = monotonicSeconds()
        let b = try exec.run(host)[0].floats!
        let tExec = monotonicSeconds() - start
        XCTAssertLessThanOrEqual(relativeL2(a, b), tolerance)
        print("tiny DiCo x \(ref.x.shape): ONNX interpreter \(String(format: "%.1f", tInterp * 1e3)) ms, IR executor \(String(format: "%.1f", tExec * 1e3)) ms")
    }

    /// Weights read from the file at each use (the import proof's setting: float32 Conv and
    /// Gemm weights of 4 KiB or more in place in the mapped external data, others converted
    /// per use) give the same output bit for bit as weights converted once: the same values
    /// reach the same kernels.
    func testWeightsOnUseMatchWeightsConvertedOnce() throws {
        let ref = try reference("tiny_onnx_ref.safetensors")
        let model = try ONNXModel.load(path: "\(fixtures)/tiny_dynamo.onnx")
        let once = try ONNXInterpreter(model: model).run(ref.inputs)["out"]!.floats!
        let onUse = try ONNXInterpreter(model: model, convertWeightsOnUse: true)
        XCTAssertGreaterThan(onUse.inPlaceReadCount, 0, "the export's larger float32 weights are read in place")
        // Two runs: the first releases the weights' pages, the second reads them back.
        XCTAssertEqual(try onUse.run(ref.inputs)["out"]!.floats!, once)
        XCTAssertEqual(try onUse.run(ref.inputs)["out"]!.floats!, once)
    }
}
