import DicoCore
import DicoIR
import XCTest

/// A small graph exercising inputs, constants added before and after nodes, symbolic
/// fractions, attributes of several kinds and two outputs.
func smallGraph() throws -> Graph {
    var g = Graph()
    let x = g.addInput("x", TensorType(.f32, [.s(.N), .c(4), .s(.H), .s(.W)]))
    let t = g.addInput("t", TensorType(.f32, [.s(.N)]))
    let w = g.addConstant("conv.weight", TensorData(shape: [8, 4, 3, 3], floats: [Float](repeating: 0.5, count: 8 * 4 * 9)))
    let b = g.addConstant("conv.bias", TensorData(shape: [8], floats: [Float](repeating: 0, count: 8)))
    let c = try g.add(.conv2d(stride: 1, padding: 1, groups: 1), [x, w, b], name: "conv")
    let d = try g.add(.pixelUnshuffle(factor: 2), [c], name: "down")
    let n = try g.add(.channelLayerNorm(eps: 1e-6), [d], name: "norm")
    let e = try g.add(.timestepEmbedding(dim: 64, maxPeriod: 10_000), [t], name: "temb")
    let lw = g.addConstant("proj.weight", TensorData(shape: [32, 64], floats: [Float](repeating: 0.25, count: 32 * 64)))
    let p = try g.add(.linear, [e, lw], name: "proj")
    let m = try g.add(.slice(axis: 1, start: 16, length: 16), [p], name: "proj.chunk1")
    let s = try g.add(.silu, [p], name: "act")
    _ = s
    let y = try g.add(.gatedAdd, [n, p, n], name: "residual")
    g.outputs = [y, m]
    return g
}

func assertVerifyFails(_ g: Graph, _ why: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try g.verify(), file: file, line: line) { error in
        guard let e = error as? DicoError else { return XCTFail("not a DicoError: \(error)", file: file, line: line) }
        XCTAssertEqual(e.kind, .internalError, "a broken graph is a bug, not bad input", file: file, line: line)
        XCTAssertTrue(e.message.hasPrefix("IR verifier: "), e.message, file: file, line: line)
        XCTAssertTrue(e.message.contains(why), "'\(e.message)' lacks '\(why)'", file: file, line: line)
    }
}

final class GraphTests: XCTestCase {
    func testBuildingRecordsValuesAndNodes() throws {
        let g = try smallGraph()
        XCTAssertEqual(g.inputs, [ValueID(0), ValueID(1)])
        XCTAssertEqual(g.constantIDs, [ValueID(2), ValueID(3), ValueID(8)])
        XCTAssertEqual(g.nodes.count, 8)
        XCTAssertEqual(g.values.count, 2 + 3 + 8)
        XCTAssertEqual(g[ValueID(4)].name, "conv")
        XCTAssertEqual(g[ValueID(4)].type, TensorType(.f32, [.s(.N), .c(8), .s(.H), .s(.W)]))
        XCTAssertEqual(g.constant(ValueID(3))?.shape, [8])
        XCTAssertNil(g.constant(ValueID(0)), "an input is not a constant")
        XCTAssertNil(g.constant(ValueID(4)), "a node output is not a constant")
        XCTAssertEqual(g.opCounts, ["conv2d": 1, "pixel_unshuffle": 1, "channel_layer_norm": 1, "timestep_embedding": 1,
                                    "linear": 1, "slice": 1, "silu": 1, "gated_add": 1])
        for (i, node) in g.nodes.enumerated() {
            guard case let .node(n) = g[node.output].source else { return XCTFail("node \(i) output is not a node value") }
            XCTAssertEqual(n, i)
        }
    }

    func testAddRejectsUndefinedInputWithoutChangingTheGraph() throws {
        var g = try smallGraph()
        let before = (g.values.count, g.nodes.count)
        XCTAssertThrowsError(try g.add(.gelu, [ValueID(999)], name: "dangling")) { error in
            let e = error as? DicoError
            XCTAssertEqual(e?.kind, .internalError)
            XCTAssertEqual(e?.message, "node 'dangling': input %999 is not defined")
        }
        // An inference failure is reported as invalid input and also leaves the graph as it was.
        XCTAssertThrowsError(try g.add(.linear, [ValueID(0), ValueID(2)], name: "bad.linear")) { error in
            let e = error as? DicoError
            XCTAssertEqual(e?.kind, .invalidInput)
            XCTAssertTrue(e?.message.hasPrefix("node 'bad.linear' (linear): ") ?? false, "\(error)")
        }
        XCTAssertEqual(g.values.count, before.0)
        XCTAssertEqual(g.nodes.count, before.1)
        XCTAssertNoThrow(try g.verify())
    }

    func testVerifyAcceptsAWellFormedGraph() throws {
        XCTAssertNoThrow(try smallGraph().verify())
        // Outputs may be any defined value, including an input or a constant.
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [2]))
        let c = g.addConstant("c", TensorData(shape: [2], floats: [1, 2]))
        g.outputs = [x, c]
        XCTAssertNoThrow(try g.verify())
    }

    func testVerifyRejectsAGraphWithoutOutputs() throws {
        var g = try smallGraph()
        g.outputs = []
        assertVerifyFails(g, "graph has no outputs")
        assertVerifyFails(Graph(), "graph has no outputs")
    }

    func testVerifyRejectsAnUndefinedOutput() throws {
        var g = try smallGraph()
        g.outputs = [g.outputs[0], ValueID(999)]
        assertVerifyFails(g, "graph output %999 is not defined")
        g.outputs = [ValueID(g.values.count)]
        assertVerifyFails(g, "graph output %\(g.values.count) is not defined")
    }

    func testVerifyRejectsAConstantWhoseBytesDisagreeWithItsShape() throws {
        // TensorData's memberwise init is public and unchecked, so a constant may claim
        // fewer bytes than its shape needs; the executor would read past them.
        var g = Graph()
        let short = TensorData(dtype: .f32, shape: [2, 3], storage: .owned(OwnedBytes(count: 16)), byteCount: 16)
        let c = g.addConstant("short", short)
        g.outputs = [c]
        assertVerifyFails(g, "constant 'short' has 16 bytes for [2, 3]")
    }

    func testTextDump() throws {
        let expected = """
        graph {
          input %0 "x": f32[N,4,H,W]
          input %1 "t": f32[N]
          const %2 "conv.weight": f32[8,4,3,3]
          const %3 "conv.bias": f32[8]
          const %8 "proj.weight": f32[32,64]
          %4: f32[N,8,H,W] = conv2d(%0, %2, %3) {stride=1, padding=1, groups=1}  # conv
          %5: f32[N,32,H/2,W/2] = pixel_unshuffle(%4) {factor=2}  # down
          %6: f32[N,32,H/2,W/2] = channel_layer_norm(%5) {eps=1e-06}  # norm
          %7: f32[N,64] = timestep_embedding(%1) {dim=64, max_period=10000.0}  # temb
          %9: f32[N,32] = linear(%7, %8)  # proj
          %10: f32[N,16] = slice(%9) {axis=1, start=16, length=16}  # proj.chunk1
          %11: f32[N,32] = silu(%9)  # act
          %12: f32[N,32,H/2,W/2] = gated_add(%6, %9, %6)  # residual
          outputs: %12 "residual", %10 "proj.chunk1"
        }

        """
        XCTAssertEqual(try smallGraph().textDump(), expected)
    }

    func testTextDumpOfAGraphWithoutNodes() {
        var g = Graph()
        let y = g.addInput("y", TensorType(.i64, [.s(.N)]))
        g.outputs = [y]
        XCTAssertEqual(g.textDump(), "graph {\n  input %0 \"y\": i64[N]\n  outputs: %0 \"y\"\n}\n")
    }
}
