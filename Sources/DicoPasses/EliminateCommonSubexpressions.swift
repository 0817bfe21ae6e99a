import DicoIR

/// Common-subexpression elimination.
///
/// Rule: two nodes with the same op (attributes included) reading the same values compute
/// the same result; the later one is dropped and its readers use the earlier one.
/// Exact: the executor is deterministic, so the shared node produces bit for bit what each
/// copy would have.
///
/// In DiCo this shares the three timestep-feature computations (one per embedder) and the
/// SiLU of each conditioning vector, which every block's adaLN recomputes.
public struct EliminateCommonSubexpressions: GraphPass {
    public let name = "eliminate-common-subexpressions"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        struct Key: Hashable { let op: Op; let inputs: [ValueID] }
        var rw = GraphRewriter(graph)
        var seen: [Key: ValueID] = [:]
        var changed = false
        for node in graph.nodes {
            let key = Key(op: node.op, inputs: node.inputs.map { rw.value($0) })
            if let first = seen[key] {
                rw.alias(node.output, to: first)
                changed = true
            } else {
                try rw.copy(node)
                seen[key] = node.output
            }
        }
        if changed { graph = rw.finish() }
        return changed
    }
}
