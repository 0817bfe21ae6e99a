import DicoCore
import DicoIR

/// Folds an inference-mode BatchNorm (or any per-channel scale and shift) into the conv
/// before it.
///
/// The IR has no BatchNorm op: an importer writes an inference BatchNorm as
/// `add(mul(x, s), t)` with per-channel constants `s = gamma / sqrt(var + eps)` and
/// `t = beta - mean * s` (shape [1, C, 1, 1]), which is exactly what this pass folds.
///
/// Rules, where `y = conv2d(x, W, b)` has constant `W` (and `b`, or none) and no other reader:
/// 1. `mul(y, s)` -> `conv2d(x, W * s, b * s)`: output channel c's weights and bias scaled by s[c].
/// 2. `add(y, t)` -> `conv2d(x, W, b + t)`.
/// Repeated until nothing folds, so `add(mul(conv))` becomes one conv. Exact in real
/// arithmetic (s[c] distributes over channel c's dot product; the shift joins the bias);
/// in float the products round in another order, well inside 1e-6. Any padding is fine: the
/// scale and shift apply after the conv, to every output pixel alike.
///
/// Does not fire when the conv's output has another reader (the unscaled value is still
/// needed), when the operand is not a per-channel constant (a spatially varying or computed
/// tensor), or after a `conv2d_activation` (the activation is not linear).
public struct FoldBatchNorm: GraphPass {
    public let name = "fold-batch-norm"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        try toFixpoint(&graph) { g in try sweep(&g) }
    }

    private func sweep(_ graph: inout Graph) throws -> Bool {
        let uses = graph.useCounts(), producers = graph.producers()
        var folds: [Int: (conv: Node, weight: [Float], bias: [Float])] = [:]   // by index of the mul/add
        var absorbed = Set<Int>()
        for (i, node) in graph.nodes.enumerated() where node.op == .mul || node.op == .add {
            for y in Set(node.inputs) {
                guard let p = producers[y.index], !absorbed.contains(p), uses[y.index] == 1 else { continue }
                let conv = graph.nodes[p]
                guard case .conv2d = conv.op, graph.isFloatConstant(conv.inputs[1]),
                      conv.inputs.count == 2 || graph.isFloatConstant(conv.inputs[2]),
                      let k = graph.otherOperand(node, y), graph[node.output].type == graph[y].type else { continue }
                let cout = graph[y].type.shape[1].constant!
                guard let c = graph.perChannelConstant(k, channels: cout) else { continue }
                var w = graph.floats(conv.inputs[1])!
                var b = conv.inputs.count == 3 ? graph.floats(conv.inputs[2])! : [Float](repeating: 0, count: cout)
                if node.op == .mul {
                    let per = w.count / cout
                    for co in 0..<cout {
                        for e in 0..<per { w[co * per + e] *= c[co] }
                        b[co] *= c[co]
                    }
                } else {
                    for co in 0..<cout { b[co] += c[co] }
                }
                folds[i] = (conv, w, b)
                absorbed.insert(p)
                break
            }
        }
        guard !folds.isEmpty else { return false }
        var rw = GraphRewriter(graph)
        for (i, node) in graph.nodes.enumerated() where !absorbed.contains(i) {
            guard let f = folds[i] else { try rw.copy(node); continue }
            let wShape = graph[f.conv.inputs[1]].type.shape.map { $0.constant! }
            let w = rw.newConstant(graph[f.conv.inputs[1]].name, TensorData(shape: wShape, floats: f.weight))
            let b = rw.newConstant(f.conv.name + ".bias", TensorData(shape: [f.bias.count], floats: f.bias))
            rw.bind(node.output, toNew: try rw.add(f.conv.op, [rw.value(f.conv.inputs[0]), w, b], name: f.conv.name))
        }
        graph = rw.finish()
        return true
    }
}
