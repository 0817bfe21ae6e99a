import DicoCore
import DicoIR
import DicoRuntime

/// Constant folding: a node that reads only constants is evaluated at conversion time, by
/// the executor, and replaced by a constant.
///
/// Rule: a node whose inputs are all float32 constants (or outputs of nodes folded before
/// it) and whose output has at most `maxElements` elements becomes a constant holding what
/// the executor computes for it. Exact: the executor would compute the same bits at run time.
///
/// Limits, so that folding never grows the file or conversion memory much: the output size
/// bound (256 KiB by default: biases, per-channel scales, small tables; never a weight
/// matrix such as the adaLN concatenation of `fold-adaln-linears`, which the executor
/// evaluates once at load instead), and nothing that reads a quantized constant (folding
/// would store its dequantized float32 copy).
public struct FoldConstants: GraphPass {
    public let name = "fold-constants"
    /// The largest output, in elements, that is folded.
    public let maxElements: Int
    public init(maxElements: Int = 1 << 16) { self.maxElements = maxElements }

    public func run(_ graph: inout Graph) throws -> Bool {
        var folded: [Int: TensorData] = [:]   // old value index -> computed data
        func data(_ v: ValueID) -> TensorData? {
            if let d = folded[v.index] { return d }
            guard let d = graph.constant(v), d.quantization == nil, d.logicalDType == .f32 else { return nil }
            return d
        }
        for node in graph.nodes {
            let ins = node.inputs.map(data)
            guard !ins.contains(where: { $0 == nil }),
                  let shape = Optional(graph[node.output].type.shape.compactMap(\.constant)),
                  shape.count == graph[node.output].type.shape.count, shape.reduce(1, *) <= maxElements else { continue }
            // A one-node graph of constants: the executor evaluates it when it loads.
            var g = Graph()
            let ids = zip(node.inputs, ins).map { g.addConstant(graph[$0.0].name, $0.1!) }
            g.outputs = [try g.add(node.op, ids, name: node.name)]
            let out = try Executor(graph: g, threads: 1).run([:])[0]
            folded[node.output.index] = TensorData(shape: out.shape, floats: out.floats!)
        }
        guard !folded.isEmpty else { return false }
        var rw = GraphRewriter(graph)
        for node in graph.nodes {
            if let d = folded[node.output.index] {
                rw.bind(node.output, toNew: rw.newConstant(node.name, d))
            } else {
                try rw.copy(node)
            }
        }
        graph = rw.finish()
        return true
    }
}
