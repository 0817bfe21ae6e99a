import DicoIR

/// Fuses DiCo's channel attention into one op.
///
/// Rule: `mul(x, sigmoid(conv2d(global_avg_pool(x), w, b)))` (either operand order, the
/// sigmoid either a separate node or the conv's `conv2d_activation` epilogue), with a 1x1
/// conv (stride 1, no padding, one group) from C to C channels and every intermediate read
/// only by the next step, becomes `channel_attention(x, w, b)`. Exact: the fused kernel runs
/// the same pooling, the same GEMM with the same bias and sigmoid, and the same float
/// multiply, so the bits do not change; it saves three nodes' buffers and dispatches and
/// keeps the [N, C] vectors in scratch.
///
/// Does not fire when the pooled vector, the conv's output or the scale has another reader
/// (they would have to be stored), when the pool reads a different tensor from the one
/// multiplied, or when the conv is not a square 1x1.
public struct FuseChannelAttention: GraphPass {
    public let name = "fuse-channel-attention"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        let uses = graph.useCounts(), producers = graph.producers()
        // The index of the node producing `v` when `v` is read by nothing else.
        func soleProducer(_ v: ValueID) -> Int? { uses[v.index] == 1 ? producers[v.index] : nil }
        var fused: [Int: Fusion] = [:], absorbed: [Int: Set<Int>] = [:]
        for (i, node) in graph.nodes.enumerated() where node.op == .mul && node.inputs.count == 2 {
            for (x, scale) in [(node.inputs[0], node.inputs[1]), (node.inputs[1], node.inputs[0])] where x != scale {
                guard let chain = sigmoidConv(scale, graph, soleProducer), let conv = chain.first.map({ graph.nodes[$0] }),
                      let pool = soleProducer(conv.inputs[0]), graph.nodes[pool].op == .globalAvgPool, graph.nodes[pool].inputs[0] == x else { continue }
                let c = graph[x].type.shape[1]
                guard graph[conv.inputs[1]].type.shape == [c, c, .c(1), .c(1)] else { continue }
                fused[i] = Fusion(op: .channelAttention, inputs: [x] + conv.inputs.dropFirst(), name: node.name)
                absorbed[i] = Set(chain + [pool])
                break
            }
        }
        return try graph.replaceFused(fused, absorbing: absorbed)
    }

    /// The node indices computing `scale` as sigmoid(1x1 conv): the conv first, then a
    /// separate sigmoid node if there is one; nil unless each is read only by the next.
    private func sigmoidConv(_ scale: ValueID, _ graph: Graph, _ soleProducer: (ValueID) -> Int?) -> [Int]? {
        guard let s = soleProducer(scale) else { return nil }
        switch graph.nodes[s].op {
        case .conv2dActivation(stride: 1, padding: 0, groups: 1, activation: .sigmoid):
            return [s]
        case .sigmoid:
            guard let conv = soleProducer(graph.nodes[s].inputs[0]), graph.nodes[conv].op == .conv2d(stride: 1, padding: 0, groups: 1) else { return nil }
            return [conv, s]
        default:
            return nil
        }
    }
}
