import DicoIR

/// Fuses DiCo's normalize-then-modulate into one pass over the activations.
///
/// Rule: `modulate(channel_layer_norm(x), shift, scale)`, where the modulate is the norm's
/// only reader, becomes `layer_norm_modulate(x, shift, scale)`. Exact: the fused kernel
/// rounds the normalized value to float and then applies the same float multiply-add, so it
/// produces the same bits as the two ops; it only saves writing and re-reading the
/// normalized tensor.
///
/// Does not fire when something else also reads the normalized tensor (it would then be
/// computed twice).
///
/// The `1 +` of the modulation is not folded into the adaLN linear's bias: the kernel adds
/// it once per (image, channel), so the fold would save nothing, and a stored `b + 1` is
/// rounded at the precision of 1 when fp16 or bf16 storage converts the bias, where the
/// stored `b` keeps its own significant bits (FoldTests.testOnePlusScaleIsNotFoldedIntoAStoredBias).
public struct FuseLayerNormModulate: GraphPass {
    public let name = "fuse-layer-norm-modulate"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        try graph.fusePairs { consumer, producer in
            guard consumer.op == .modulate, case let .channelLayerNorm(eps) = producer.op else { return nil }
            return Fusion(op: .layerNormModulate(eps: eps), inputs: [producer.inputs[0], consumer.inputs[1], consumer.inputs[2]], name: consumer.name)
        }
    }
}
