import DicoIR

/// Removes nodes that return their input unchanged, and composes slices.
///
/// Rules (each only where the result has exactly the input's type, so nothing broadcasts):
/// - `mul(x, ones)` and `add(x, zeros)`, the other operand a constant of ones or zeros -> `x`
///   (x * 1 and x + 0 are x in float, except that -0 + 0 is +0, which no later op tells apart).
/// - `slice` covering its whole axis -> `x`; `concat` of a single input -> `x`.
/// - `pixel_shuffle_r(pixel_unshuffle_r(x))` and `pixel_unshuffle_r(pixel_shuffle_r(x))` -> `x`
///   (the two are inverse permutations, DICO_MODEL.md).
/// - `slice(slice(x))` on the same axis -> one slice of `x` at the summed offset.
/// Exact: every rule returns the same elements.
public struct RemoveIdentities: GraphPass {
    public let name = "remove-identities"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        let producers = graph.producers()
        func producer(_ v: ValueID) -> Node? { producers[v.index].map { graph.nodes[$0] } }
        func isConstant(_ v: ValueID, all value: Float) -> Bool {
            guard let f = graph.floats(v) else { return false }
            return f.allSatisfy { $0 == value }
        }
        var rw = GraphRewriter(graph)
        var changed = false
        for node in graph.nodes {
            let out = graph[node.output].type
            var same: ValueID?
            switch node.op {
            case .mul, .add:
                let neutral: Float = node.op == .mul ? 1 : 0
                same = node.inputs.indices.first { k in
                    graph[node.inputs[k]].type == out && isConstant(node.inputs[1 - k], all: neutral)
                }.map { node.inputs[$0] }
            case let .slice(axis, start, length):
                let x = node.inputs[0]
                if start == 0, graph[x].type == out { same = x }
                else if let p = producer(x), case let .slice(axis2, start2, _) = p.op, axis2 == axis {
                    rw.bind(node.output, toNew: try rw.add(.slice(axis: axis, start: start2 + start, length: length), [rw.value(p.inputs[0])], name: node.name))
                    changed = true
                    continue
                }
            case .concat:
                if node.inputs.count == 1 { same = node.inputs[0] }
            case let .pixelShuffle(r), let .pixelUnshuffle(r):
                if let p = producer(node.inputs[0]), graph[p.inputs[0]].type == out {
                    switch (node.op, p.op) {
                    case (.pixelShuffle, .pixelUnshuffle(r)), (.pixelUnshuffle, .pixelShuffle(r)): same = p.inputs[0]
                    default: break
                    }
                }
            case .conv2d, .conv2dActivation, .conv2dGatedAdd, .channelAttention, .linear, .channelLayerNorm, .layerNormModulate, .modulate, .gatedAdd, .gelu, .silu,
                 .sigmoid, .globalAvgPool, .embedding, .timestepEmbedding:
                break
            }
            if let same {
                rw.alias(node.output, to: same)
                changed = true
            } else {
                try rw.copy(node)
            }
        }
        guard changed else { return false }
        graph = rw.finish()
        return true
    }
}
