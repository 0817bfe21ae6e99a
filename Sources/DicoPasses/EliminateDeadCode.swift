import DicoIR

/// Dead-code elimination.
///
/// Rule: a node whose output no graph output depends on is removed, and so is a constant
/// that no remaining node reads. Exact: removed values are never observed. Graph inputs stay
/// (they are the interface), even when unused.
public struct EliminateDeadCode: GraphPass {
    public let name = "eliminate-dead-code"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        var live = [Bool](repeating: false, count: graph.values.count)
        for o in graph.outputs { live[o.index] = true }
        var liveNode = [Bool](repeating: false, count: graph.nodes.count)
        for (i, node) in graph.nodes.enumerated().reversed() where live[node.output.index] {
            liveNode[i] = true
            for input in node.inputs { live[input.index] = true }
        }
        let unusedConstants = graph.constantIDs.contains { !live[$0.index] }
        guard liveNode.contains(false) || unusedConstants else { return false }
        var rw = GraphRewriter(graph)
        for (i, node) in graph.nodes.enumerated() where liveNode[i] { try rw.copy(node) }
        graph = rw.finish()
        return true
    }
}
