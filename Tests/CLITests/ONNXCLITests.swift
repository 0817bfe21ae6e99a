import DicoTestSupport
import DicoCore
import DicoSafetensors
import Foundation
import XCTest

/// `dico-convert model.onnx out.dico --int8` as a user runs it: real process, real files.
final class ONNXCLITests: CLITestCase {
    /// The dynamo export (weights in `tiny_dynamo.onnx.data`) converts, and the `.dico` runs
    /// on the 16x16, batch-4 reference input (the export fixed 8x8) within the int8 bound of the
    /// safetensors path: 2.5e-2 relative L2 against PyTorch (Fixtures/README.md: int8 measures
    /// 1.19e-2 on this model).
    func testConvertOnnxToInt8AndRun() throws {
        let out = "\(outDir!)/tiny.dico"
        let r = try dicoConvert([fixture("tiny_dynamo.onnx"), out, "--int8", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(entries(outDir), ["tiny.dico"])
        let inspect = try dicoConvert(["inspect", out, "--json"])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertTrue(inspect.stdout.contains("\"format\":\"onnx\""), inspect.stdout)
        let result = "\(dir.path)/out.safetensors"
        let run = try dicoConvert(["run", out, "--input", refA, "--output", result])
        XCTAssertEqual(run.status, 0, run.stderr)
        let got = try SafetensorsFile(path: result).tensor("out")!.floats()
        let want = try SafetensorsFile(path: refA).tensor("out")!.floats()
        XCTAssertLessThan(relativeL2(got, want), 2.5e-2)
    }

    /// `inspect` recognizes an export by its weights and says the equality is not proven;
    /// `inspect --prove` runs the proof that conversion runs and prints its measured difference.
    func testInspectProvesOnlyWhenAsked() throws {
        let quick = try dicoConvert(["inspect", fixture("tiny_opset17.onnx")])
        XCTAssertEqual(quick.status, 0, quick.stderr)
        XCTAssertTrue(quick.stdout.contains("not proven to compute the DiCo forward pass"), quick.stdout)
        let proven = try dicoConvert(["inspect", fixture("tiny_opset17.onnx"), "--prove"])
        XCTAssertEqual(proven.status, 0, proven.stderr)
        XCTAssertTrue(proven.stdout.contains("canonicalized as DiCo (probe relative L2"), proven.stdout)
        XCTAssertFalse(proven.stdout.contains("not proven"), proven.stdout)
    }

    /// A model that is not DiCo still imports and runs, as written, in the ONNX interpreter:
    /// `inspect` says what it is and why DiCo does not apply; `run` feeds the graph inputs by name
    /// and matches PyTorch within 1e-5 relative L2 (the suite's fp32 bound; the interpreter's
    /// conv and GEMM sum in another order than PyTorch's, about 1e-7 here).
    func testNonDiCoOnnxInspectsAndRuns() throws {
        let inspect = try dicoConvert(["inspect", fixture("convnet.onnx")])
        XCTAssertEqual(inspect.status, 0, inspect.stderr)
        XCTAssertTrue(inspect.stdout.contains("model:       not DiCo"), inspect.stdout)
        XCTAssertTrue(inspect.stdout.contains("Conv 2"), inspect.stdout)
        XCTAssertTrue(inspect.stdout.contains("DiCo recognition and graph passes do not apply"), inspect.stdout)
        // Every op of the graph is one the interpreter implements (convnet has no exporter
        // pattern it fuses, so the line ends there).
        XCTAssertTrue(inspect.stdout.contains("interpreter: runs it\n"), inspect.stdout)
        let json = try dicoConvert(["inspect", fixture("convnet.onnx"), "--json"])
        XCTAssertTrue(json.stdout.contains("\"interpreter\":{\"runs\":true,\"fusions\":{}}"), json.stdout)
        let result = "\(outDir!)/out.safetensors"
        let run = try dicoConvert(["run", fixture("convnet.onnx"), "--input", fixture("convnet_ref.safetensors"), "--output", result])
        XCTAssertEqual(run.status, 0, run.stderr)
        let got = try SafetensorsFile(path: result).tensor("out")!
        let want = try SafetensorsFile(path: fixture("convnet_ref.safetensors")).tensor("out")!
        XCTAssertEqual(got.shape, want.shape)
        XCTAssertLessThan(relativeL2(got.floats(), want.floats()), 1e-5)
    }

    /// An external data file that is missing: exit 74 (I/O), naming the file, nothing written.
    func testMissingExternalDataIsAnIOError() throws {
        let copy = dir.file("tiny_dynamo.onnx")
        try FileManager.default.copyItem(atPath: fixture("tiny_dynamo.onnx"), toPath: copy)
        let r = try dicoConvert([copy, "\(outDir!)/t.dico", "--int8"])
        XCTAssertEqual(r.status, 74, r.stderr)
        XCTAssertTrue(r.stderr.contains("tiny_dynamo.onnx.data"), r.stderr)
        XCTAssertEqual(entries(outDir), [])
    }
}
