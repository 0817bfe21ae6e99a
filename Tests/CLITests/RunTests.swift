import DicoTestSupport
import DicoCore
import DicoSafetensors
import Foundation
import XCTest

final class RunTests: CLITestCase {

    func runArgs(model: String, input: String, output: String, _ extra: [String] = []) -> [String] {
        ["run", model, "--input", input, "--output", output] + extra
    }

    // MARK: - Success

    func testRunMatchesTheReference() throws {
        let output = "\(outDir!)/out.safetensors"
        let r = try dicoConvert(runArgs(model: tiny, input: refA, output: output, ["--threads", "2"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        XCTAssertEqual(entries(outDir), ["out.safetensors"], "only the output, no temporary")

        let f = try SafetensorsFile(path: output)
        XCTAssertEqual(f.names, ["out"])
        let out = try XCTUnwrap(f.tensor("out"))
        XCTAssertEqual(out.dtype, .f32)
        XCTAssertEqual(out.shape, [4, 8, 16, 16])
        let ref = try XCTUnwrap(try SafetensorsFile(path: refA).tensor("out"))
        // Fixtures/README.md ("Measured float32-vs-float64 floors"): PyTorch's own float32
        // forward is ~1.3e-6 (relative L2) from the float64 one on this reference, mostly from
        // float32 timestep features at t = 999. A correct float32 implementation with another
        // summation order or libm lands ~1e-6 from `out`; 1e-5 leaves room for that while a
        // wrong op moves the output by > 1e-3.
        let err = relativeL2(out.floats(), ref.floats())
        XCTAssertLessThanOrEqual(err, 1e-5, "relative L2 vs PyTorch fp32 'out'")
        XCTAssertTrue(out.floats().allSatisfy(\.isFinite))
    }

    func testRunAcceptsInt64TimestepsAndNonSquareInput() throws {
        let refB = fixture("tiny_ref_b.safetensors")
        let output = "\(outDir!)/b.safetensors"
        let r = try dicoConvert(runArgs(model: tiny, input: refB, output: output))
        XCTAssertEqual(r.status, 0, r.stderr)
        let out = try XCTUnwrap(try SafetensorsFile(path: output).tensor("out"))
        XCTAssertEqual(out.shape, [2, 8, 8, 12])
        let ref = try XCTUnwrap(try SafetensorsFile(path: refB).tensor("out"))
        XCTAssertLessThanOrEqual(relativeL2(out.floats(), ref.floats()), 1e-5) // same bound, same reason as above
    }

    func testThreadCountDoesNotChangeTheBytes() throws {
        let one = "\(outDir!)/one.safetensors", two = "\(outDir!)/two.safetensors"
        let results = try dicoConvertConcurrently([
            runArgs(model: tiny, input: refA, output: one, ["--threads", "1"]),
            runArgs(model: tiny, input: refA, output: two, ["--threads", "2"]),
        ])
        for r in results { XCTAssertEqual(r.status, 0, r.stderr) }
        let a = try XCTUnwrap(readBytes(one)), b = try XCTUnwrap(readBytes(two))
        XCTAssertTrue(a == b, "--threads 1 and --threads 2 outputs differ")
    }

    func testForceReplacesAnExistingOutput() throws {
        let output = "\(outDir!)/out.safetensors"
        XCTAssertTrue(FileManager.default.createFile(atPath: output, contents: Data("old".utf8)))
        let r = try dicoConvert(runArgs(model: tiny, input: refA, output: output, ["--force"]))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try SafetensorsFile(path: output).names, ["out"])
        XCTAssertEqual(entries(outDir), ["out.safetensors"])
    }

    // MARK: - Failures

    /// Runs `run` expecting failure with `status`; stderr must be a single
    /// `dico-convert: error: <file>: ...` line (or, when `oneLine` is false, start with one)
    /// and contain every phrase in `mentions`; the output directory must be left as `leaves`.
    func assertRunFails(model: String, input: String? = nil, output: String? = nil, _ extra: [String] = [],
                        status: Int32, file path: String, mentions: [String], oneLine: Bool = true, leaves: [String] = [],
                        file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try dicoConvert(runArgs(model: model, input: input ?? refA, output: output ?? "\(outDir!)/out.safetensors", extra))
        XCTAssertEqual(r.status, status, r.stderr, file: file, line: line)
        let lines = r.stderrLines
        if oneLine { XCTAssertEqual(lines.count, 1, "stderr is not one line: \(r.stderr)", file: file, line: line) }
        XCTAssertTrue(lines.first?.hasPrefix("dico-convert: error: \(path): ") ?? false, "stderr: \(r.stderr)", file: file, line: line)
        for m in mentions {
            XCTAssertTrue(r.stderr.contains(m), "stderr lacks '\(m)': \(r.stderr)", file: file, line: line)
        }
        XCTAssertEqual(r.stdout, "", file: file, line: line)
        XCTAssertEqual(entries(outDir), leaves, "output directory after a failed run", file: file, line: line)
    }

    /// Reads tiny_ref_a's x, t and y.
    func referenceInputs() throws -> (x: TensorData, t: TensorData, y: TensorData) {
        let f = try SafetensorsFile(path: refA)
        return (f32Copy(f.tensor("x")!), f32Copy(f.tensor("t")!), TensorData(shape: [4], int64s: f.tensor("y")!.int64s()!))
    }

    func writeInput(_ name: String, _ tensors: [(name: String, data: TensorData)]) throws -> String {
        let path = dir.file(name)
        try SafetensorsWriter.write(tensors, metadata: nil, to: path, overwrite: false)
        return path
    }

    /// A copy of tiny.safetensors, with `drop` left out and `edit` applied to the tensor it names.
    func writeModel(_ name: String, dropping drop: String? = nil, editing edited: String? = nil,
                    _ edit: (inout [Float]) -> Void = { _ in }) throws -> String {
        let f = try SafetensorsFile(path: tiny)
        var tensors: [(name: String, data: TensorData)] = []
        for n in f.names where n != drop {
            tensors.append((name: n, data: n == edited ? f32Copy(f.tensor(n)!, edit: edit) : f.tensor(n)!))
        }
        let path = dir.file(name)
        try SafetensorsWriter.write(tensors, metadata: f.metadata, to: path, overwrite: false)
        return path
    }

    func testInputMissingY() throws {
        let (x, t, _) = try referenceInputs()
        let input = try writeInput("no_y.safetensors", [(name: "x", data: x), (name: "t", data: t)])
        try assertRunFails(model: tiny, input: input, status: 65, file: input, mentions: ["missing tensor 'y'"])
    }

    func testInputXOfWrongDType() throws {
        let (x, t, y) = try referenceInputs()
        let x64 = f64Tensor(shape: x.shape, x.floats().map(Double.init))
        let input = try writeInput("x_f64.safetensors", [(name: "x", data: x64), (name: "t", data: t), (name: "y", data: y)])
        try assertRunFails(model: tiny, input: input, status: 65, file: input,
                           mentions: ["tensor 'x' has dtype F64, expected F32"])
    }

    func testInputHeightNotDivisibleByFour() throws {
        let x = TensorData(shape: [1, 4, 6, 8], floats: (0..<(4 * 6 * 8)).map { Float($0 % 7) / 7 - 0.5 })
        let input = try writeInput("h6.safetensors", [(name: "x", data: x), (name: "t", data: TensorData(shape: [1], floats: [10])),
                                                     (name: "y", data: TensorData(shape: [1], int64s: [1]))])
        try assertRunFails(model: tiny, input: input, status: 65, file: input,
                           mentions: ["input 'x'", "6 x 8", "divisible by 4"])
    }

    func testInputLabelOutOfRange() throws {
        let (x, t, _) = try referenceInputs()
        // tiny has 10 classes plus the null row: 11 rows, so 11 is one past the end.
        let input = try writeInput("y11.safetensors", [(name: "x", data: x), (name: "t", data: t),
                                                      (name: "y", data: TensorData(shape: [4], int64s: [3, 11, 0, 9]))])
        try assertRunFails(model: tiny, input: input, status: 65, file: input,
                           mentions: ["input 'y'", "class index 11 is outside 0..<11"])
    }

    func testTruncatedModel() throws {
        let bytes = try XCTUnwrap(readBytes(tiny))
        let model = dir.file("truncated.safetensors")
        XCTAssertTrue(FileManager.default.createFile(atPath: model, contents: bytes.prefix(bytes.count / 2)))
        try assertRunFails(model: model, status: 65, file: model, mentions: ["extend past the end of the data section"])
    }

    func testModelThatIsNotDiCo() throws {
        let model = try writeInput("other.safetensors", [(name: "encoder.weight", data: TensorData(shape: [2, 2], floats: [1, 2, 3, 4]))])
        try assertRunFails(model: model, status: 65, file: model, mentions: ["not a DiCo state dict", "x_embedder.proj.weight"])
    }

    func testModelMissingATensor() throws {
        let model = try writeModel("missing.safetensors", dropping: "encoder_level_1.1.conv2.bias")
        // The recognizer lists every problem, one per line after a summary line.
        try assertRunFails(model: model, status: 65, file: model,
                           mentions: ["1 problem", "missing tensor 'encoder_level_1.1.conv2.bias' [24]"], oneLine: false)
    }

    func testModelWithNaN() throws {
        let model = try writeModel("nan.safetensors", editing: "latent.0.conv1.weight") { $0[5] = .nan }
        try assertRunFails(model: model, status: 65, file: model,
                           mentions: ["tensor 'latent.0.conv1.weight' holds NaN or Inf values"], oneLine: false)
    }

    func testNonexistentModel() throws {
        let model = dir.file("nope.safetensors")
        try assertRunFails(model: model, status: 74, file: model, mentions: ["cannot open", "No such file or directory"])
    }

    func testNonexistentInput() throws {
        let input = dir.file("nope_input.safetensors")
        try assertRunFails(model: tiny, input: input, status: 74, file: input, mentions: ["cannot open"])
    }

    func testOutputIntoNonexistentDirectory() throws {
        let output = "\(outDir!)/missing/out.safetensors"
        try assertRunFails(model: tiny, output: output, status: 74, file: output, mentions: ["cannot create temporary file"])
    }

    func testOutputExistsWithoutForce() throws {
        let output = "\(outDir!)/out.safetensors"
        let old = Data("do not touch".utf8)
        XCTAssertTrue(FileManager.default.createFile(atPath: output, contents: old))
        try assertRunFails(model: tiny, output: output, status: 64, file: output,
                           mentions: ["already exists; pass --force to overwrite"], leaves: ["out.safetensors"])
        XCTAssertEqual(readBytes(output), old)
    }

    func testZeroThreadsIsAUsageError() throws {
        let r = try dicoConvert(runArgs(model: tiny, input: refA, output: "\(outDir!)/out.safetensors", ["--threads", "0"]))
        XCTAssertEqual(r.status, 64)
        // ArgumentParser's own validation error: "Error: ..." then the usage lines.
        XCTAssertEqual(r.stderrLines.first, "Error: --threads must be at least 1", r.stderr)
        XCTAssertEqual(entries(outDir), [])
    }

    func testMissingOutputOptionIsAUsageError() throws {
        let r = try dicoConvert(["run", tiny, "--input", refA])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.stderr.contains("--output"), r.stderr)
    }
}
