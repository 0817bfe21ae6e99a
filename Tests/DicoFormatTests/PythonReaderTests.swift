import DicoConversion
import DicoCore
import DicoFormat
import DicoQuant
import Foundation
import XCTest

/// The Python reference reader (Formats/dico_reader.py, written from Formats/DICO.md alone)
/// against the Swift writer and reader: for every precision it must accept what
/// `Converter.convert` writes and find, tensor by tensor, the same names, dtypes, shapes and
/// values as `DicoFile`; and it must refuse a corrupted tensor (naming it) and a file of a
/// newer major version.
///
/// python3 with numpy is required (CI installs both): without them these tests fail, they do
/// not skip. `DICO_PYTHON` may name another interpreter.
final class PythonReaderTests: XCTestCase {
    /// The package root, from this file's location (Tests/DicoFormatTests/PythonReaderTests.swift).
    private static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    private static let readerScript = root.appendingPathComponent("Formats/dico_reader.py").path
    private static let tinyModel = root.appendingPathComponent("Fixtures/tiny.safetensors").path

    private var tmp: URL!

    override func setUpWithError() throws {
        tmp = FileManager.default.temporaryDirectory.appendingPathComponent("PythonReaderTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        if let tmp { try? FileManager.default.removeItem(at: tmp) }
    }

    // MARK: - Agreement, one test per precision

    func testFP32AgreesWithSwiftReader() throws { try checkAgreement(.fp32) }
    func testFP16AgreesWithSwiftReader() throws { try checkAgreement(.fp16) }
    func testBF16AgreesWithSwiftReader() throws { try checkAgreement(.bf16) }
    func testINT8AgreesWithSwiftReader() throws { try checkAgreement(.int8) }

    /// Converts tiny at `precision`, dumps the Python reader's per-tensor statistics and
    /// compares them with the Swift reader's view of the same file.
    ///
    /// Tolerance: both sides sum the same float32 values in float64 (each float32 value, and
    /// the square of one, is exact in float64: 24-bit significands, squares within 48 bits),
    /// so only the summation order differs: numpy sums pairwise, this loop sequentially.
    /// Each order's rounding error is at most (n - 1) * 2^-53 * sum|x_i|, so the two differ by
    /// at most 3.7e-11 * sum|x_i| for the largest tiny tensor (165,888 elements; 6.5e-14 is
    /// observed). 1e-9 * sum|x_i| is 27 times that bound, and far below what one differing
    /// element changes (~1/n of sum|x_i|). It is relative to the sum of magnitudes, not to the
    /// sum itself, because a sum can cancel to near zero; for the sum of squares the two are
    /// the same. The first values are single float32 values that Python prints as float64
    /// shortest round-trip literals, so they must be exactly equal.
    private func checkAgreement(_ precision: Precision, file: StaticString = #filePath, line: UInt = #line) throws {
        // The default pipeline writes the 1.1 fusions (channel_attention, conv2d_gated_add).
        let dtypesSeen = try checkAgreement(try convertTiny(precision), precision.rawValue, version: "1.1", file: file, line: line)
        // The conversion really stored what the precision says (so the comparison covered it).
        let expected: Set<String> = switch precision {
        case .fp32: ["f32"]
        case .fp16: ["f16"]
        case .bf16: ["bf16"]
        case .int8: ["i8", "f32"]
        }
        XCTAssertEqual(dtypesSeen, expected, "storage dtypes of the \(precision.rawValue) file", file: file, line: line)
    }

    /// A generic ONNX graph (Fixtures/convnet.onnx, int8): the Python reader accepts the 1.1
    /// file, agrees tensor by tensor as above, and its `onnx_initializers()` gives every
    /// initializer under its ONNX name in its ONNX dtype, the int8 ones dequantized to the
    /// values Swift's reader gives (exactly: both compute q * scale in float32, one product).
    func testGenericONNXGraphAgreesWithSwiftReader() throws {
        let dico = tmp.appendingPathComponent("convnet-int8.dico").path
        _ = try Converter.convert(input: Self.root.appendingPathComponent("Fixtures/convnet.onnx").path, output: dico,
                                  options: ConversionOptions(precision: .int8, threads: 2, overwrite: false, toolVersion: "test"))
        let seen = try checkAgreement(dico, "generic int8", version: "1.1")
        XCTAssertEqual(seen, ["i8", "f32"])
        let code = """
        import sys, json; sys.path.insert(0, sys.argv[1]); import dico_reader
        m = dico_reader.read(sys.argv[2])
        print(json.dumps({n: [str(a.dtype), list(a.shape), [float(v) for v in a.reshape(-1)[:3]]] for n, a in m.onnx_initializers().items()}))
        """
        if let problem = Self.pythonProblem { throw TestError(problem) }
        let r = try Self.launch(["-c", code, Self.root.appendingPathComponent("Formats").path, dico])
        XCTAssertEqual(r.status, 0, r.stderr)
        let got = try XCTUnwrap(try StrictJSON.parse(r.stdout).objectMembers)
        let model = try XCTUnwrap(try DicoFile(path: dico).onnxModel)
        XCTAssertEqual(got.map(\.key), model.graph.initializers.map(\.name))
        for (i, (name, v)) in zip(model.graph.initializers, got) {
            let t = i.tensor
            let want: JSONValue = .array([.string("float32"), .array(t.shape.map { .integer($0) }),
                                          .array(t.floats().prefix(3).map { .number("\(Double($0))") })])
            XCTAssertEqual(describe(v), describe(want), name)
        }
    }

    /// A JSON value with numbers normalized (Python and Swift spell some doubles differently).
    private func describe(_ v: JSONValue) -> String {
        switch v {
        case let .number(n): return "\(Double(n) ?? .nan)"
        case let .array(a): return "[" + a.map(describe).joined(separator: ",") + "]"
        default: return v.serialized()
        }
    }

    /// Converts nothing: runs the reader with `--dump-stats` on `dico` and compares every tensor
    /// with the Swift reader's view. Returns the storage dtypes seen.
    private func checkAgreement(_ dico: String, _ what: String, version: String,
                                file: StaticString = #filePath, line: UInt = #line) throws -> Set<String> {
        let statsPath = tmp.appendingPathComponent("stats-\(what.filter(\.isLetter)).json").path
        let r = try runReader([dico, "--summary", "--dump-stats", statsPath])
        XCTAssertEqual(r.status, 0, "dico_reader failed on the \(what) file:\n\(r.stderr)", file: file, line: line)
        guard r.status == 0 else { return [] }
        XCTAssertEqual(r.stderr, "", file: file, line: line)

        let swift = try DicoFile(path: dico)
        XCTAssert(r.stdout.contains("tensors: \(swift.tensors.count)"), "summary: \(r.stdout)", file: file, line: line)
        XCTAssert(r.stdout.contains("format: .dico \(version)"), "summary: \(r.stdout)", file: file, line: line)

        let stats = try loadStats(statsPath)
        XCTAssertEqual(Set(stats.keys), Set(swift.tensors.map(\.name)), "tensor names differ", file: file, line: line)
        var dtypesSeen = Set<String>()
        for e in swift.tensors {
            guard let py = stats[e.name] else { continue }
            let what = "\(what) tensor '\(e.name)'"
            dtypesSeen.insert(e.dtype.rawValue)
            XCTAssertEqual(py.dtype, e.dtype.rawValue, "\(what): dtype", file: file, line: line)
            XCTAssertEqual(py.shape, e.shape, "\(what): shape", file: file, line: line)
            let t = try XCTUnwrap(swift.tensor(e.name), what, file: file, line: line)
            let values = t.floats()
            var sum = 0.0, sumsq = 0.0, sumAbs = 0.0
            for v in values {
                let d = Double(v)
                sum += d
                sumsq += d * d
                sumAbs += abs(d)
            }
            XCTAssertLessThanOrEqual(abs(py.sum - sum), 1e-9 * sumAbs, "\(what): sum \(py.sum) (Python) vs \(sum) (Swift)", file: file, line: line)
            XCTAssertLessThanOrEqual(abs(py.sumsq - sumsq), 1e-9 * sumsq, "\(what): sum of squares \(py.sumsq) (Python) vs \(sumsq) (Swift)", file: file, line: line)
            XCTAssertEqual(py.first, values.prefix(4).map(Double.init), "\(what): first values", file: file, line: line)
        }
        return dtypesSeen
    }

    // MARK: - Refusals

    /// One flipped bit inside a tensor: Python exits 65 and names that tensor (as does Swift).
    func testCorruptTensorIsRefusedNamingIt() throws {
        let dico = try convertTiny(.int8)
        let swift = try DicoFile(path: dico)
        // The largest tensor, so the byte is well inside it.
        let victim = try XCTUnwrap(swift.tensors.max { $0.length < $1.length })
        var bytes = try Data(contentsOf: URL(fileURLWithPath: dico))
        let at = swift.dataOffset + victim.offset + victim.length / 2
        bytes[at] ^= 0x10
        let bad = tmp.appendingPathComponent("corrupt.dico").path
        try bytes.write(to: URL(fileURLWithPath: bad))

        let r = try runReader([bad, "--summary"])
        XCTAssertEqual(r.status, 65, "stderr: \(r.stderr)")
        XCTAssert(r.stderr.hasPrefix("dico_reader: error: "), r.stderr)
        XCTAssert(r.stderr.contains(bad), "the message names the file: \(r.stderr)")
        XCTAssert(r.stderr.contains("'\(victim.name)'"), "the message names tensor '\(victim.name)': \(r.stderr)")
        XCTAssert(r.stderr.lowercased().contains("crc"), r.stderr)
        XCTAssertEqual(r.stdout, "", "nothing is printed for a refused file")

        XCTAssertThrowsError(try DicoFile(path: bad)) { error in
            XCTAssert("\(error)".contains("'\(victim.name)'"), "Swift names the tensor too: \(error)")
        }
    }

    /// A node whose op the reader does not know (renamed to one of the same length, so the
    /// header keeps its size): Python exits 65 naming the node and the op.
    func testUnknownOpIsRefusedNamingIt() throws {
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: try convertTiny(.fp32))))
        try FormatSupport.editHeader(&bytes) { root in
            let graph = try XCTUnwrap(FormatSupport.member(root, "graph"))
            var nodes = try XCTUnwrap(FormatSupport.member(graph, "nodes")?.arrayValue)
            let i = try XCTUnwrap(nodes.firstIndex { FormatSupport.member($0, "op")?.stringValue == "channel_attention" })
            nodes[i] = FormatSupport.replacing(nodes[i], "op", with: .string("channel_attentiox"))
            return FormatSupport.replacing(root, "graph", with: FormatSupport.replacing(graph, "nodes", with: .array(nodes)))
        }
        let bad = tmp.appendingPathComponent("unknown-op.dico").path
        try Data(bytes).write(to: URL(fileURLWithPath: bad))
        let r = try runReader([bad])
        XCTAssertEqual(r.status, 65, "stderr: \(r.stderr)")
        XCTAssert(r.stderr.contains("unknown op \"channel_attentiox\""), r.stderr)
        XCTAssert(r.stderr.contains("node '"), "the message names the node: \(r.stderr)")
    }

    /// A file declaring major version 2 (prefix CRC recomputed, so only the version is
    /// wrong) is refused by Python with a message naming version 2 and the version it reads.
    func testNewerMajorVersionIsRefused() throws {
        let dico = try convertTiny(.fp16)
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dico)))
        bytes[8] = 2
        bytes[9] = 0
        let crc = bytes.withUnsafeBytes { CRC32.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<60])) }
        for i in 0..<4 { bytes[60 + i] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(i))) }
        let v2 = tmp.appendingPathComponent("v2.dico").path
        try Data(bytes).write(to: URL(fileURLWithPath: v2))

        let r = try runReader([v2])
        XCTAssertEqual(r.status, 65, "stderr: \(r.stderr)")
        XCTAssert(r.stderr.hasPrefix("dico_reader: error: "), r.stderr)
        XCTAssert(r.stderr.contains("version 2"), "the message names version 2: \(r.stderr)")
        XCTAssert(r.stderr.contains("1.x") || r.stderr.contains("version 1"), "the message names the version read: \(r.stderr)")
        XCTAssertFalse(r.stderr.lowercased().contains("crc"), "refused for its version, not as corrupt: \(r.stderr)")
        XCTAssertThrowsError(try DicoFile(path: v2)) { error in
            XCTAssert("\(error)".contains("version 2"), "\(error)")
        }
    }

    // MARK: - Helpers

    private func convertTiny(_ precision: Precision) throws -> String {
        let out = tmp.appendingPathComponent("tiny-\(precision.rawValue).dico").path
        _ = try Converter.convert(input: Self.tinyModel, output: out,
                                  options: ConversionOptions(precision: precision, keep: [], threads: 2, overwrite: true, toolVersion: "test"))
        return out
    }

    private struct Stats {
        let dtype: String
        let shape: [Int]
        let sum: Double, sumsq: Double
        let first: [Double]
    }

    private struct TestError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// Parses the `--dump-stats` output with the strict parser (number literals kept as text,
    /// read back with Swift's correctly rounded Double(String)).
    private func loadStats(_ path: String) throws -> [String: Stats] {
        let text = try String(contentsOfFile: path, encoding: .utf8)
        guard let members = try StrictJSON.parse(text).objectMembers else { throw TestError("\(path): not a JSON object") }
        func number(_ v: JSONValue?, _ what: String) throws -> Double {
            guard case let .number(lit)? = v, let d = Double(lit) else { throw TestError("\(path): \(what) is not a number") }
            return d
        }
        var out: [String: Stats] = [:]
        for (name, v) in members {
            guard out[name] == nil else { throw TestError("\(path): tensor '\(name)' listed twice") }
            guard let o = v.objectMembers else { throw TestError("\(path): '\(name)' is not an object") }
            let m = Dictionary(o.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            guard let dtype = m["dtype"]?.stringValue, let dims = m["shape"]?.arrayValue, let first = m["first"]?.arrayValue else {
                throw TestError("\(path): '\(name)' lacks dtype, shape or first")
            }
            let shape = dims.compactMap(\.exactNonNegativeInt)
            guard shape.count == dims.count else { throw TestError("\(path): '\(name)' has a bad shape") }
            out[name] = Stats(dtype: dtype, shape: shape, sum: try number(m["sum"], "\(name).sum"),
                              sumsq: try number(m["sumsq"], "\(name).sumsq"),
                              first: try first.map { try number($0, "\(name).first") })
        }
        return out
    }

    private struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// Checked once per process: python3 runs and imports numpy.
    private static let pythonProblem: String? = {
        do {
            let r = try launch(["-c", "import sys, numpy; sys.exit(0 if sys.version_info >= (3, 8) else 3)"])
            if r.status == 0 { return nil }
            return "'\(python)' with numpy is required by PythonReaderTests (status \(r.status)): \(r.stderr.split(separator: "\n").last.map(String.init) ?? "no output"). Install python3 >= 3.8 and numpy (e.g. apt-get install python3-numpy, or pip install numpy) or set DICO_PYTHON."
        } catch {
            return "cannot run '\(python)' (required by PythonReaderTests; install python3 and numpy, or set DICO_PYTHON): \(error)"
        }
    }()

    private static let python = ProcessInfo.processInfo.environment["DICO_PYTHON"] ?? "python3"

    /// Runs `python3 Formats/dico_reader.py args...`; throws (so the test fails, not skips)
    /// when Python or numpy is missing.
    private func runReader(_ args: [String]) throws -> Run {
        if let problem = Self.pythonProblem { throw TestError(problem) }
        return try Self.launch([Self.readerScript] + args)
    }

    private static func launch(_ args: [String]) throws -> Run {
        let p = Process()
        if python.contains("/") {
            p.executableURL = URL(fileURLWithPath: python)
            p.arguments = args
        } else {
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [python] + args
        }
        var env = ProcessInfo.processInfo.environment
        env["PYTHONDONTWRITEBYTECODE"] = "1"   // no __pycache__ beside the script
        p.environment = env
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Drain both pipes while it runs so a full pipe cannot block it.
        final class Box: @unchecked Sendable { var data = Data() }
        let out = Box(), err = Box(), group = DispatchGroup()
        DispatchQueue.global().async(group: group) { out.data = outPipe.fileHandleForReading.readDataToEndOfFile() }
        DispatchQueue.global().async(group: group) { err.data = errPipe.fileHandleForReading.readDataToEndOfFile() }
        p.waitUntilExit()
        group.wait()
        return Run(status: p.terminationStatus, stdout: String(decoding: out.data, as: UTF8.self),
                   stderr: String(decoding: err.data, as: UTF8.self))
    }
}
