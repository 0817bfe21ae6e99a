import Foundation
import XCTest
import DicoCore
import DicoModel
import DicoONNX
import DicoRuntime
import DicoSafetensors

/// Forward time of the interpreter against the IR executor on a larger model. Opt-in (the
/// files are too large to commit): set DICO_ONNX_BENCH_DIR to a folder with `model.onnx`
/// (a torch export with inputs x, t, y and output out), `model.safetensors` (the same weights
/// with a `dico.config`) and `ref.safetensors` (x, t, y, out from PyTorch), and run in release.
final class ONNXInterpreterBenchmarkTests: XCTestCase {
    func testForwardTimeAgainstIRExecutor() throws {
        guard let dir = ProcessInfo.processInfo.environment["DICO_ONNX_BENCH_DIR"] else {
            throw XCTSkip("set DICO_ONNX_BENCH_DIR to run the benchmark")
        }
        let ref = try SafetensorsFile(path: "\(dir)/ref.safetensors")
        func t(_ k: String) throws -> TensorData { try XCTUnwrap(ref.tensor(k), k) }
        let inputs: [String: ONNXValue] = ["x": try ONNXValue(try t("x")), "t": try ONNXValue(try t("t")), "y": try ONNXValue(try t("y"))]
        let host = inputs.mapValues { $0.hostTensor! }
        let expected = try t("out").floats()

        var start = monotonicSeconds()
        let interp = try ONNXInterpreter(model: try ONNXModel.load(path: "\(dir)/model.onnx"))
        let loadInterp = monotonicSeconds() - start
        let exec = try Executor(graph: try DiCoModelFile.load("\(dir)/model.safetensors").graph)

        func best(_ runs: Int, _ body: () throws -> [Float]) rethrows -> (Double, [Float]) {
            var out = try body()   // warm-up (buffer pools, page faults)
            var bestTime = Double.infinity
            for _ in 0..<runs {
                let s = monotonicSeconds()
                out = try body()
                bestTime = min(bestTime, monotonicSeconds() - s)
            }
            return (bestTime, out)
        }
        let (ti, a) = try best(3) { try interp.run(inputs)["out"]!.floats! }
        let (te, b) = try best(3) { try exec.run(host)[0].floats! }
        let errA = relativeL2(a.map(Double.init), expected.map(Double.init)), errB = relativeL2(b.map(Double.init), expected.map(Double.init))
        print(String(format: "x %@: ONNX interpreter %.1f ms (load %.0f ms, rel L2 vs PyTorch %.2e), IR executor (%d threads) %.1f ms (rel L2 %.2e), ratio %.2f",
                     "\(inputs["x"]!.shape)", ti * 1e3, loadInterp * 1e3, errA, exec.threads, te * 1e3, errB, ti / te))
        XCTAssertLessThanOrEqual(errA, 1e-5)
    }
}
