import Foundation
import XCTest
import DicoCore
import DicoModel
import DicoRuntime
import DicoSafetensors
import DicoTestSupport

/// The repository's Fixtures/ folder.
let fixtures = fixturesDirectory

/// Reads x, t, y and the reference outputs from a fixture reference file.
func referenceInputs(_ path: String) throws -> (inputs: [String: HostTensor], out: [Double], out64: [Double], shape: [Int]) {
    let f = try SafetensorsFile(path: path)
    let x = f.tensor("x")!, t = f.tensor("t")!, y = f.tensor("y")!
    let out = f.tensor("out")!, out64 = f.tensor("out_f64")!
    XCTAssertEqual(out64.dtype, .f64)
    let o64 = (0..<out64.elementCount).map { out64.bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
    return (["x": HostTensor(shape: x.shape, floats: x.floats()),
             "t": HostTensor(shape: t.shape, floats: t.floats()),
             "y": HostTensor(shape: y.shape, int64s: y.int64s()!)],
            out.floats().map(Double.init), o64, out.shape)
}

final class FixtureReferenceTests: XCTestCase {
    /// The bound: float32 execution of the same weights agrees with PyTorch to
    /// float rounding. The fixture script measured the fp32-vs-fp64 PyTorch floor at about
    /// 1e-6 (Fixtures/README.md), so 1e-5 leaves room for a different but correct summation
    /// order and still catches any real mistake (a wrong op moves the output by > 1e-3).
    let tolerance = 1e-5

    func check(model: String, reference: String, expectedConfig: DiCoConfig) throws {
        let m = try DiCoModelFile.load("\(fixtures)/\(model)")
        XCTAssertEqual(m.weights.config, expectedConfig)
        let ref = try referenceInputs("\(fixtures)/\(reference)")
        let out = try Executor(graph: m.graph, threads: 2).run(ref.inputs)
        XCTAssertEqual(out[0].shape, ref.shape)
        let e32 = relativeL2(out[0].floats!, ref.out), e64 = relativeL2(out[0].floats!, ref.out64)
        XCTAssertLessThanOrEqual(e32, tolerance, "\(reference) vs PyTorch fp32")
        XCTAssertLessThanOrEqual(e64, tolerance, "\(reference) vs PyTorch fp64")
    }

    let tiny = DiCoConfig(hidden: 24, depths: [2, 1, 2, 1, 2], mlpRatio: 2, numClasses: 10)

    /// Batch 4, 16x16, t = [0, 999, 500.5, 37] (fractional included), y with the null class.
    func testTinyMatchesPyTorchSetA() throws {
        try check(model: "tiny.safetensors", reference: "tiny_ref_a.safetensors", expectedConfig: tiny)
    }

    /// Batch 2, non-square 8x12, int64 timesteps.
    func testTinyMatchesPyTorchSetB() throws {
        try check(model: "tiny.safetensors", reference: "tiny_ref_b.safetensors", expectedConfig: tiny)
    }

    /// MLP ratio 4 and depth 1 everywhere: config inference of r.
    func testRatio4ModelMatchesPyTorch() throws {
        try check(model: "tiny_r4.safetensors", reference: "tiny_r4_ref.safetensors",
                  expectedConfig: DiCoConfig(hidden: 16, depths: [1, 1, 1, 1, 1], mlpRatio: 4, numClasses: 7))
    }

    /// Results are bit-identical whatever the thread count (GEMMs and kernels compute each
    /// output with the same arithmetic however the work is split).
    func testOutputDoesNotDependOnThreadCount() throws {
        let m = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        let ref = try referenceInputs("\(fixtures)/tiny_ref_a.safetensors")
        let one = try Executor(graph: m.graph, threads: 1).run(ref.inputs)[0]
        for n in [2, 3] {
            let other = try Executor(graph: m.graph, threads: n).run(ref.inputs)[0]
            XCTAssertEqual(one, other, "threads 1 vs \(n)")
        }
    }

    /// The same executor run twice gives the same answer (buffer reuse leaks no state).
    func testRepeatedRunsAgree() throws {
        let m = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        let ex = try Executor(graph: m.graph, threads: 2)
        let a = try referenceInputs("\(fixtures)/tiny_ref_a.safetensors"), b = try referenceInputs("\(fixtures)/tiny_ref_b.safetensors")
        let first = try ex.run(a.inputs)[0]
        _ = try ex.run(b.inputs)
        XCTAssertEqual(try ex.run(a.inputs)[0], first)
    }

    func testBadRunInputsAreClearErrors() throws {
        let m = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        let ex = try Executor(graph: m.graph, threads: 1)
        let x = HostTensor(shape: [1, 4, 8, 8], floats: [Float](repeating: 0, count: 256))
        let t = HostTensor(shape: [1], floats: [5]), y = HostTensor(shape: [1], int64s: [1])
        func expect(_ inputs: [String: HostTensor], _ phrase: String) {
            XCTAssertThrowsError(try ex.run(inputs)) { e in
                let err = e as! DicoError
                XCTAssertEqual(err.kind, .invalidInput)
                XCTAssertTrue(err.message.contains(phrase), "'\(phrase)' not in: \(err.message)")
            }
        }
        expect(["x": x, "t": t], "input 'y' is missing")
        expect(["x": x, "t": t, "y": HostTensor(shape: [1], floats: [1])], "input 'y' has dtype f32, expected i64")
        expect(["x": HostTensor(shape: [1, 3, 8, 8], floats: [Float](repeating: 0, count: 192)), "t": t, "y": y], "dimension 1 must be 4")
        expect(["x": HostTensor(shape: [1, 4, 6, 8], floats: [Float](repeating: 0, count: 192)), "t": t, "y": y], "divisible by 4")
        expect(["x": x, "t": HostTensor(shape: [2], floats: [1, 2]), "y": y], "input 't' has N = 2")
        expect(["x": x, "t": t, "y": HostTensor(shape: [1], int64s: [11])], "class index 11 is outside 0..<11")
        expect(["x": x, "t": t, "y": HostTensor(shape: [1], int64s: [-1])], "class index -1")
    }
}
