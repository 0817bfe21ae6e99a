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
public struct FuseLayerNormModulate: GraphPass {
    public let name = "fuse-layer-norm-modulate"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        let uses = graph.useCounts(), producers = graph.producers()
        var fusedNorms = Set<Int>()
        var modulates: [Int: (eps: Float, x: ValueID)] = [:]
        for (i, node) in graph.nodes.enumerated() {
            guard node.op == .modulate, let p = producers[node.inputs[0].index], uses[node.inputs[0].index] == 1,
                  case let .channelLayerNorm(eps) = graph.nodes[p].op else { continue }
            fusedNorms.insert(p)
            modulates[i] = (eps, graph.nodes[p].inputs[0])
        }
        guard !modulates.isEmpty else { return false }
        var rw = GraphRewriter(graph)
        for (i, node) in graph.nodes.enumerated() {
            if fusedNorms.contains(i) { continue }
            if let m = modulates[i] {
                try rw.emit(.layerNormModulate(eps: m.eps), [m.x, node.inputs[1], node.inputs[2]], name: node.name, replacing: node.output)
            } else {
                try rw.copy(node)
            }
        }
        graph = rw.finish()
        return true
    }
}
