import DicoTestSupport
import DicoCore
import XCTest

final class AtomicFileWriterTests: XCTestCase {
    var dir: TempDir!

    override func setUpWithError() throws { dir = try TempDir() }
    override func tearDown() { dir.remove() }

    func write(_ w: AtomicFileWriter, _ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try w.write($0) } }

    func testCommitWritesTargetAndRemovesTemporary() throws {
        let path = dir.file("out.bin")
        let w = try AtomicFileWriter(path: path, overwrite: false)
        XCTAssertTrue(w.temporaryPath.hasPrefix(dir.path + "/.out.bin.tmp-\(getpid())-"), w.temporaryPath)
        try write(w, [1, 2, 3])
        XCTAssertNil(dir.read("out.bin"), "target appears only at commit")
        try write(w, [4])
        try w.commit()
        XCTAssertEqual(dir.read("out.bin"), [1, 2, 3, 4])
        XCTAssertEqual(dir.contents(), ["out.bin"])
        w.abort() // no effect after commit
        XCTAssertEqual(dir.read("out.bin"), [1, 2, 3, 4])
        XCTAssertThrowsError(try write(w, [5]))
    }

    func testLargeAndSmallWritesKeepOrder() throws {
        // Chunks below and above the 4 MiB buffer, so both the buffered and the direct path run.
        func chunk(_ count: Int, _ seed: UInt8) -> Data {
            var d = Data(count: count)
            d.withUnsafeMutableBytes { (b: UnsafeMutableRawBufferPointer) in for i in stride(from: 0, to: count, by: 4096) { b[i] = seed &+ UInt8(truncatingIfNeeded: i >> 12) } }
            return d
        }
        let chunks = [chunk(10, 1), chunk(5 << 20 + 3, 2), chunk(2, 3), chunk(3 << 20, 4), chunk(2 << 20, 5), Data()]
        let w = try AtomicFileWriter(path: dir.file("big.bin"), overwrite: false)
        for c in chunks { try c.withUnsafeBytes { try w.write($0) } }
        try w.commit()
        XCTAssertTrue(FileManager.default.contents(atPath: dir.file("big.bin")) == chunks.reduce(Data(), +))
    }

    func testAbortLeavesNothing() throws {
        let w = try AtomicFileWriter(path: dir.file("a.bin"), overwrite: false)
        try write(w, [1, 2, 3])
        XCTAssertEqual(dir.contents().count, 1, "the temporary exists while writing")
        w.abort()
        w.abort()
        XCTAssertEqual(dir.contents(), [])
        XCTAssertThrowsError(try w.commit())
    }

    func testDeinitWithoutCommitLeavesNothing() throws {
        do {
            let w = try AtomicFileWriter(path: dir.file("d.bin"), overwrite: false)
            try write(w, [9])
        }
        XCTAssertEqual(dir.contents(), [])
    }

    func testExistingFileUntouchedWithoutOverwrite() throws {
        let path = try dir.write("keep.bin", [7, 7])
        assertDicoError(.usage, contains: [path + ": already exists; pass --force to overwrite"]) {
            _ = try AtomicFileWriter(path: path, overwrite: false)
        }
        XCTAssertEqual(dir.read("keep.bin"), [7, 7])
        XCTAssertEqual(dir.contents(), ["keep.bin"])
    }

    func testTargetCreatedWhileWritingIsNotOverwritten() throws {
        let path = dir.file("race.bin")
        let w = try AtomicFileWriter(path: path, overwrite: false)
        try write(w, [1])
        _ = try dir.write("race.bin", [5])
        assertDicoError(.io, contains: ["race.bin", "pass --force"]) { try w.commit() }
        XCTAssertEqual(dir.read("race.bin"), [5])
        XCTAssertEqual(dir.contents(), ["race.bin"])
    }

    func testOverwriteReplaces() throws {
        let path = try dir.write("r.bin", [1, 2, 3, 4, 5])
        let w = try AtomicFileWriter(path: path, overwrite: true)
        try write(w, [9])
        XCTAssertEqual(dir.read("r.bin"), [1, 2, 3, 4, 5], "old content stays until commit")
        try w.commit()
        XCTAssertEqual(dir.read("r.bin"), [9])
        XCTAssertEqual(dir.contents(), ["r.bin"])
    }

    func testRelativePathUsesCurrentDirectory() throws {
        let old = FileManager.default.currentDirectoryPath
        XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(dir.path))
        defer { _ = FileManager.default.changeCurrentDirectoryPath(old) }
        let w = try AtomicFileWriter(path: "rel.bin", overwrite: false)
        XCTAssertTrue(w.temporaryPath.hasPrefix(".rel.bin.tmp-"), w.temporaryPath)
        try write(w, [1])
        try w.commit()
        XCTAssertEqual(dir.read("rel.bin"), [1])
    }

    func testUnwritableDirectoryIsIOError() {
        assertDicoError(.io, contains: ["no-such-dir/x.bin", "cannot create temporary file"]) {
            _ = try AtomicFileWriter(path: dir.file("no-such-dir/x.bin"), overwrite: false)
        }
    }

    func testRemoveAllTemporaries() throws {
        let a = try AtomicFileWriter(path: dir.file("a.bin"), overwrite: false)
        let b = try AtomicFileWriter(path: dir.file("b.bin"), overwrite: false)
        try write(a, [1])
        XCTAssertEqual(dir.contents().count, 2)
        AtomicFileWriter.removeAllTemporaries()
        XCTAssertEqual(dir.contents(), [])
        // The writers stay usable for cleanup; a new writer may reuse a freed slot.
        let c = try AtomicFileWriter(path: dir.file("c.bin"), overwrite: false)
        a.abort()
        b.abort()
        XCTAssertEqual(dir.contents().count, 1, "aborting a and b must not unregister c")
        AtomicFileWriter.removeAllTemporaries()
        XCTAssertEqual(dir.contents(), [])
        c.abort()
    }
}
