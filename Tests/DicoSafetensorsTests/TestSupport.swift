import DicoCore
import Foundation
import XCTest

/// A fresh directory under the system temporary directory, removed by `remove()`.
struct TempDir {
    let path: String

    init() throws {
        let base = NSTemporaryDirectory() + "dico-st-tests-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        path = base
    }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func read(_ name: String) -> [UInt8]? {
        FileManager.default.contents(atPath: file(name)).map { [UInt8]($0) }
    }

    /// Names in the directory (hidden ones included: temporaries start with a dot).
    func contents() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// A safetensors file: 8-byte little-endian length, the header bytes verbatim, then the data.
func safetensorsBytes(headerBytes: [UInt8], data: [UInt8] = []) -> [UInt8] {
    var out: [UInt8] = []
    var n = UInt64(headerBytes.count)
    for _ in 0..<8 { out.append(UInt8(n & 0xFF)); n >>= 8 }
    return out + headerBytes + data
}

/// A safetensors file with `header` as its JSON text and `dataCount` data bytes (0, 1, 2, ...).
func safetensorsBytes(header: String, dataCount: Int = 0) -> [UInt8] {
    safetensorsBytes(headerBytes: Array(header.utf8), data: (0..<dataCount).map { UInt8(truncatingIfNeeded: $0) })
}

extension XCTestCase {
    /// Asserts that `body` throws a `DicoError` of `kind` whose message contains every string
    /// in `contains`; returns the error.
    @discardableResult
    func assertDicoError(_ kind: DicoError.Kind, contains: [String], file: StaticString = #filePath, line: UInt = #line,
                         _ body: () throws -> Void) -> DicoError? {
        do {
            try body()
            XCTFail("expected a DicoError(\(kind)) containing \(contains), but nothing was thrown", file: file, line: line)
            return nil
        } catch let e as DicoError {
            XCTAssertEqual(e.kind, kind, "message: \(e.message)", file: file, line: line)
            for s in contains {
                XCTAssertTrue(e.message.contains(s), "message \"\(e.message)\" lacks \"\(s)\"", file: file, line: line)
            }
            return e
        } catch {
            XCTFail("expected a DicoError, got \(error)", file: file, line: line)
            return nil
        }
    }
}
