import DicoTestSupport
import DicoCore
import DicoONNX
import DicoSafetensors
import Foundation
import XCTest

/// Import time of a large model, ONNX with external data vs safetensors, on the same weights.
/// Skipped unless DICO_ONNX_BENCH names a `.onnx` (from scripts/make_onnx_bench_model.py) and
/// DICO_ST_BENCH the safetensors it came from. Run one format per process, under
/// `/usr/bin/time -v`, to read each one's peak memory:
///   DICO_ONNX_BENCH=bench-out/XL.onnx DICO_BENCH_ONLY=onnx /usr/bin/time -v swift test --skip-build \
///     --disable-swift-testing --filter ONNXImportBenchmark
/// Prints one line per run: seconds to open and validate, then seconds to read every byte
/// (a checksum over one word per page of every tensor, as a conversion would); with
/// DICO_BENCH_TOUCH=0 the bytes are not read, so peak memory is the import's alone.
final class ONNXImportBenchmark: XCTestCase {
    func checksum(_ tensors: [TensorData]) -> UInt64 {
        var sum: UInt64 = 0
        for t in tensors {
            let b = t.bytes
            var i = 0
            while i + 8 <= b.count { sum &+= b.loadUnaligned(fromByteOffset: i, as: UInt64.self); i += 4096 }
        }
        return sum
    }

    func testImportTime() throws {
        let env = ProcessInfo.processInfo.environment
        let only = env["DICO_BENCH_ONLY"]
        let touch = env["DICO_BENCH_TOUCH"] != "0"
        guard env["DICO_ONNX_BENCH"] != nil || env["DICO_ST_BENCH"] != nil else {
            throw XCTSkip("set DICO_ONNX_BENCH / DICO_ST_BENCH to run")
        }
        if let path = env["DICO_ONNX_BENCH"], only != "safetensors" {
            let t0 = Date()
            let m = try ONNXModel.load(path: path)
            let t1 = Date()
            let sum = touch ? checksum(m.graph.initializers.map(\.tensor)) : 0
            let t2 = Date()
            print(String(format: "BENCH onnx: %d initializers, load %.3f s, touch every page %.3f s (sum %llu)",
                         m.graph.initializers.count, t1.timeIntervalSince(t0), t2.timeIntervalSince(t1), sum))
        }
        if let path = env["DICO_ST_BENCH"], only != "onnx" {
            let t0 = Date()
            let f = try SafetensorsFile(path: path)
            let tensors = f.names.compactMap { f.tensor($0) }
            let t1 = Date()
            let sum = touch ? checksum(tensors) : 0
            let t2 = Date()
            print(String(format: "BENCH safetensors: %d tensors, load %.3f s, touch every page %.3f s (sum %llu)",
                         tensors.count, t1.timeIntervalSince(t0), t2.timeIntervalSince(t1), sum))
        }
    }
}
