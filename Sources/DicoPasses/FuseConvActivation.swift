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
        let uses = graph.useCounts(), producers = graph.producers()
        var fusedConvs = Set<Int>()
        var fused: [Int: (op: Op, conv: Node)] = [:]
        for (i, node) in graph.nodes.enumerated() {
            let act: Activation
            switch node.op {
            case .gelu: act = .gelu
            case .silu: act = .silu
            case .sigmoid: act = .sigmoid
            default: continue
            }
            guard let p = producers[node.inputs[0].index], uses[node.inputs[0].index] == 1,
                  case let .conv2d(stride, padding, groups) = graph.nodes[p].op else { continue }
            fusedConvs.insert(p)
            fused[i] = (.conv2dActivation(stride: stride, padding: padding, groups: groups, activation: act), graph.nodes[p])
        }
        guard !fused.isEmpty else { return false }
        var rw = GraphRewriter(graph)
        for (i, node) in graph.nodes.enumerated() {
            if fusedConvs.contains(i) { continue }
            if let f = fused[i] {
                try rw.emit(f.op, f.conv.inputs, name: f.conv.name, replacing: node.output)
            } else {
                try rw.copy(node)
            }
        }
        graph = rw.finish()
        return true
    }
}
