import DicoCore

extension Graph {
    /// Checks the graph's invariants: every node reads only values defined before it
    /// (no dangling or forward references), each node output is recorded with the type
    /// shape inference gives, constants' types match their data, and the graph outputs
    /// exist.
    /// - Throws: `DicoError(.internalError)` naming the first broken node or value; a graph
    ///   that fails here is a bug in whatever produced it, not bad user input.
    public func verify() throws {
        var defined = [Bool](repeating: false, count: values.count)
        for id in inputs { defined[id.index] = true }
        for (i, v) in values.enumerated() {
            switch v.source {
            case .input:
                guard inputs.contains(ValueID(i)) else { throw bug("value \(i) '\(v.name)' is an input not listed in the graph inputs") }
            case let .constant(d):
                guard v.type == TensorType(d.logicalDType, constant: d.shape) else {
                    throw bug("constant '\(v.name)' is typed \(v.type) but holds \(d.dtype.rawValue)\(d.shape)")
                }
                guard d.byteCount == d.elementCount * d.dtype.byteSize else { throw bug("constant '\(v.name)' has \(d.byteCount) bytes for \(d.shape)") }
                defined[i] = true
            case let .node(n):
                guard n < nodes.count, nodes[n].output.index == i else { throw bug("value \(i) '\(v.name)' claims node \(n), which does not produce it") }
            }
        }
        for (n, node) in nodes.enumerated() {
            for input in node.inputs {
                guard input.index >= 0, input.index < values.count, defined[input.index] else {
                    throw bug("node \(n) '\(node.name)' reads \(input), which is not defined before it")
                }
            }
            guard node.output.index >= 0, node.output.index < values.count, case .node(n) = values[node.output.index].source else {
                throw bug("node \(n) '\(node.name)' output \(node.output) is not recorded as its own")
            }
            guard !defined[node.output.index] else { throw bug("node \(n) '\(node.name)' redefines \(node.output)") }
            let inferred = try inferType(node.op, node.inputs.map { values[$0.index].type }, node: node.name)
            guard inferred == values[node.output.index].type else {
                throw bug("node \(n) '\(node.name)' output is recorded as \(values[node.output.index].type) but infers to \(inferred)")
            }
            defined[node.output.index] = true
        }
        guard !outputs.isEmpty else { throw bug("graph has no outputs") }
        for o in outputs where o.index < 0 || o.index >= values.count || !defined[o.index] {
            throw bug("graph output \(o) is not defined")
        }
    }

    private func bug(_ message: String) -> DicoError { DicoError(.internalError, "IR verifier: \(message)") }
}
