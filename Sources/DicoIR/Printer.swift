import DicoCore

extension Graph {
    /// A readable text dump: inputs, constants (name, type), then one line per node
    /// `%out: type = op(%a, %b) {attr=value}  # source name`, then the outputs.
    public func textDump() -> String {
        var lines: [String] = []
        lines.append("graph {")
        for id in inputs { lines.append("  input \(id) \"\(self[id].name)\": \(self[id].type)") }
        for id in constantIDs { lines.append("  const \(id) \"\(self[id].name)\": \(self[id].type)") }
        for node in nodes {
            let args = node.inputs.map(\.description).joined(separator: ", ")
            let attrs = node.op.attributes.isEmpty ? "" : " {" + node.op.attributes.map { "\($0.0)=\($0.1)" }.joined(separator: ", ") + "}"
            lines.append("  \(node.output): \(self[node.output].type) = \(node.op.name)(\(args))\(attrs)  # \(node.name)")
        }
        lines.append("  outputs: " + outputs.map { "\($0) \"\(self[$0].name)\"" }.joined(separator: ", "))
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }
}
