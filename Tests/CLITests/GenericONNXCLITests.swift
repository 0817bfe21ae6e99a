import DicoTestSupport
import DicoCore
import DicoFormat
import DicoSafetensors
import Foundation
import XCTest

/// A generic (non-DiCo) ONNX graph through the tool, as a user runs it: convert, inspect, run,
/// verify's refusal, and damaged files, with real processes and files.
final class GenericONNXCLITests: CLITestCase {
    let convnet = fixture("convnet.onnx")
    let ref = fixture("convnet_generic_ref.safetensors")

    /// `convert --int8` writes only the output and prints the drift and the note; `inspect`
    /// (text and JSON) describes the file; `run` matches onnxruntime with numpy's int8 weights
    /// (Fixtures/make_generic_fixtures.py) within 1e-5 relative L2 (the same float32 weights on
    /// both sides, only the summation order differs: about 1e-7 here), bit-identically for one
    /// and two threads; `verify` refuses it (DiCo only).
    func testConvertInspectRunVerify() throws {
        let out = "\(outDir!)/c.dico"
        let c = try dicoConvert([convnet, out, "--int8"])
        XCTAssertEqual(c.status, 0, c.stderr)
        XCTAssertEqual(entries(outDir), ["c.dico"])
        XCTAssertTrue(c.stdout.contains("drift (seeded input x f32 [1, 3, 8, 8]; symbolic dimensions set to 1: x.N):"), c.stdout)
        XCTAssertTrue(c.stdout.contains("    out: relative L2 "), c.stdout)
        XCTAssertTrue(c.stdout.contains("note:     DiCo recognition and graph passes did not apply: not a DiCo state dict"), c.stdout)
        XCTAssertTrue(c.stdout.contains("weights:  4 converted, 3 kept in float32"), c.stdout)

        let text = try dicoConvert(["inspect", out])
        XCTAssertEqual(text.status, 0, text.stderr)
        for phrase in ["format:      dico", "model:       not DiCo", "tensors:     11 (F32 7, I8 4)", "initializers: 7 (F32 3, I8 4)",
                       "nodes:       8 (Conv 2, Flatten 1, Gemm 1, GlobalAveragePool 1, MatMul 1, Relu 2)",
                       "note:        not a DiCo export"] {
            XCTAssertTrue(text.stdout.contains(phrase), "'\(phrase)' not in:\n\(text.stdout)")
        }
        let json = try dicoConvert(["inspect", out, "--json"])
        XCTAssertEqual(json.status, 0, json.stderr)
        let root = try XCTUnwrap(try StrictJSON.parse(json.stdout).objectMembers)
        let members = Dictionary(root.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        XCTAssertEqual(members["format"], .string("dico"))
        XCTAssertEqual(members["tensors_by_dtype"], .object([("F32", .integer(7)), ("I8", .integer(4))]))
        XCTAssertEqual(members["initializers_by_dtype"], .object([("F32", .integer(3)), ("I8", .integer(4))]))
        XCTAssertEqual(members["ops"]?.objectMembers?.first { $0.key == "MatMul" }?.value, .integer(1))
        XCTAssertNotNil(members["provenance"])

        var results: [[Float]] = []
        for threads in ["1", "2"] {
            let result = "\(dir.path)/r\(threads).safetensors"
            let run = try dicoConvert(["run", out, "--input", ref, "--output", result, "--threads", threads])
            XCTAssertEqual(run.status, 0, run.stderr)
            results.append(try XCTUnwrap(SafetensorsFile(path: result).tensor("out")).floats())
        }
        XCTAssertEqual(results[0].map(\.bitPattern), results[1].map(\.bitPattern), "--threads does not change the result")
        XCTAssertLessThan(relativeL2(results[0], try SafetensorsFile(path: ref).tensor("out_int8")!.floats()), 1e-5)

        let verify = try dicoConvert(["verify", tiny, out, "--quick"])
        XCTAssertEqual(verify.status, 65, verify.stderr)
        XCTAssertEqual(verify.stderrLines.count, 1, verify.stderr)
        XCTAssertTrue(verify.stderr.contains("\(out): holds a generic ONNX graph"), verify.stderr)
    }

    /// int8 on a weight holding NaN, and fp16 whose drift check sees the NaN output (the original's: the NaN weight is kept through fp16): exit 65,
    /// one line naming the tensor or output, nothing written, an existing output untouched.
    func testFailuresWriteNothing() throws {
        let nan = fixture("convnet_nan_weight.onnx")
        let i = try dicoConvert([nan, "\(outDir!)/n.dico", "--int8"])
        XCTAssertEqual(i.status, 65, i.stderr)
        XCTAssertEqual(i.stderrLines.count, 1, i.stderr)
        XCTAssertTrue(i.stderr.contains("initializer 'proj' holds NaN or Inf"), i.stderr)
        XCTAssertEqual(entries(outDir), [])

        let existing = "\(outDir!)/keep.dico"
        XCTAssertTrue(FileManager.default.createFile(atPath: existing, contents: Data("old".utf8)))
        let h = try dicoConvert([nan, existing, "--fp16", "--force"])
        XCTAssertEqual(h.status, 65, h.stderr)
        XCTAssertTrue(h.stderr.contains("cannot measure the fp16 drift: output 'out' of the original graph holds NaN or Inf"), h.stderr)
        XCTAssertEqual(entries(outDir), ["keep.dico"], "no temporary left")
        XCTAssertEqual(readBytes(existing), Data("old".utf8))
    }

    /// Pass options on a graph no DiCo pass applies to are refused (exit 64, nothing written),
    /// not silently ignored; `--no-optimize` asks for nothing and is accepted.
    func testPassOptionsAreRefused() throws {
        for opts in [["--passes", "fuse-conv-activation"], ["--skip-pass", "fold-constants"], ["--dump-ir-after", "fold-constants"], ["--check-passes"]] {
            let r = try dicoConvert([fixture("convnet.onnx"), "\(outDir!)/p.dico", "--int8"] + opts)
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains("\(opts[0]) choose DiCo graph passes, and none applies to this graph"), r.stderr)
            XCTAssertEqual(entries(outDir), [], "\(opts)")
        }
        let plain = try dicoConvert([fixture("convnet.onnx"), "\(outDir!)/p.dico", "--no-optimize", "--quiet"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
    }

    /// Damaged generic files: a node reading a tensor that does not exist, a corrupted
    /// onnx_graph, a flag bit no reader knows. `run` and `inspect` exit 65 with one line naming
    /// the file and the problem; `run` writes nothing.
    func testDamagedFilesAreRefused() throws {
        let good = "\(dir.path)/good.dico"
        XCTAssertEqual(try dicoConvert([convnet, good, "--int8", "--quiet"]).status, 0)
        let bytes = [UInt8](try XCTUnwrap(readBytes(good)))
        let cases: [(String, [UInt8], String)] = [
            ("unknown-tensor", try headerReplacing(bytes, #"["/fc/Gemm_output_0","proj"]"#, #"["/fc/Gemm_output_0","proX"]"#),
             "node '/MatMul' (MatMul): input 1 'proX' is not an initializer"),
            ("corrupt-graph", try headerReplacing(bytes, #""nodes":["#, #""nodez":["#), "the onnx_graph needs"),
            ("flags", withFlags(bytes, 0x5), "unknown flags 0x5"),
        ]
        for (name, damaged, phrase) in cases {
            let path = "\(dir.path)/\(name).dico"
            XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data(damaged)))
            let run = try dicoConvert(["run", path, "--input", ref, "--output", "\(outDir!)/r.safetensors"])
            XCTAssertEqual(run.status, 65, "\(name): \(run.stderr)")
            XCTAssertEqual(run.stderrLines.count, 1, run.stderr)
            XCTAssertTrue(run.stderr.contains("\(path): ") && run.stderr.contains(phrase), "\(name): \(run.stderr)")
            XCTAssertEqual(entries(outDir), [], name)
            let inspect = try dicoConvert(["inspect", path])
            XCTAssertEqual(inspect.status, 65, "\(name): \(inspect.stderr)")
        }
    }

    /// `bytes` with `old` replaced by `new` (same length) in the JSON header, its CRC and the
    /// prefix CRC recomputed, so only the replaced text is wrong.
    func headerReplacing(_ bytes: [UInt8], _ old: String, _ new: String) throws -> [UInt8] {
        precondition(old.utf8.count == new.utf8.count)
        let length = u64(bytes, 24)
        var header = String(decoding: bytes[64..<(64 + length)], as: UTF8.self)
        XCTAssertTrue(header.contains(old), "'\(old)' is in the header")
        header = header.replacingOccurrences(of: old, with: new)
        var b = bytes
        b.replaceSubrange(64..<(64 + length), with: Array(header.utf8))
        put(&b, 56, b[64..<(64 + length)].withUnsafeBytes { CRC32.checksum($0) })
        put(&b, 60, b[0..<60].withUnsafeBytes { CRC32.checksum($0) })
        return b
    }

    func withFlags(_ bytes: [UInt8], _ flags: UInt32) -> [UInt8] {
        var b = bytes
        put(&b, 12, flags)
        put(&b, 60, b[0..<60].withUnsafeBytes { CRC32.checksum($0) })
        return b
    }

    func u64(_ b: [UInt8], _ at: Int) -> Int { Int((0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << (8 * UInt64($1)) }) }

    func put(_ b: inout [UInt8], _ at: Int, _ v: UInt32) {
        for i in 0..<4 { b[at + i] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(i))) }
    }
}
