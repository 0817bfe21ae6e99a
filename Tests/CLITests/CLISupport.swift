import DicoTestSupport
import DicoCore
import DicoSafetensors
import Foundation
import XCTest

/// The package root, from this file's location (Tests/CLITests/CLISupport.swift).
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// The repository's Fixtures/ folder.
let fixtures = packageRoot.appendingPathComponent("Fixtures").path

func fixture(_ name: String) -> String { "\(fixtures)/\(name)" }

/// The built `dico-convert` executable: in the products directory that holds the test
/// bundle (on Linux the `.xctest` is itself a file in that directory), else
/// `.build/debug/dico-convert` under the package root.
let dicoConvertPath: String = {
    var candidates: [URL] = []
    if let bundle = Bundle.allBundles.first(where: { $0.bundlePath.hasSuffix(".xctest") }) {
        candidates.append(bundle.bundleURL.deletingLastPathComponent())
    }
    candidates.append(Bundle.main.bundleURL)
    candidates.append(Bundle.main.bundleURL.deletingLastPathComponent())
    candidates.append(packageRoot.appendingPathComponent(".build/debug"))
    for dir in candidates {
        let p = dir.appendingPathComponent("dico-convert").path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return packageRoot.appendingPathComponent(".build/debug/dico-convert").path
}()

/// What one run of the tool did.
struct ProcessResult {
    let status: Int32
    let stdout: String
    let stderr: String
    let stdoutData: Data

    /// stderr without its final newline, split into lines.
    var stderrLines: [String] {
        var s = stderr
        if s.hasSuffix("\n") { s.removeLast() }
        return s.isEmpty ? [] : s.components(separatedBy: "\n")
    }
}

/// Runs `dico-convert args...` in `directory` and waits for it, capturing both streams.
func dicoConvert(_ args: [String], in directory: String? = nil) throws -> ProcessResult {
    try dicoConvertConcurrently([args], in: directory)[0]
}

/// Starts one process per argument list, all at once, and waits for every one.
func dicoConvertConcurrently(_ argLists: [[String]], in directory: String? = nil) throws -> [ProcessResult] {
    final class Box: @unchecked Sendable { var out = Data(), err = Data() }
    var running: [(Process, Box, DispatchGroup)] = []
    for args in argLists {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: dicoConvertPath)
        p.arguments = args
        if let directory { p.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Drain both pipes while the process runs, so a large --ir dump cannot block it.
        let box = Box(), group = DispatchGroup()
        DispatchQueue.global().async(group: group) { box.out = outPipe.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { box.err = errPipe.fileHandleForReading.readDataToEndOfFile() }
        running.append((p, box, group))
    }
    return running.map { p, box, group in
        p.waitUntilExit()
        group.wait()
        return ProcessResult(status: p.terminationStatus, stdout: String(decoding: box.out, as: UTF8.self),
                             stderr: String(decoding: box.err, as: UTF8.self), stdoutData: box.out)
    }
}

/// Directory entries, hidden ones included, sorted.
func entries(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
}

func readBytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

/// An owned tensor of float64 values.
func f64Tensor(shape: [Int], _ values: [Double]) -> TensorData {
    precondition(shape.reduce(1, *) == values.count)
    let owned = OwnedBytes(count: values.count * 8)
    values.withUnsafeBytes { owned.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    return TensorData(dtype: .f64, shape: shape, storage: .owned(owned), byteCount: values.count * 8)
}

/// An owned copy of a tensor's bytes, optionally edited as float32 values.
func f32Copy(_ t: TensorData, edit: (inout [Float]) -> Void = { _ in }) -> TensorData {
    var v = t.floats()
    edit(&v)
    return TensorData(shape: t.shape, floats: v)
}

/// A test case with a fresh temporary directory and an empty `out` subdirectory where the
/// command under test writes, so a test can check it holds exactly the expected files (no
/// output and no `.name.tmp-*` temporary after a failure).
class CLITestCase: XCTestCase {
    var dir: TempDir!
    var outDir: String!

    override func setUpWithError() throws {
        dir = try TempDir()
        outDir = try dir.subdirectory("out")
    }

    override func tearDown() { dir.remove() }

    let tiny = fixture("tiny.safetensors")
    let refA = fixture("tiny_ref_a.safetensors")
    let refB = fixture("tiny_ref_b.safetensors")
}
