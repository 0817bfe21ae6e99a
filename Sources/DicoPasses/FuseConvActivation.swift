import DicoIR

/// Fuses a convolution with the activation that follows it.
///
/// Rule: `gelu|silu|sigmoid(conv2d(x, w, b))`, where the activation is the conv's only
/// reader, becomes `conv2d_activation(x, w, b)`; the executor applies the activation to each
/// output tile right after computing it, while it is in cache, instead of in a second pass
/// over memory. Exact: the activation sees the same float values and computes the same
/// function, so the bits do not change.
///
/// In DiCo: conv2 (the depthwise 3x3) with the first GELU, conv4 (1x1) with the second, and
/// the channel-attention 1x1 conv with its sigmoid.
public struct FuseConvActivation: GraphPass {
    public let name = "fuse-conv-activation"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        try graph.fusePairs { consumer, producer in
            let act: Activation
            switch consumer.op {
            case .gelu: act = .gelu
            case .silu: act = .silu
            case .sigmoid: act = .sigmoid
            default: return nil
            }
            guard case let .conv2d(stride, padding, groups) = producer.op else { return nil }
            return Fusion(op: .conv2dActivation(stride: stride, padding: padding, groups: groups, activation: act),
                          inputs: producer.inputs, name: producer.name)
        }
    }
}
