import DicoCore
import DicoIR

/// Folds a per-channel affine (a LayerNorm's or GroupNorm's gamma and beta) into the 1x1
/// conv or linear after it.
///
/// The IR's `channel_layer_norm` has no affine (DiCo's norms have none); an importer writes
/// an affine norm as `add(mul(channel_layer_norm(x), gamma), beta)` with constants of shape
/// [1, C, 1, 1] (or [1, C] before a linear), a GroupNorm likewise after its normalization.
///
/// Rules, where the consumer `conv2d(u, W, b)` is a 1x1 conv (stride 1, no padding, one
/// group) or `linear(u, W, b)` with constant `W` (and `b`, or none), and `u` has no other reader:
/// 1. `u = add(v, beta)` -> consumer of `v` with `b' = b + W beta`.
/// 2. `u = mul(v, gamma)` -> consumer of `v` with `W' = W diag(gamma)` (column ci scaled by gamma[ci]).
/// Repeated until nothing folds, so `conv(add(mul(norm)))` reads the norm directly. Exact in
/// real arithmetic: W (gamma x + beta) + b = (W diag gamma) x + (W beta + b); `W beta` is
/// summed in Double and rounded once, so the float result moves by rounding only.
///
/// Not for a conv with a kernel wider than 1x1 and zero padding (DiCo's depthwise and dense
/// 3x3 convs): the padding zeros are inserted after the shift, so a border output reads
/// `beta` at its interior taps but 0, not `beta`, at its padded ones, while `W beta` would add
/// `beta` at every tap; folding would change the border pixels (PassTests shows it). Nor when
/// the affine's output has another reader.
public struct FoldNormAffine: GraphPass {
    public let name = "fold-norm-affine"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        try toFixpoint(&graph) { g in try sweep(&g) }
    }

    private func sweep(_ graph: inout Graph) throws -> Bool {
        let uses = graph.useCounts(), producers = graph.producers()
        var folds: [Int: (v: ValueID, weight: [Float], bias: [Float])] = [:]   // by index of the consumer
        var absorbed = Set<Int>()
        for (i, node) in graph.nodes.enumerated() {
            let isLinear = node.op == .linear
            if !isLinear {
                guard case .conv2d(stride: 1, padding: 0, groups: 1) = node.op,
                      graph[node.inputs[1]].type.shape.dropFirst(2).allSatisfy({ $0 == .c(1) }) else { continue }
            }
            let u = node.inputs[0]
            guard uses[u.index] == 1, let p = producers[u.index], !absorbed.contains(p), graph.isFloatConstant(node.inputs[1]),
                  node.inputs.count == 2 || graph.isFloatConstant(node.inputs[2]) else { continue }
            let affine = graph.nodes[p]
            guard affine.op == .mul || affine.op == .add else { continue }
            let wShape = graph[node.inputs[1]].type.shape.map { $0.constant! }
            let cout = wShape[0], cin = wShape[1]
            // The operand passing through, v, and the constant: v must already have u's type
            // (the constant does not broadcast the activations up).
            guard let v = affine.inputs.first(where: { graph[$0].type == graph[u].type && !graph.isFloatConstant($0) }),
                  let k = graph.otherOperand(affine, v), let c = graph.perChannelConstant(k, channels: cin) else { continue }
            var w = graph.floats(node.inputs[1])!
            var b = node.inputs.count == 3 ? graph.floats(node.inputs[2])! : [Float](repeating: 0, count: cout)
            if affine.op == .add {
                for co in 0..<cout {
                    var acc = Double(b[co])
                    for ci in 0..<cin { acc += Double(w[co * cin + ci]) * Double(c[ci]) }
                    b[co] = Float(acc)
                }
            } else {
                for co in 0..<cout { for ci in 0..<cin { w[co * cin + ci] *= c[ci] } }
            }
            folds[i] = (v, w, b)
            absorbed.insert(p)
        }
        guard !folds.isEmpty else { return false }
        var rw = GraphRewriter(graph)
        for (i, node) in graph.nodes.enumerated() where !absorbed.contains(i) {
            guard let f = folds[i] else { try rw.copy(node); continue }
            let wShape = graph[node.inputs[1]].type.shape.map { $0.constant! }
            let w = rw.newConstant(graph[node.inputs[1]].name, TensorData(shape: wShape, floats: f.weight))
            let b = rw.newConstant(node.name + ".bias", TensorData(shape: [f.bias.count], floats: f.bias))
            rw.bind(node.output, toNew: try rw.add(node.op, [rw.value(f.v), w, b], name: node.name))
        }
        graph = rw.finish()
        return true
    }
}
