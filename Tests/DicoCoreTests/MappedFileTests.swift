import DicoCore
import Foundation
import XCTest

/// `MappedFile.prefix(of:count:)`, the sniffing read the loaders use to pick a format.
final class MappedFileTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("dico-core-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    func testPrefixReadsTheFirstBytesOrFewer() throws {
        let path = dir.appendingPathComponent("f.bin").path
        let bytes: [UInt8] = (0..<100).map { UInt8($0 * 7 % 256) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        XCTAssertEqual(MappedFile.prefix(of: path, count: 9), Array(bytes[..<9]))
        // A file shorter than asked gives what it has, so a caller compares lengths.
        XCTAssertEqual(MappedFile.prefix(of: path, count: 500), bytes)
        let empty = dir.appendingPathComponent("empty").path
        XCTAssertTrue(FileManager.default.createFile(atPath: empty, contents: Data()))
        XCTAssertEqual(MappedFile.prefix(of: empty, count: 8), [])
    }

    func testPrefixOfAMissingFileOrADirectoryIsNil() {
        XCTAssertNil(MappedFile.prefix(of: dir.appendingPathComponent("missing").path, count: 8))
        XCTAssertNil(MappedFile.prefix(of: dir.path, count: 8))
    }
}
