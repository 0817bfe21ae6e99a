@testable import DicoONNX
import DicoCore
import Foundation
import XCTest

/// The wire walk that keeps embedded initializers in the mapping: it finds every payload,
/// the compact copy unpacks to the same model, and a layout it does not handle falls back
/// to protobuf-c's copies with identical results.
final class RawDataStripperTests: XCTestCase {
    func testStripsEveryInitializerPayload() throws {
        let file = try MappedFile(path: "\(fixtures)/tiny_opset13.onnx")
        let s = try XCTUnwrap(RawDataStripper.strip(file.bytes(offset: 0, count: file.size)))
        XCTAssertEqual(s.rawData.count, 141)
        let payload = s.rawData.values.reduce(0) { $0 + $1.count }
        XCTAssertEqual(payload, 677_576 * 4)  // every float32 parameter of tiny.safetensors
        XCTAssertLessThan(s.bytes.count, file.size / 10)
    }

    func testFallbackWhenGraphFieldRepeats() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        // A second, empty `graph` field (tag 7, length 0): protobuf merges it into the first,
        // so the model is the same, but the walk declines and protobuf-c's copies are used.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/convnet.onnx")))
        bytes += [0x3A, 0x00]
        let path = try dir.write("twograph.onnx", bytes)
        let file = try MappedFile(path: path)
        XCTAssertNil(RawDataStripper.strip(file.bytes(offset: 0, count: file.size)))
        let copied = try ONNXModel.load(path: path)
        let mapped = try ONNXModel.load(path: "\(fixtures)/convnet.onnx")
        XCTAssertEqual(copied.graph.initializers.map(\.name), mapped.graph.initializers.map(\.name))
        for (a, b) in zip(copied.graph.initializers, mapped.graph.initializers) {
            guard case .owned = a.tensor.storage else { return XCTFail("\(a.name): expected an owned copy") }
            guard case .mapped = b.tensor.storage else { return XCTFail("\(b.name): expected a mapped view") }
            XCTAssertTrue(a.tensor.bytes.elementsEqual(b.tensor.bytes), a.name)
        }
    }

    func testTruncatedWalkDeclines() throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/convnet.onnx")))
        let half = Array(data[..<(data.count / 2)])
        half.withUnsafeBytes { XCTAssertNil(RawDataStripper.strip($0)) }
    }
}
