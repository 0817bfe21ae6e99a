import DicoIR

/// Fuses a convolution into the gated residual that reads it.
///
/// Rule: `gated_add(inp, gate, conv2d(x, w, b))`, where the gated add is the conv's only
/// reader and the conv has a bias, becomes `conv2d_gated_add(x, w, b, inp, gate)`; the
/// executor computes inp + gate * y on each output tile of the conv right after its GEMM,
/// while the tile is in cache, instead of writing y out and reading it back in a second
/// pass with inp. Exact: the tile holds the same float y (the bias is still the GEMM's
/// starting value) and the epilogue is the same float multiply-add as `gated_add`, so the
/// bits do not change.
///
/// Does not fire when something else reads the conv's output (y would then have to be
/// stored anyway), on a conv without a bias (the fused op requires one; DiCo's all have
/// one), on a `conv2d_activation` (an activation before the residual is not DiCo's and is
/// not fused), or when the conv feeds the residual side `inp` rather than the gated branch.
///
/// In DiCo: conv3 into the first residual and conv5 into the second, in every block.
public struct FuseConvGatedAdd: GraphPass {
    public let name = "fuse-conv-gated-add"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        // The branch y is the gated add's input 2.
        try graph.fusePairs(operand: 2) { consumer, producer in
            guard consumer.op == .gatedAdd, case let .conv2d(stride, padding, groups) = producer.op, producer.inputs.count == 3 else { return nil }
            return Fusion(op: .conv2dGatedAdd(stride: stride, padding: padding, groups: groups),
                          inputs: producer.inputs + [consumer.inputs[0], consumer.inputs[1]], name: producer.name)
        }
    }
}
