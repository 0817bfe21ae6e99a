import DicoTestSupport
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

        let start = monotonicSeconds()
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

/// The interpreter against the IR executor on a large export of a DiCo safetensors file (the
/// import proof's two forward passes). Opt-in: set DICO_ONNX_BENCH_ONNX to the export (say
/// bench-out/XL-dynamo.onnx) and DICO_ONNX_BENCH_SAFETENSORS to the file it was exported from,
/// and run in release. Prints the median of DICO_ONNX_BENCH_ROUNDS (default 3) interleaved
/// rounds of each, their ratio, and with DICO_ONNX_BENCH_PROFILE=1 the time per op type.
final class ONNXInterpreterLargeExportBenchmarkTests: XCTestCase {
    func testLargeExportForwardRatio() throws {
        let env = ProcessInfo.processInfo.environment
        guard let onnxPath = env["DICO_ONNX_BENCH_ONNX"], let stPath = env["DICO_ONNX_BENCH_SAFETENSORS"] else {
            throw XCTSkip("set DICO_ONNX_BENCH_ONNX and DICO_ONNX_BENCH_SAFETENSORS to run the benchmark")
        }
        let rounds = Int(env["DICO_ONNX_BENCH_ROUNDS"] ?? "") ?? 3
        let profiling = env["DICO_ONNX_BENCH_PROFILE"] == "1"
        let batch = Int(env["DICO_ONNX_BENCH_BATCH"] ?? "") ?? 2
        let model = try DiCoModelFile.load(stPath, checkValues: false)
        let onnx = try ONNXModel.load(path: onnxPath)
        var start = monotonicSeconds()
        // DICO_ONNX_BENCH_LAZY=1: the import proof's setting (weights read from the file on
        // every run, their pages released after use, on both sides).
        let lazy = env["DICO_ONNX_BENCH_LAZY"] == "1"
        let interp = try ONNXInterpreter(model: onnx, convertWeightsOnUse: lazy)
        let loadInterp = monotonicSeconds() - start
        interp.profiling = profiling
        let exec = try Executor(graph: model.graph)
        exec.profiling = profiling
        exec.releaseMappedConstants = lazy

        // Seeded unit-scale latents at the export's spatial size, two timesteps and classes.
        let xDims = try XCTUnwrap(onnx.graph.inputs.first { $0.name == "x" }?.shape)
        let spatial = xDims.dropFirst(2).map { d -> Int in if case let .value(v) = d { return Int(v) }; return 32 }
        let xShape = [batch, 4] + spatial
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let x: [Float] = (0..<xShape.reduce(1, *)).map { _ in
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(state >> 40) / Float(1 << 24) * 4 - 2
        }
        let t: [Float] = (0..<batch).map { [999, 37][$0 % 2] }
        let y: [Int64] = (0..<batch).map { Int64($0 % 2 == 0 ? 1000 : 3) }
        let inputs: [String: ONNXValue] = ["x": ONNXValue(shape: xShape, floats: x)!, "t": ONNXValue(shape: [batch], floats: t)!,
                                           "y": ONNXValue(shape: [batch], int64s: y)!]
        let host = inputs.mapValues { $0.hostTensor! }

        var ti: [Double] = [], te: [Double] = []
        var a: [Float] = [], b: [Float] = []
        for _ in 0..<rounds {
            start = monotonicSeconds()
            a = try interp.runOrdered(inputs)[0].floats!
            ti.append(monotonicSeconds() - start)
            start = monotonicSeconds()
            b = try exec.run(host)[0].floats!
            te.append(monotonicSeconds() - start)
        }
        func median(_ v: [Double]) -> Double { v.sorted()[v.count / 2] }
        let err = relativeL2(a.map(Double.init), b.map(Double.init))
        print(String(format: "x %@: ONNX interpreter %.0f ms (load %.0f ms; rounds %@), IR executor %.0f ms (rounds %@), ratio of medians %.2f, rel L2 %.2e",
                     "\(xShape)", median(ti) * 1e3, loadInterp * 1e3, ti.map { String(format: "%.0f", $0 * 1e3) }.joined(separator: " "),
                     median(te) * 1e3, te.map { String(format: "%.0f", $0 * 1e3) }.joined(separator: " "), median(ti) / median(te), err))
        if profiling {
            let executorProfile = exec.profile.mapValues { (seconds: $0.seconds, count: $0.count) }
            for (name, p) in [("interpreter", interp.profile), ("executor", executorProfile)] {
                let total = p.values.reduce(0) { $0 + $1.seconds }
                print("\(name) profile (ms per run, all \(rounds) rounds averaged):")
                for (k, v) in p.sorted(by: { $0.value.seconds > $1.value.seconds }) {
                    print(String(format: "  %@ %8.1f ms %5.1f%%  x%d", k as NSString, v.seconds * 1e3 / Double(rounds), 100 * v.seconds / total, v.count / rounds))
                }
            }
        }
        // ONNXCanonicalizer.proofTolerance: the bound the import proof puts on these two passes
        // (float rounding and the executor's GELU approximation give about 1e-6).
        XCTAssertLessThanOrEqual(err, 1e-4)
    }
}
