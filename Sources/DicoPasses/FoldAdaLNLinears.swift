import DicoCore
import DicoIR

/// Merges the linears that read the same value into one GEMM (DiCo's linear fold 1).
///
/// Rule: linears `linear(s, W_i, b_i)`, i = 1..k (k >= 2), all reading the same input `s`,
/// with constant weights of equal width, become one `linear(s, concat(W_1..W_k),
/// concat(b_1..b_k))`; a `slice` on axis 1 of linear i becomes a slice of the merged output
/// shifted by the rows before W_i, and any other reader of linear i reads a slice covering
/// exactly its rows. A missing bias is a zero bias.
///
/// Exact: output column j of the merged linear is the same dot product of `s` with the same
/// weight row plus the same bias as before; only the sgemm blocking around it may differ,
/// which can reorder a float sum (well inside 1e-6).
///
/// The weight concatenation stays a `concat` node of the original constants rather than a
/// new constant: the file keeps the original tensors (no growth, quantized row by row as
/// before), conversion holds no extra copy of DiCo-XL's 1.15 GB of adaLN weights, and the
/// executor evaluates the constant-only concat once when it loads the graph.
///
/// In DiCo, after `eliminate-common-subexpressions` has shared SiLU(c_k): the adaLN linears
/// of every block conditioned on c1, c2 or c3 (and the final layer's, on c2) become one GEMM
/// per conditioning vector, and the three timestep MLPs' first linears, which read the
/// shared sinusoidal features, become one.
///
/// Does not fire on a lone linear, on linears reading different values, or on a linear
/// whose weight is computed rather than constant.
public struct FoldAdaLNLinears: GraphPass {
    public let name = "fold-adaln-linears"
    public init() {}

    public func run(_ graph: inout Graph) throws -> Bool {
        // Groups of mergeable linears by input, in node order.
        var groups: [Int: [Int]] = [:]
        for (i, n) in graph.nodes.enumerated() where n.op == .linear && graph.constant(n.inputs[1]) != nil
            && (n.inputs.count == 2 || graph.constant(n.inputs[2]) != nil) {
            groups[n.inputs[0].index, default: []].append(i)
        }
        groups = groups.filter { $0.value.count >= 2 }
        guard !groups.isEmpty else { return false }

        // For each merged linear: its group, and each member's row offset.
        var memberOf: [Int: (group: Int, offset: Int)] = [:]   // node index -> (input value index, rows before it)
        for (input, members) in groups {
            var offset = 0
            for m in members {
                memberOf[m] = (input, offset)
                offset += graph[graph.nodes[m].inputs[1]].type.shape[0].constant!
            }
        }
        let readers = graph.readers()
        var rw = GraphRewriter(graph)
        var merged: [Int: ValueID] = [:]     // input value -> merged output (new graph)
        var memberValue: [Int: (merged: ValueID, offset: Int)] = [:]   // old member output -> where it lives
        for (i, node) in graph.nodes.enumerated() {
            if let (group, offset) = memberOf[i] {
                if merged[group] == nil {
                    let members = groups[group]!.map { graph.nodes[$0] }
                    let weights = members.map { rw.value($0.inputs[1]) }
                    let biases = members.map { m -> ValueID in
                        if m.inputs.count == 3 { return rw.value(m.inputs[2]) }
                        let rows = graph[m.inputs[1]].type.shape[0].constant!
                        return rw.newConstant(m.name + ".zero_bias", TensorData(shape: [rows], floats: [Float](repeating: 0, count: rows)))
                    }
                    let base = members[0].name + ".merged"
                    let w = try rw.add(.concat(axis: 0), weights, name: base + ".weight")
                    let b = try rw.add(.concat(axis: 0), biases, name: base + ".bias")
                    merged[group] = try rw.add(.linear, [rw.value(node.inputs[0]), w, b], name: base)
                }
                let m = merged[group]!
                memberValue[node.output.index] = (m, offset)
                // Readers that are not axis-1 slices (or a graph output) see exactly the old rows.
                let direct = readers[node.output.index, default: []].allSatisfy {
                    if case .slice(axis: 1, _, _) = graph.nodes[$0].op { return true }
                    return false
                }
                if !direct || graph.isOutput(node.output) {
                    let rows = graph[node.output].type.shape[1].constant!
                    rw.bind(node.output, toNew: try rw.add(.slice(axis: 1, start: offset, length: rows), [m], name: node.name))
                }
                continue
            }
            if case let .slice(1, start, length) = node.op, let (m, offset) = memberValue[node.inputs[0].index] {
                rw.bind(node.output, toNew: try rw.add(.slice(axis: 1, start: offset + start, length: length), [m], name: node.name))
                continue
            }
            try rw.copy(node)
        }
        graph = rw.finish()
        return true
    }
}
