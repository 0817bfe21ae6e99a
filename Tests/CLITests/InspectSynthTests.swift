import DicoTestSupport
import DicoCore
import DicoSafetensors
import Foundation
import XCTest

final class InspectTests: XCTestCase {
    func testInspectText() throws {
        let r = try dicoConvert(["inspect", fixture("tiny.safetensors")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        let lines = r.stdout.components(separatedBy: "\n")
        XCTAssertTrue(lines.contains("model:       custom"), r.stdout)
        XCTAssertTrue(lines.contains("parameters:  677,576"), r.stdout)
        XCTAssertTrue(lines.contains("tensors:     141"), r.stdout)
        XCTAssertTrue(lines.contains("config:      C=24, depths [2, 1, 2, 1, 2], mlp ratio 2, in 4, out 8, 10 classes + null, frequency size 256"), r.stdout)
        XCTAssertTrue(lines.contains { $0.hasPrefix("nodes:       ") && $0.contains("conv2d 56") }, r.stdout)
    }

    func testInspectJSON() throws {
        let r = try dicoConvert(["inspect", "--json", fixture("tiny.safetensors")])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any], r.stdout)
        XCTAssertEqual(obj["preset"] as? String, "custom")
        XCTAssertEqual(obj["parameters"] as? Int, 677_576)
        XCTAssertEqual(obj["tensors"] as? Int, 141)
        XCTAssertEqual(obj["format"] as? String, "safetensors")
        let nodes = try XCTUnwrap(obj["nodes"] as? Int)
        XCTAssertGreaterThan(nodes, 0)
        let ops = try XCTUnwrap(obj["ops"] as? [String: Int])
        XCTAssertEqual(ops["conv2d"], 56)
        XCTAssertEqual(ops.values.reduce(0, +), nodes, "op counts add up to the node count")
        let config = try XCTUnwrap(obj["config"] as? [String: Any])
        XCTAssertEqual(config["hidden_size"] as? Int, 24)
        XCTAssertEqual(config["depths"] as? [Int], [2, 1, 2, 1, 2])
        XCTAssertEqual(config["num_classes"] as? Int, 10)
        XCTAssertEqual(obj["bytes_by_dtype"] as? [String: Int], ["F32": 677_576 * 4])
    }

    func testInspectIR() throws {
        let r = try dicoConvert(["inspect", "--ir", fixture("tiny.safetensors")])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.hasPrefix("graph {\n"), String(r.stdout.prefix(200)))
        XCTAssertTrue(r.stdout.hasSuffix("}\n"))
        XCTAssertTrue(r.stdout.contains(" = conv2d("))
        XCTAssertTrue(r.stdout.contains("\"x_embedder.proj.weight\": f32[24,4,3,3]"))
        XCTAssertTrue(r.stdout.contains("  input %0 \"x\": f32[N,4,H,W]\n"))
    }

    func testInspectOfANonDiCoFileFails() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let path = dir.file("other.safetensors")
        try SafetensorsWriter.write([(name: "foo", data: TensorData(shape: [2], floats: [1, 2]))], metadata: nil, to: path, overwrite: false)
        let r = try dicoConvert(["inspect", path])
        XCTAssertEqual(r.status, 65)
        XCTAssertEqual(r.stderrLines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.hasPrefix("dico-convert: error: \(path): not a DiCo state dict"), r.stderr)
        XCTAssertEqual(r.stdout, "")
    }
}

final class SynthTests: XCTestCase {
    var dir: TempDir!
    override func setUpWithError() throws { dir = try TempDir() }
    override func tearDown() { dir.remove() }

    // DiCo-S is 132 MB and takes about a second to write in a debug build. To keep every
    // test near a second, one seed-7 DiCo-S is written once for the class (in its own temp
    // dir, removed after the last test) and each test below writes at most one more.
    static var shared: TempDir?
    static var sharedS: String { shared!.file("s7.safetensors") }
    static var sharedResult: ProcessResult?

    override class func setUp() {
        super.setUp()
        shared = try? TempDir()
        if let shared { sharedResult = try? dicoConvert(["synth", "--preset", "S", "--seed", "7", shared.file("s7.safetensors")]) }
    }

    override class func tearDown() {
        shared?.remove()
        shared = nil
        super.tearDown()
    }

    /// The class's seed-7 DiCo-S bytes, failing the test if writing it failed.
    func sharedBytes() throws -> Data {
        let r = try XCTUnwrap(SynthTests.sharedResult, "could not run synth for the shared DiCo-S")
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        XCTAssertEqual(entries(SynthTests.shared!.path), ["s7.safetensors"], "no temporary left behind")
        return try XCTUnwrap(readBytes(SynthTests.sharedS))
    }

    func testSynthSmallPresetIsRecognized() throws {
        let bytes = try sharedBytes()
        XCTAssertGreaterThan(bytes.count, 33_137_672 * 4)
        let r = try dicoConvert(["inspect", "--json", SynthTests.sharedS])
        XCTAssertEqual(r.status, 0, r.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: r.stdoutData) as? [String: Any], r.stdout)
        XCTAssertEqual(obj["preset"] as? String, "DiCo-S")
        XCTAssertEqual(obj["parameters"] as? Int, 33_137_672)
        XCTAssertEqual(obj["bytes_by_dtype"] as? [String: Int], ["F32": 33_137_672 * 4])
    }

    /// Same seed, same bytes, also when the write replaces an existing file with --force.
    func testSameSeedGivesIdenticalBytesAndForceReplaces() throws {
        let reference = try sharedBytes()
        let path = dir.file("again.safetensors")
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data("old contents".utf8)))
        let r = try dicoConvert(["synth", "--preset", "dico-s", "--seed", "7", path, "--force"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(entries(dir.path), ["again.safetensors"])
        XCTAssertTrue(readBytes(path) == reference, "seed 7 twice gives different bytes")
    }

    func testDifferentSeedGivesDifferentBytes() throws {
        let reference = try sharedBytes()
        let path = dir.file("s8.safetensors")
        let r = try dicoConvert(["synth", "--preset", "S", "--seed", "8", path])
        XCTAssertEqual(r.status, 0, r.stderr)
        let other = try XCTUnwrap(readBytes(path))
        XCTAssertEqual(other.count, reference.count, "the layout does not depend on the seed")
        XCTAssertFalse(other == reference, "seeds 7 and 8 give the same weights")
        // The header differs only in the recorded seed; the weights differ from the start.
        XCTAssertFalse(other.suffix(1 << 20) == reference.suffix(1 << 20), "the last MiB of weights is the same")
    }

    func testSynthRefusesToOverwriteWithoutForce() throws {
        let path = dir.file("existing.safetensors")
        let old = Data("precious".utf8)
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: old))
        let r = try dicoConvert(["synth", "--preset", "S", path])
        XCTAssertEqual(r.status, 64)
        XCTAssertEqual(r.stderrLines, ["dico-convert: error: \(path): already exists; pass --force to overwrite"])
        XCTAssertEqual(readBytes(path), old, "the existing file is untouched")
        XCTAssertEqual(entries(dir.path), ["existing.safetensors"], "no temporary left behind")
    }

    func testUnknownPresetIsAUsageError() throws {
        let path = dir.file("q.safetensors")
        let r = try dicoConvert(["synth", "--preset", "Q", path])
        XCTAssertEqual(r.status, 64)
        XCTAssertEqual(r.stderrLines, ["dico-convert: error: unknown preset 'Q'; expected one of S, B, L, XL, H"])
        XCTAssertEqual(entries(dir.path), [])
    }

    func testMissingPresetIsAUsageError() throws {
        let r = try dicoConvert(["synth", dir.file("q.safetensors")])
        XCTAssertEqual(r.status, 64)
        XCTAssertTrue(r.stderr.contains("--preset"), r.stderr)
        XCTAssertEqual(entries(dir.path), [])
    }
}

final class HelpTests: XCTestCase {
    func testTheToolIsBuilt() {
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: dicoConvertPath), "no dico-convert at \(dicoConvertPath)")
    }

    func testHelpMentionsExitStatuses() throws {
        let r = try dicoConvert(["--help"])
        XCTAssertEqual(r.status, 0, r.stderr)
        // Help text is wrapped to the terminal width: compare with whitespace collapsed.
        let text = r.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        XCTAssertTrue(text.contains("Exit status:"), r.stdout)
        for s in ["0 success", "64 usage error", "65 invalid input", "74 I/O failure", "70 internal error"] {
            XCTAssertTrue(text.contains(s), "--help lacks '\(s)'")
        }
        for sub in ["inspect", "run", "synth"] { XCTAssertTrue(r.stdout.contains(sub), sub) }
    }

    func testUnknownSubcommandIsAUsageError() throws {
        let r = try dicoConvert(["frobnicate"])
        XCTAssertEqual(r.status, 64)
        XCTAssertFalse(r.stderr.isEmpty)
    }
}
