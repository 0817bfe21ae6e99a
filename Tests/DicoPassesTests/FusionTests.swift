import DicoTestSupport
import XCTest
import DicoCore
import DicoIR
import DicoModel
import DicoPasses

/// The fusions of channel attention and of the gated residual into the conv before it: each
/// fires on the DiCo fixture and on a small built graph with the same bits out (the fused
/// kernels do the same float operations; the bound is still `reorderedSumTolerance`, the
/// issue's 1e-6, where the helper checks it, and exact equality where it is asserted), and
/// each leaves alone what it must not fuse.
extension FoldTests {
    // MARK: - fuse-channel-attention

    /// x -> pool -> 1x1 conv (C to `cout`, `kernel` square) -> sigmoid -> mul with `multiplied`
    /// (x itself unless `otherTensor`), with optional extra readers of the intermediates.
    func channelAttentionGraph(cout: Int = 4, kernel: Int = 1, otherTensor: Bool = false, pooledReader: Bool = false,
                               scaleReader: Bool = false, scaleFirst: Bool = false) throws -> Graph {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [2, 4, 3, 5]))
        let other = g.addInput("other", TensorType(.f32, constant: [2, 4, 3, 5]))
        let pooled = try g.add(.globalAvgPool, [x], name: "ca.0")
        let w = constant(&g, "ca.1.weight", [cout, 4, kernel, kernel]), b = constant(&g, "ca.1.bias", [cout])
        let conv = try g.add(.conv2d(stride: 1, padding: kernel / 2, groups: 1), [pooled, w, b], name: "ca.1")
        let scale = try g.add(.sigmoid, [conv], name: "ca.sigmoid")
        let m = otherTensor ? other : x
        let y = try g.add(.mul, scaleFirst ? [scale, m] : [m, scale], name: "ca.mul")
        g.outputs = [y] + (pooledReader ? [pooled] : []) + (scaleReader ? [scale] : [])
        return g
    }

    func testChannelAttentionFusesPoolConvSigmoidAndMul() throws {
        for scaleFirst in [false, true] {
            let h = try check(FuseChannelAttention(), try channelAttentionGraph(scaleFirst: scaleFirst), fires: true, tolerance: 0)
            XCTAssertEqual(h.nodes.map(\.op), [.channelAttention])
            XCTAssertEqual(h.nodes[0].inputs.map { h[$0].name }, ["x", "ca.1.weight", "ca.1.bias"])
        }
        // After fuse-conv-activation, the sigmoid sits in the conv's epilogue: still one op.
        var g = try channelAttentionGraph()
        XCTAssertTrue(try FuseConvActivation().run(&g))
        XCTAssertEqual(try check(FuseChannelAttention(), g, fires: true, tolerance: 0).nodes.map(\.op), [.channelAttention])
    }

    /// Not fused: a pooled vector or scale something else reads, a pool of another tensor than
    /// the one multiplied, a conv to one channel (the product broadcasts, but it is not a
    /// channel attention) and a 3x3 conv (zero-padded to the 1x1 pooled input).
    func testChannelAttentionDoesNotFuseOtherShapesOrSharedValues() throws {
        for g in [try channelAttentionGraph(pooledReader: true), try channelAttentionGraph(scaleReader: true),
                  try channelAttentionGraph(otherTensor: true), try channelAttentionGraph(cout: 1),
                  try channelAttentionGraph(kernel: 3)] {
            try check(FuseChannelAttention(), g, fires: false, tolerance: 0)
        }
    }

    func testChannelAttentionOnTheFixture() throws {
        let model = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        let h = try check(FuseChannelAttention(), model.graph, fires: true, tolerance: 0, inputs: dicoInputs(model.weights.config))
        XCTAssertEqual(h.opCounts["channel_attention"], 8, "one per block")
        XCTAssertNil(h.opCounts["global_avg_pool"])
        XCTAssertNil(h.opCounts["sigmoid"])
        XCTAssertNil(h.opCounts["mul"])
    }

    // MARK: - fuse-conv-gated-add

    /// inp + gate * conv(x): a 1x1 conv (or `kernel` 3x3 depthwise), optionally without bias,
    /// with an activation, read again elsewhere, or feeding the residual side.
    func gatedResidualGraph(depthwise: Bool = false, bias: Bool = true, activation: Bool = false, convReader: Bool = false,
                            convAsResidual: Bool = false) throws -> Graph {
        var g = Graph()
        let x = g.addInput("x", TensorType(.f32, constant: [2, 4, 3, 5]))
        let inp = g.addInput("inp", TensorType(.f32, constant: [2, 4, 3, 5]))
        let gate = g.addInput("gate", TensorType(.f32, constant: [2, 4]))
        let w = depthwise ? constant(&g, "conv3.weight", [4, 1, 3, 3]) : constant(&g, "conv3.weight", [4, 4, 1, 1])
        var ins = [x, w]
        if bias { ins.append(constant(&g, "conv3.bias", [4])) }
        let (p, groups) = depthwise ? (1, 4) : (0, 1)
        let op: Op = activation ? .conv2dActivation(stride: 1, padding: p, groups: groups, activation: .gelu) : .conv2d(stride: 1, padding: p, groups: groups)
        let y = try g.add(op, ins, name: "conv3")
        let r = try g.add(.gatedAdd, convAsResidual ? [y, gate, inp] : [inp, gate, y], name: "residual1")
        g.outputs = [r] + (convReader ? [y] : [])
        return g
    }

    func testConvGatedAddFusesTheConvIntoTheResidual() throws {
        for depthwise in [false, true] {
            let h = try check(FuseConvGatedAdd(), try gatedResidualGraph(depthwise: depthwise), fires: true, tolerance: 0)
            XCTAssertEqual(h.nodes.map(\.op), [.conv2dGatedAdd(stride: 1, padding: depthwise ? 1 : 0, groups: depthwise ? 4 : 1)])
            XCTAssertEqual(h.nodes[0].inputs.map { h[$0].name }, ["x", "conv3.weight", "conv3.bias", "inp", "gate"])
        }
    }

    /// Not fused: a conv whose output is read elsewhere, a conv without bias, a conv with an
    /// activation, and a conv on the residual side (inp) instead of the gated branch. (A gate
    /// of the wrong shape cannot reach the pass: `gated_add`'s shape check refuses it.)
    func testConvGatedAddDoesNotFuseWhatItMustNot() throws {
        for g in [try gatedResidualGraph(convReader: true), try gatedResidualGraph(bias: false), try gatedResidualGraph(activation: true),
                  try gatedResidualGraph(convAsResidual: true)] {
            try check(FuseConvGatedAdd(), g, fires: false, tolerance: 0)
        }
    }

    func testConvGatedAddOnTheFixture() throws {
        let model = try DiCoModelFile.load("\(fixtures)/tiny.safetensors")
        let h = try check(FuseConvGatedAdd(), model.graph, fires: true, tolerance: 0, inputs: dicoInputs(model.weights.config))
        XCTAssertEqual(h.opCounts["conv2d_gated_add"], 16, "conv3 and conv5 of each of the 8 blocks")
        XCTAssertNil(h.opCounts["gated_add"])
    }
}
