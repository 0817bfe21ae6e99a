// What every test target needs and would otherwise write again: the fixtures folder, a
// temporary directory, the DicoError assertion and the relative-L2 measure the tolerances are
// stated in. A library target (not a test target) so that test targets can depend on it.

import DicoCore
import Foundation
import XCTest

/// The repository's Fixtures/ folder.
public let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures").path

/// A fresh directory under the system temporary directory, removed by `remove()` (or when the
/// last reference goes, with `removeOnDeinit`).
public final class TempDir {
    public let path: String
    private let removeOnDeinit: Bool

    /// - Parameter prefix: the start of the directory's name (names the test target in leftovers).
    public init(prefix: String = "dico-tests", removeOnDeinit: Bool = false) throws {
        let base = NSTemporaryDirectory() + prefix + "-" + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: false)
        path = base
        self.removeOnDeinit = removeOnDeinit
    }

    deinit { if removeOnDeinit { remove() } }

    public func file(_ name: String) -> String { path + "/" + name }

    /// Creates and returns the subdirectory `name`.
    public func subdirectory(_ name: String) throws -> String {
        try FileManager.default.createDirectory(atPath: file(name), withIntermediateDirectories: false)
        return file(name)
    }

    @discardableResult
    public func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let p = file(name)
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    public func read(_ name: String) -> [UInt8]? {
        FileManager.default.contents(atPath: file(name)).map { [UInt8]($0) }
    }

    /// Names in the directory, sorted (hidden ones included: temporaries start with a dot).
    public func contents() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

extension XCTestCase {
    /// Asserts that `body` throws a `DicoError` of `kind` whose message contains every string
    /// in `contains`; returns the error.
    @discardableResult
    public func assertDicoError(_ kind: DicoError.Kind, contains: [String], file: StaticString = #filePath, line: UInt = #line,
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

/// ||a - b|| / ||b||, summed in Double; ||a - b|| itself when b is all zeros (a zero reference
/// has no scale to be relative to). The arrays must have the same length.
public func relativeL2<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(_ a: [A], _ b: [B]) -> Double {
    precondition(a.count == b.count, "relativeL2 of arrays of \(a.count) and \(b.count) elements")
    var num = 0.0, den = 0.0
    for i in a.indices {
        let d = Double(a[i]) - Double(b[i])
        num += d * d
        den += Double(b[i]) * Double(b[i])
    }
    return den == 0 ? num.squareRoot() : (num / den).squareRoot()
}
