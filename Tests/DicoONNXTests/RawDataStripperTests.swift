@testable import DicoONNX
import DicoTestSupport
import DicoCore
import Foundation
import XCTest

/// The wire walk that keeps embedded initializers in the mapping: it finds every payload,
/// the compact copy unpacks to the same model, and a layout it does not handle falls back
/// and protobuf-c never sees a repeated graph or unbounded nesting.
final class RawDataStripperTests: XCTestCase {
    func testStripsEveryInitializerPayload() throws {
        let file = try MappedFile(path: "\(fixtures)/tiny_opset13.onnx")
        guard case let .compact(s) = RawDataStripper.strip(file.bytes(offset: 0, count: file.size)) else {
            return XCTFail("expected a compact copy")
        }
        XCTAssertEqual(s.rawData.count, 141)
        let payload = s.rawData.values.reduce(0) { $0 + $1.count }
        XCTAssertEqual(payload, 677_576 * 4)  // every float32 parameter of tiny.safetensors
        XCTAssertLessThan(s.bytes.count, file.size / 10)
    }

    func testRepeatedGraphFieldIsRefused() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        // A second, empty `graph` field (tag 7, length 0): protobuf would merge it into the
        // first; initializer indices would no longer match the walk, so it is refused.
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/convnet.onnx")))
        bytes += [0x3A, 0x00]
        let path = try dir.write("twograph.onnx", bytes)
        assertDicoError(.invalidInput, contains: [path, "ModelProto has more than one graph field"]) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func testTruncatedWalkIsMalformed() throws {
        let data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: "\(fixtures)/convnet.onnx")))
        let half = Array(data[..<(data.count / 2)])
        half.withUnsafeBytes {
            guard case .malformed = RawDataStripper.strip($0) else { return XCTFail("expected .malformed") }
        }
    }

    /// protobuf-c unpacks nested messages by recursion without a limit: 60,000 subgraphs
    /// nested in If attributes (about 1.4 MB) would overflow the stack. The walk empties
    /// graph attributes, so the model is refused by the attribute's type instead.
    func testDeeplyNestedSubgraphsDoNotReachProtobufC() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        var headers: [[UInt8]] = []
        var graphLength = 0  // the innermost graph is empty
        for _ in 0..<60_000 {
            // attribute { name: "g", type: GRAPH, g: <inner graph> }
            let attrLength = 3 + 3 + 1 + varintSize(graphLength) + graphLength
            // node { op_type: "If", attribute: ... }
            let nodeLength = 4 + 1 + varintSize(attrLength) + attrLength
            var h: [UInt8] = [0x0A] + varint(nodeLength) + [0x22, 0x02, 0x49, 0x66] + [0x2A] + varint(attrLength)
            h += [0x0A, 0x01, 0x67, 0xA0, 0x01, 0x05, 0x32] + varint(graphLength)
            headers.append(h)
            graphLength = 1 + varintSize(nodeLength) + nodeLength
        }
        var bytes: [UInt8] = [0x08, 0x08, 0x42, 0x02, 0x10, 0x11, 0x3A] + varint(graphLength)
        for h in headers.reversed() { bytes += h }
        let path = try dir.write("nested.onnx", bytes)
        assertDicoError(.invalidInput, contains: [path, "node 'If#0' (If): attribute 'g' is a graph (GRAPH)"]) {
            _ = try ONNXModel.load(path: path)
        }
    }

    func testDeeplyNestedTypeIsRefused() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        // TypeProto { sequence_type { elem_type: TypeProto { sequence_type { ... } } } }, 100 deep.
        var type: [UInt8] = []
        for _ in 0..<100 {
            let sequence: [UInt8] = [0x0A] + varint(type.count) + type
            type = [0x22] + varint(sequence.count) + sequence
        }
        let input: [UInt8] = [0x0A, 0x01, 0x78, 0x12] + varint(type.count) + type
        let graph: [UInt8] = [0x5A] + varint(input.count) + input
        let bytes: [UInt8] = [0x08, 0x08, 0x42, 0x02, 0x10, 0x11, 0x3A] + varint(graph.count) + graph
        let path = try dir.write("deeptype.onnx", bytes)
        assertDicoError(.invalidInput, contains: [path, "a type (TypeProto) nests deeper than 32 levels"]) {
            _ = try ONNXModel.load(path: path)
        }
    }
}

/// Protobuf base-128 varint bytes of `n`.
func varint(_ n: Int) -> [UInt8] {
    var v = UInt64(n), out: [UInt8] = []
    while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
    return out + [UInt8(v)]
}

func varintSize(_ n: Int) -> Int { varint(n).count }
