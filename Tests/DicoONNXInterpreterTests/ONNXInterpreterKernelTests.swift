#if canImport(Glibc)
import DicoTestSupport
import Glibc
#endif
import XCTest
import DicoCore
import DicoONNX

/// The paths the small conformance cases do not reach: work split over threads.
final class ONNXInterpreterKernelTests: XCTestCase {
    /// Seeded values in [-2, 2).
    func values(_ n: Int, seed: UInt64) -> [Float] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return Float(s >> 40) / Float(1 << 24) * 4 - 2
        }
    }

    /// A float function on a tensor large enough to be split gives exactly erff per element.
    func testSplitFloatFunctionIsExact() throws {
        let x = values(200_000, seed: 1)
        let m = model([node("Erf", ["x"])], inputs: [floatInput("x")], outputs: ["y"])
        let y = try ONNXInterpreter(model: m).run(["x": ONNXValue(shape: [4, 50_000], floats: x)!])["y"]!.floats!
        XCTAssertEqual(y, x.map { erff($0) })
    }

    /// A MatMul large enough for the column-block sgemm split, against a Double reference.
    /// Tolerance: float32 sums of 300 products, a few ulps of relative L2 (1e-6).
    func testSplitSgemmMatchesReference() throws {
        let (m, k, n) = (64, 300, 600)
        let a = values(m * k, seed: 2), b = values(k * n, seed: 3)
        let graph = model([node("MatMul", ["a", "b"])], inputs: [floatInput("a"), floatInput("b")], outputs: ["y"])
        let y = try ONNXInterpreter(model: graph).run(["a": ONNXValue(shape: [m, k], floats: a)!, "b": ONNXValue(shape: [k, n], floats: b)!])["y"]!
        XCTAssertEqual(y.shape, [m, n])
        var ref = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for p in 0..<k { let av = Double(a[i * k + p]); for j in 0..<n { ref[i * n + j] += av * Double(b[p * n + j]) } } }
        XCTAssertLessThanOrEqual(relativeL2(y.floats!.map(Double.init), ref), 1e-6)
    }

    /// `threads` changes who computes, never what: the split MatMul and Conv give the same bits
    /// on 1, 2 and 3 workers (the column blocks depend on the problem only; one cblas call over
    /// all columns would sum in another order).
    func testThreadCountDoesNotChangeResults() throws {
        let (m, k, n) = (64, 300, 600)
        let a = values(m * k, seed: 4), b = values(k * n, seed: 5)
        let mm = model([node("MatMul", ["a", "b"])], inputs: [floatInput("a"), floatInput("b")], outputs: ["y"])
        let feeds = ["a": ONNXValue(shape: [m, k], floats: a)!, "b": ONNXValue(shape: [k, n], floats: b)!]
        let x = values(2 * 32 * 24 * 24, seed: 6), w = values(64 * 32 * 9, seed: 7)
        let conv = model([node("Conv", ["x", "w"], ["pads": .ints([1, 1, 1, 1])])], inputs: [floatInput("x"), floatInput("w")], outputs: ["y"])
        let convFeeds = ["x": ONNXValue(shape: [2, 32, 24, 24], floats: x)!, "w": ONNXValue(shape: [64, 32, 3, 3], floats: w)!]
        for (graph, inputs) in [(mm, feeds), (conv, convFeeds)] {
            let one = try ONNXInterpreter(model: graph, threads: 1).run(inputs)["y"]!.floats!
            for t in [2, 3] {
                let other = try ONNXInterpreter(model: graph, threads: t).run(inputs)["y"]!.floats!
                XCTAssertEqual(other.count, one.count)
                XCTAssertEqual(zip(other, one).filter { $0.bitPattern != $1.bitPattern }.count, 0, "values differing, threads \(t) vs 1")
            }
        }
    }

    /// Cast to bfloat16 (onnxruntime cannot hand bfloat16 to numpy, so no fixture case): round
    /// to nearest, ties to even (the first two values are ties, the third one ulp above a
    /// tie), kept as float32; a Cast back to float is then exact.
    func testCastToBFloat16RoundsToNearestEven() throws {
        let x: [Float] = [1.00390625, 1.01171875, Float(bitPattern: 0x3F80_8001), -3.14159, 65504, .infinity]
        let m = model([node("Cast", ["x"], ["to": .int(16)], outputs: ["h"], name: "c1"), node("Cast", ["h"], ["to": .int(1)], name: "c2")],
                      inputs: [floatInput("x")], outputs: ["y"])
        let y = try ONNXInterpreter(model: m).run(["x": ONNXValue(shape: [x.count], floats: x)!])["y"]!.floats!
        XCTAssertEqual(y, [1, 1.015625, 1.0078125, -3.140625, 65536, .infinity])
    }
}
